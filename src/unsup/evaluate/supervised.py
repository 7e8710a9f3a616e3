"""The supervised reference: the same backbone trained from scratch, with a
linear classifier, on only the N labelled images per class, with the shared
augmentations and the same budget as the pretraining it is compared with.
Results are cached per dataset, backbone, budget, label budget and seed."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..data import augment, few_label_indices
from ..methods.base import Method, MethodConfig
from ..run import atomic_write
from .features import extract_features


@dataclass
class SupervisedConfig(MethodConfig):
    label_smoothing: float = 0.0


class Supervised(Method):
    """Cross-entropy on augmented labelled images (not in the catalogue: a reference)."""

    name: ClassVar[str] = "supervised"
    family: ClassVar[str] = "reference"
    paper: ClassVar[str] = "supervised baseline"
    Config = SupervisedConfig
    uses_labels = True

    def __init__(self, cfg: SupervisedConfig, shape, num_classes: int = 10):
        super().__init__(cfg, shape)
        self.encoder = self.make_encoder()
        self.head = nn.Linear(self.encoder.out_dim, num_classes)

    def training_loss(self, images, labels):
        logits = self.head(self.encoder(augment(images, self.cfg.augment)))
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)
        return loss, {"train_acc": float((logits.argmax(1) == labels).float().mean())}


def _cache_file(dataset: str, backbone: str, budget, n, seed: int) -> Path:
    from .protocol import reference_cache

    root = reference_cache() / "supervised"
    return root / f"{dataset}-{backbone}-{budget}-{n}-seed{seed}.json"


def supervised_accuracy(train, test, per_class, seed: int, budget, backbone: str = "small-convnet", device="cpu",
                        quiet: bool = True, use_cache: bool = True) -> float:
    """Test accuracy of a supervised model trained on ``per_class`` labels per class."""
    from ..train.loop import TrainContext, train_loop

    cache = _cache_file(train.name, backbone, budget, per_class, seed)
    if use_cache and cache.is_file():
        return float(json.loads(cache.read_text())["accuracy"])
    idx = few_label_indices(train.labels, per_class, seed)
    labelled = train.subset(idx).to(device)
    torch.manual_seed(seed)
    # a batch no larger than the labelled set (at least 32): the budget is
    # images seen, and tiny sets then get more optimiser steps, not duplicates
    batch = int(min(256, max(32, len(idx))))
    model = Supervised(SupervisedConfig(backbone=backbone, batch_size=batch), train.shape, train.num_classes).to(device)
    train_loop(model, labelled, budget, TrainContext(device=torch.device(device), quiet=quiet, seed=seed, desc=f"supervised {per_class}/class"))
    model.eval()
    feats = extract_features(nn.Sequential(model.encoder, model.head), test.images, device)
    acc = float((feats.argmax(1) == test.labels).float().mean())
    if use_cache:
        atomic_write(cache, json.dumps({"accuracy": acc, "dataset": train.name, "backbone": backbone,
                                        "budget": str(budget), "labels_per_class": per_class, "seed": seed}))
    return acc


def _one_thread() -> None:
    torch.set_num_threads(1)


def _cached_run(args) -> float:
    return supervised_accuracy(*args, device="cpu", quiet=True)


def supervised_accuracies(train, test, jobs, budget, backbone: str = "small-convnet", device="cpu",
                          quiet: bool = True) -> dict:
    """Accuracy for each ``(labels per class, seed)`` job. The runs are
    independent: on a multi-core CPU the uncached ones run in parallel worker
    processes of one thread each (measured 1.4x faster than one after another
    with two threads on the 2-core CPU); on a GPU they run in turn."""
    todo = [(n, s) for n, s in jobs if not _cache_file(train.name, backbone, budget, n, s).is_file()]
    workers = min(len(todo), torch.get_num_threads()) if torch.device(device).type == "cpu" else 1
    if workers > 1:  # each worker writes its result to the cache, read back below
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread) as pool:
            list(pool.map(_cached_run, [(train, test, n, s, budget, backbone) for n, s in todo]))
    return {(n, s): supervised_accuracy(train, test, n, s, budget, backbone, device, quiet) for n, s in jobs}
