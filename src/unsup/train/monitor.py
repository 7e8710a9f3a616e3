"""A cheap k-NN monitor during pretraining: a small labelled subset of the
training split (never the test split) split into a bank and queries, so a user
sees early whether the encoder is learning, and how long it takes to reach
raw pixels' k-NN accuracy on the same images (time-to-accuracy)."""

from __future__ import annotations

import torch

from ..evaluate.features import extract_features, raw_pixels
from ..evaluate.knn import knn_accuracy
from ..progress import bar
from . import distributed as dist


class KnnMonitor:
    def __init__(self, train, bank: int = 2000, queries: int = 1000, seed: int = 0):
        g = torch.Generator().manual_seed(seed + 12345)
        perm = torch.randperm(len(train), generator=g)
        bank, queries = min(bank, len(train) // 2), min(queries, len(train) // 4)
        self.bank, self.queries = train.subset(perm[:bank]), train.subset(perm[bank : bank + queries])
        self.num_classes = train.num_classes
        self.history: list[float] = []
        self.raw_pixels: float | None = None  # k-NN accuracy of raw pixels on the same bank and queries

    def accuracy(self, encoder, device, label: str | None = None) -> float:
        with bar(label, len(self.bank) + len(self.queries), "img") as b:
            fb = extract_features(encoder, self.bank.images, device, progress=b)
            fq = extract_features(encoder, self.queries.images, device, progress=b)
        return knn_accuracy(fb, self.bank.labels.cpu(), fq, self.queries.labels.cpu(), self.num_classes)

    def __call__(self, encoder, step, images_seen, seconds, ctx) -> None:
        if not dist.is_main():
            return
        if self.raw_pixels is None:  # the target of time-to-accuracy: raw pixels on the same bank and queries
            self.raw_pixels = knn_accuracy(raw_pixels(self.bank.images.cpu()), self.bank.labels.cpu(),
                                           raw_pixels(self.queries.images.cpu()), self.queries.labels.cpu(), self.num_classes)
            ctx.log({"step": step, "images_seen": images_seen, "seconds": round(seconds, 2), "knn_monitor_raw": self.raw_pixels})
        acc = self.accuracy(encoder, ctx.device, None if ctx.quiet else f"{ctx.desc}: k-NN monitor")
        self.history.append(acc)
        ctx.log({"step": step, "images_seen": images_seen, "seconds": round(seconds, 2), "knn_monitor": acc})
        if not ctx.quiet:
            print(f"  [monitor] {images_seen} images seen: k-NN accuracy on held-in validation {acc:.3f}")
