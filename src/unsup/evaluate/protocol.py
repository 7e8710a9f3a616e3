"""The evaluation protocol of DESIGN.md, the same for every method.

Label budgets N in {1, 10, 100, all} per class, drawn by seed (3 seeds for
N <= 100); frozen features -> weighted cosine k-NN (k = min(20, labelled))
and a linear probe; references on the very same splits: raw pixels, the same
encoder with random weights, and a supervised model of the same backbone
trained from scratch on the N labels with the same budget. The test split is
only ever scored, never used to choose anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from pathlib import Path

import torch

from ..data import few_label_indices
from ..data.fetch import cache_dir
from .features import extract_features, raw_pixels
from .knn import knn_accuracy
from .linear import linear_probe_accuracy

DEFAULT_BUDGETS = (1, 10, 100, "all")
# bump when the protocol changes, so cached references are recomputed
PROTOCOL_VERSION = 4


def reference_cache() -> Path:
    return Path(os.environ.get("UNSUP_CACHE") or cache_dir()) / f"references-v{PROTOCOL_VERSION}"


def cached(key: dict, compute):
    """Rows for ``key`` from the reference cache, computed once."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = reference_cache() / f"{key.get('kind', 'rows')}-{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())["rows"]
    rows = compute()
    from ..run import atomic_write

    atomic_write(path, json.dumps({"key": key, "rows": rows}, default=str))
    return rows


def _seeds_for(n, seeds: int) -> list[int]:
    return [0] if n == "all" else list(range(seeds))


def _row(n, classifier: str, accs: list[float], seeds: list[int], **extra) -> dict:
    return {"labels_per_class": n, "classifier": classifier, "accuracy_mean": statistics.fmean(accs),
            "accuracy_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0, "seeds": seeds,
            "accuracies": accs, **extra}


def evaluate_features(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                      num_classes: int, budgets=DEFAULT_BUDGETS, seeds: int = 3) -> list[dict]:
    """k-NN and linear-probe rows for precomputed features."""
    train_y, test_y = train_y.cpu(), test_y.cpu()
    # standardise with statistics of the whole (unlabelled) training split
    mu, sd = train_f.mean(0), train_f.std(0) + 1e-6
    train_s, test_s = (train_f - mu) / sd, (test_f - mu) / sd
    rows = []
    for n in budgets:
        seed_list = _seeds_for(n, seeds)
        lin, knn, l2s = [], [], []
        for s in seed_list:
            idx = few_label_indices(train_y, n, s)
            acc, l2 = linear_probe_accuracy(train_s[idx], train_y[idx], test_s, test_y, num_classes, seed=s)
            lin.append(acc)
            l2s.append(l2)
            knn.append(knn_accuracy(train_f[idx], train_y[idx], test_f, test_y, num_classes, k=min(20, len(idx))))
        rows.append(_row(n, "linear", lin, seed_list, l2=l2s))
        rows.append(_row(n, "knn", knn, seed_list))
    return rows


def probe(encoder, train, test, budgets=DEFAULT_BUDGETS, seeds: int = 3, device="cpu") -> list[dict]:
    """Rows for one encoder on a labelled (train, test) pair."""
    tf = extract_features(encoder, train.images, device)
    sf = extract_features(encoder, test.images, device)
    return evaluate_features(tf, train.labels, sf, test.labels, train.num_classes, budgets, seeds)


def _data_key(train, test) -> dict:
    return {"dataset": train.name, "train": [len(train), *train.shape], "test": len(test),
            "labels": hashlib.sha256(train.labels.cpu().numpy().tobytes()).hexdigest()[:16]}


def raw_pixel_rows(train, test, budgets=DEFAULT_BUDGETS, seeds: int = 3) -> list[dict]:
    """The raw-pixel reference (cached: it is the same for every method)."""
    key = {"kind": "raw-pixels", **_data_key(train, test), "budgets": list(budgets), "seeds": seeds}
    return cached(key, lambda: evaluate_features(raw_pixels(train.images), train.labels, raw_pixels(test.images),
                                                 test.labels, train.num_classes, budgets, seeds))


def random_encoder_rows(encoder, train, test, budgets=DEFAULT_BUDGETS, seeds: int = 3, device="cpu") -> list[dict]:
    """The random-weights reference; cached by architecture when the encoder is
    a plain backbone (methods sharing a backbone share one reference)."""
    from ..nets import Encoder

    if not isinstance(encoder, Encoder):  # its random version depends on learned parts (e.g. whitening)
        return probe(encoder, train, test, budgets, seeds, device)
    key = {"kind": "random-encoder", **_data_key(train, test), "architecture": repr(encoder),
           "budgets": list(budgets), "seeds": seeds}
    return cached(key, lambda: probe(encoder, train, test, budgets, seeds, device))


def supervised_rows(train, test, budgets, seeds: int, budget, backbone: str, device="cpu", quiet=True) -> list[dict]:
    from .supervised import supervised_accuracies

    accs = supervised_accuracies(train, test, [(n, s) for n in budgets for s in _seeds_for(n, seeds)], budget,
                                 backbone, device, quiet)
    return [_row(n, "supervised", [accs[n, s] for s in _seeds_for(n, seeds)], _seeds_for(n, seeds), budget=str(budget))
            for n in budgets]
