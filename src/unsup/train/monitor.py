"""A cheap k-NN monitor during pretraining: a small labelled subset of the
training split (never the test split) split into a bank and queries, so a user
sees early whether the encoder is learning."""

from __future__ import annotations

import torch

from ..evaluate.features import extract_features
from ..evaluate.knn import knn_accuracy
from . import distributed as dist


class KnnMonitor:
    def __init__(self, train, bank: int = 2000, queries: int = 1000, seed: int = 0):
        g = torch.Generator().manual_seed(seed + 12345)
        perm = torch.randperm(len(train), generator=g)
        bank, queries = min(bank, len(train) // 2), min(queries, len(train) // 4)
        self.bank, self.queries = train.subset(perm[:bank]), train.subset(perm[bank : bank + queries])
        self.num_classes = train.num_classes
        self.history: list[float] = []

    def accuracy(self, encoder, device) -> float:
        fb = extract_features(encoder, self.bank.images, device)
        fq = extract_features(encoder, self.queries.images, device)
        return knn_accuracy(fb, self.bank.labels.cpu(), fq, self.queries.labels.cpu(), self.num_classes)

    def __call__(self, encoder, step, images_seen, seconds, ctx) -> None:
        if not dist.is_main():
            return
        acc = self.accuracy(encoder, ctx.device)
        self.history.append(acc)
        ctx.log({"step": step, "images_seen": images_seen, "seconds": round(seconds, 2), "knn_monitor": acc})
        if not ctx.quiet:
            print(f"  [monitor] {images_seen} images seen: k-NN accuracy on held-in validation {acc:.3f}")
