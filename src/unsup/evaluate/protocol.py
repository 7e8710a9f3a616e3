"""The evaluation protocol of DESIGN.md (version 5), the same for every method.

Label budgets N in {1, 10, 100, all} per class, drawn by seed (3 seeds for
N <= 100); frozen features -> weighted cosine k-NN (k = min(20, labelled))
and a linear probe; references on the very same splits: raw pixels, the same
encoder with random weights over ``RANDOM_INITS`` initialisations (a
distribution, not one draw), and a supervised model of the same backbone
trained on the N labels to convergence (``supervised``: its length is chosen
on a hold-out inside the labelled subset). Differences to the references carry
95% intervals (``stats``). The test split is only ever scored, never used to
choose anything.

References are cached per dataset, architecture, label budget and seed. A
reference file may also ship with the package (``SHIPPED``, made by
``python benchmarks/references.py``): it is read when the user's cache has none,
and its rows say so (``source``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..data import few_label_indices
from ..data.fetch import cache_dir
from ..progress import bar
from .features import extract_features, raw_pixels
from .knn import knn_accuracy
from .linear import SOLVER as LINEAR_SOLVER
from .linear import linear_probe_accuracy

DEFAULT_BUDGETS = (1, 10, 100, "all")
# bump when the protocol changes, so cached references are recomputed
PROTOCOL_VERSION = 5
RANDOM_INITS = 3
# label draws of at most this many images are probed side by side (see evaluate_features)
SIDE_BY_SIDE_MAX = 5_000
SHIPPED = Path(__file__).parent / "shipped"


def reference_cache() -> Path:
    return Path(os.environ.get("UNSUP_CACHE") or cache_dir()) / f"references-v{PROTOCOL_VERSION}"


def cache_name(key: dict) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return f"{key.get('kind', 'rows')}-{digest}.json"


def cached(key: dict, compute, shipped: bool = True):
    """The value for ``key``: from the user's cache, else from the files shipped
    with the package, else computed once and written to the user's cache."""
    name = cache_name(key)
    for path, source in ((reference_cache() / name, "cache"), (SHIPPED / name, "shipped")):
        if path.is_file() and (shipped or source == "cache"):
            return _with_source(json.loads(path.read_text())["rows"], source)
    rows = compute()
    from ..run import atomic_write

    atomic_write(reference_cache() / name, json.dumps({"key": key, "rows": rows}, default=str))
    return _with_source(rows, "computed")


def _with_source(rows, source: str):
    if isinstance(rows, list):
        return [{**r, "source": source} if isinstance(r, dict) else r for r in rows]
    return {**rows, "source": source} if isinstance(rows, dict) else rows


def _seeds_for(n, seeds: int) -> list[int]:
    return [0] if n == "all" else list(range(seeds))


def _row(n, classifier: str, accs: list[float], seeds: list[int], **extra) -> dict:
    return {"labels_per_class": n, "classifier": classifier, "accuracy_mean": statistics.fmean(accs),
            "accuracy_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0, "seeds": seeds,
            "accuracies": accs, **extra}


def _probe_draw(train_s, train_f, train_y, test_s, test_f, test_y, num_classes: int, n, seed: int) -> tuple[float, float, float]:
    """(linear accuracy, its L2, k-NN accuracy) for one label draw."""
    idx = few_label_indices(train_y, n, seed).to(train_f.device)
    acc, l2 = linear_probe_accuracy(train_s[idx], train_y[idx], test_s, test_y, num_classes, seed=seed)
    return acc, l2, knn_accuracy(train_f[idx], train_y[idx], test_f, test_y, num_classes, k=min(20, len(idx)))


def standardise(train_f: torch.Tensor, test_f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both feature sets scaled by the statistics of the whole (unlabelled)
    training split: zero mean, unit standard deviation per feature."""
    mu, sd = train_f.mean(0), train_f.std(0) + 1e-6
    return (train_f - mu) / sd, (test_f - mu) / sd


def evaluate_features(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                      num_classes: int, budgets=DEFAULT_BUDGETS, seeds: int = 3, progress: str | None = None) -> list[dict]:
    """k-NN and linear-probe rows for precomputed features, computed on the
    device the features are on.

    On the CPU, the small label budgets' draws are independent fits too small
    to use two cores each, so they run side by side, one thread each (the same
    results as one after another); the large ones (all labels) use every thread."""
    train_y, test_y = train_y.to(train_f.device), test_y.to(test_f.device)
    train_s, test_s = standardise(train_f, test_f)
    draw = functools.partial(_probe_draw, train_s, train_f, train_y, test_s, test_f, test_y, num_classes)
    jobs = [(n, s) for n in budgets for s in _seeds_for(n, seeds)]
    small = [j for j in jobs if j[0] != "all" and j[0] * num_classes <= SIDE_BY_SIDE_MAX]
    threads = torch.get_num_threads()
    done = {}
    with bar(progress and f"{progress}: probes", len(jobs), "draw") as b:
        def counted(job):
            result = draw(*job)
            b.update(1)
            return result

        if threads > 1 and len(small) > 1 and train_f.device.type == "cpu":
            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(min(threads, len(small))) as pool:
                    done = dict(zip(small, pool.map(counted, small)))
            finally:
                torch.set_num_threads(threads)
        done.update({j: counted(j) for j in jobs if j not in done})
    rows = []
    for n in budgets:
        seed_list = _seeds_for(n, seeds)
        lin, l2s, knn = zip(*(done[(n, s)] for s in seed_list))
        rows.append(_row(n, "linear", list(lin), seed_list, l2=list(l2s)))
        rows.append(_row(n, "knn", list(knn), seed_list))
    return rows


def probe(encoder, train, test, budgets=DEFAULT_BUDGETS, seeds: int = 3, device="cpu", progress: str | None = None) -> list[dict]:
    """Rows for one encoder on a labelled (train, test) pair; ``progress``
    labels the progress bars (none when None). Each set is an ImageDataset, an
    ``(images, labels)`` pair or a Dataset of (image, label) pairs."""
    from ..user import as_dataset

    train, test = as_dataset(train, name="train"), as_dataset(test, name="test")
    with bar(progress and f"{progress}: features", len(train) + len(test), "img") as b:
        tf = extract_features(encoder, train.images, device, progress=b, keep_on_device=True)
        sf = extract_features(encoder, test.images, device, progress=b, keep_on_device=True)
    return evaluate_features(tf, train.labels, sf, test.labels, train.num_classes, budgets, seeds, progress)


def _data_key(train, test) -> dict:
    return {"dataset": train.name, "train": [len(train), *train.shape], "test": len(test),
            "labels": hashlib.sha256(train.labels.cpu().numpy().tobytes()).hexdigest()[:16]}


def raw_pixel_key(train, test, budgets=DEFAULT_BUDGETS, seeds: int = 3) -> dict:
    return {"kind": "raw-pixels", **_data_key(train, test), "budgets": list(budgets), "seeds": seeds,
            "linear_probe": LINEAR_SOLVER}


def raw_pixel_rows(train, test, budgets=DEFAULT_BUDGETS, seeds: int = 3, progress: str | None = None) -> list[dict]:
    """The raw-pixel reference (cached: it is the same for every method)."""
    key = raw_pixel_key(train, test, budgets, seeds)
    return cached(key, lambda: evaluate_features(raw_pixels(train.images), train.labels, raw_pixels(test.images),
                                                 test.labels, train.num_classes, budgets, seeds, progress))


def _match(rows, row, classifier=None) -> dict | None:
    classifier = classifier or row["classifier"]
    return next((r for r in rows or [] if r["labels_per_class"] == row["labels_per_class"] and r["classifier"] == classifier), None)


def add_intervals(result: dict, n_test: int) -> None:
    """Each method row gets its difference to the random encoder (``vs_random``),
    to raw pixels (``vs_raw``) and, for the linear probe, to the supervised model
    (``vs_supervised``), with a 95% interval over label draws, random inits,
    pretraining seeds and the test split (``stats.difference_interval``)."""
    from .stats import difference_interval

    refs = result.get("references") or {}
    for row in result["results"]:
        mine = row.get("accuracies_by_run") or [row["accuracies"]]
        for name, field, classifier in (("random_encoder", "vs_random", None), ("raw_pixels", "vs_raw", None),
                                        ("supervised", "vs_supervised", "supervised")):
            if classifier and row["classifier"] != "linear":
                continue
            ref = _match(refs.get(name), row, classifier)
            if ref is not None and len(ref["accuracies"]) == len(row["accuracies"]):
                row[field] = difference_interval(mine, ref.get("accuracies_by_init") or [ref["accuracies"]], n_test)


def merge_rows(runs: list[list[dict]], by: str) -> list[dict]:
    """Rows of several encoders (random inits, or pretraining seeds) on the same
    label draws as one row each: mean and std over every (encoder, draw) value,
    and the per-encoder accuracies under ``accuracies_by_<by>``."""
    out = []
    for row in runs[0]:
        same = [_match(rows, row) for rows in runs]
        values = [a for r in same for a in r["accuracies"]]
        out.append({**row, "accuracy_mean": statistics.fmean(values),
                    "accuracy_std": statistics.pstdev(values) if len(values) > 1 else 0.0,
                    "accuracies": [statistics.fmean(col) for col in zip(*(r["accuracies"] for r in same))],
                    f"accuracies_by_{by}": [r["accuracies"] for r in same], f"{by}s": len(same)})
    return out


def _weights_digest(modules) -> str:
    h = hashlib.sha256()
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def random_encoders(method, inits: int = RANDOM_INITS) -> list:
    """The reference's encoders: ``method.random_encoder()`` under seeds 10_000 + i."""
    encoders = []
    for i in range(inits):
        torch.manual_seed(10_000 + i)
        encoders.append(method.random_encoder())
    return encoders


# the run settings that decide a learned part of a random encoder (see random_encoder_origin)
ORIGIN_FIELDS = ("method", "data", "budget", "seed", "world_size", "options")


def random_encoder_origin(method, run_config: dict | None) -> dict | None:
    """What a random encoder that keeps learned parts (k-means' whitening and
    centroid scale) is keyed by: the settings of the pretraining run those parts
    came from. Its weights cannot be the key: their last bits differ between
    CPUs (an eigendecomposition, float sums), so a reference shipped from one
    machine would never be found on another. None for a wholly random encoder,
    keyed by its weights."""
    from ..methods.base import Method

    if type(method).random_encoder is Method.random_encoder or run_config is None:
        return None
    return {k: run_config.get(k) for k in ORIGIN_FIELDS}


def random_encoder_key(encoders, train, test, budgets=DEFAULT_BUDGETS, seeds: int = 3, origin: dict | None = None) -> dict:
    identity = {"learned_from": origin} if origin is not None else {"weights": _weights_digest(encoders)}
    return {"kind": "random-encoder", **_data_key(train, test), "architecture": repr(encoders[0]),
            **identity, "budgets": list(budgets), "seeds": seeds, "inits": len(encoders), "linear_probe": LINEAR_SOLVER}


def random_encoder_rows(method, train, test, budgets=DEFAULT_BUDGETS, seeds: int = 3, device="cpu",
                        inits: int = RANDOM_INITS, progress: str | None = None, run_config: dict | None = None) -> list[dict]:
    """The random-weights reference over ``inits`` initialisations of the method's
    encoder (seeds 10_000 + i). Cached by the initial weights themselves, so
    methods sharing a backbone share one reference; a random encoder that keeps
    learned parts is cached by the settings of the run it was drawn from
    (``run_config``, see random_encoder_origin)."""
    encoders = random_encoders(method, inits)
    key = random_encoder_key(encoders, train, test, budgets, seeds, random_encoder_origin(method, run_config))
    return cached(key, lambda: merge_rows([probe(e.to(device), train, test, budgets, seeds, device,
                                                 progress and f"{progress} {i + 1}/{inits}") for i, e in enumerate(encoders)], "init"))


def supervised_key(train, test, backbone: str, n, seed: int, max_steps: int | None = None,
                   backbone_options: dict | None = None) -> dict:
    """The cache key of one supervised reference run: data, backbone and its
    options other than the defaults (none: the key has no such entry), budget,
    seed and the settings that run trains with."""
    from ..nets import backbone_options as non_default
    from .supervised import settings_for

    settings = settings_for(train.labels[few_label_indices(train.labels, n, seed)], backbone)
    if max_steps is not None and max_steps < settings["max_steps"]:  # a cap (tests use one) is part of the key
        settings = {**settings, "max_steps": max_steps}
    options = non_default(backbone, backbone_options) if backbone_options else {}
    return {"kind": "supervised", **_data_key(train, test), "backbone": backbone,
            **({"backbone_options": options} if options else {}), "labels_per_class": n, "seed": seed, "settings": settings}


def supervised_rows(train, test, budgets, seeds: int, backbone: str, device="cpu", quiet=True, max_steps: int | None = None,
                    backbone_options: dict | None = None) -> list[dict]:
    """The supervised reference for each label budget: one cached run per
    (budget, seed), the missing ones trained in parallel."""
    from .supervised import supervised_references

    def key(n, s):
        return supervised_key(train, test, backbone, n, s, max_steps, backbone_options)

    jobs = [(n, s) for n in budgets for s in _seeds_for(n, seeds)]
    todo = [j for j in jobs if not any((d / cache_name(key(*j))).is_file() for d in (reference_cache(), SHIPPED))]
    todo.sort(key=lambda j: j[0] != "all")  # the longest run first, so parallel workers finish together
    if todo:
        supervised_references(train, test, todo, backbone, device, quiet, max_steps,
                              on_result=lambda job, result: cached(key(*job), lambda: result), backbone_options=backbone_options)
    runs = {j: cached(key(*j), lambda: None) for j in jobs}
    rows = []
    for n in budgets:
        ss = _seeds_for(n, seeds)
        rows.append(_row(n, "supervised", [runs[n, s]["accuracy"] for s in ss], ss,
                         steps=[runs[n, s].get("steps") for s in ss], source=runs[n, ss[0]]["source"]))
    return rows
