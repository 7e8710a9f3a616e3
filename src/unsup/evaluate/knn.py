"""Weighted k-NN on cosine similarity (Wu et al. 2018, as used by DINO and
solo-learn): each of the k nearest labelled neighbours votes for its class
with weight exp(similarity / T)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int, k: int = 20,
                temperature: float = 0.07, chunk: int = 2048) -> torch.Tensor:
    train_x = F.normalize(train_x.float(), dim=1)  # the device of the features is where the search runs
    train_y = train_y.to(train_x.device)
    k = min(k, len(train_x))
    preds = []
    for i in range(0, len(test_x), chunk):
        q = F.normalize(test_x[i : i + chunk].to(train_x.device).float(), dim=1)
        sim, idx = (q @ train_x.T).topk(k, dim=1)
        votes = torch.zeros(len(q), num_classes, dtype=sim.dtype, device=sim.device)
        votes.scatter_add_(1, train_y[idx], torch.exp(sim / temperature))
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_accuracy(train_x, train_y, test_x, test_y, num_classes: int, k: int = 20, temperature: float = 0.07) -> float:
    pred = knn_predict(train_x, train_y, test_x, num_classes, k, temperature)
    return float((pred == test_y.to(pred.device)).float().mean())
