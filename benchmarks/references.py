"""Compute the protocol's references for a dataset and ship them with the package.

    .venv/bin/python benchmarks/references.py                  # Fashion-MNIST, small convnet
    .venv/bin/python benchmarks/references.py --data fashion-mnist --backbone resnet18
    .venv/bin/python benchmarks/references.py --method future-features   # a method's own probe sets and backbone
    .venv/bin/python benchmarks/references.py --bench          # raw pixels and random encoders of `make bench`

Runs the supervised reference for every label budget and seed (1, 10, 100 per
class with 3 seeds, and all labels), through the
library's own cache (``unsup.evaluate.protocol``), then copies those cache files
into src/unsup/evaluate/shipped/, where ``unsup probe`` and ``unsup bench`` find
them on a fresh machine. ``--bench`` does the same for the raw-pixel and
random-encoder references of the default bench's methods (a random encoder that
depends on learned parts, k-means' whitening, is drawn from a run pretrained as
the bench does: same seed and budget, and keyed by that run's settings, so every
machine that runs the bench finds it). A user's cache
always wins over a shipped file; delete the shipped files to make every machine
recompute its own.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from unsup.api import DEFAULT_BENCH, _load_train, load_method, pretrain
from unsup.data import load
from unsup.evaluate.protocol import (
    DEFAULT_BUDGETS,
    SHIPPED,
    cache_name,
    random_encoder_key,
    random_encoder_origin,
    random_encoder_rows,
    random_encoders,
    raw_pixel_key,
    raw_pixel_rows,
    reference_cache,
    supervised_key,
    supervised_rows,
)
from unsup.methods.base import Method
from unsup.registry import get_method
from unsup.run import RunDir


def ship(names: list[str]) -> None:
    SHIPPED.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (reference_cache() / name).is_file():
            shutil.copyfile(reference_cache() / name, SHIPPED / name)
    print(f"{len(names)} files in {SHIPPED}")


def bench_references(data: str, budget: str, seeds: int, methods) -> None:
    """Raw pixels and the random encoders (3 inits) of each method (the default bench's), on its probe sets."""
    names = []
    for name in methods:
        cls = get_method(name)
        t0 = time.perf_counter()
        config = None
        if cls.random_encoder is Method.random_encoder:
            method = cls(cls.Config(), _load_train(cls, data).shape)
        else:  # its random encoder keeps learned parts: pretrain as the bench does (seed 0, the same budget)
            with tempfile.TemporaryDirectory() as tmp:
                run = Path(tmp) / name
                pretrain(name, data=data, budget=budget, out=run, seed=0, quiet=True)
                method, config = load_method(run), RunDir(run).read_config()
        train, test = method.probe_datasets(data)
        raw_pixel_rows(train, test, DEFAULT_BUDGETS, seeds)
        random_encoder_rows(method, train, test, DEFAULT_BUDGETS, seeds, run_config=config)
        origin = random_encoder_origin(method, config)
        names += [cache_name(raw_pixel_key(train, test, DEFAULT_BUDGETS, seeds)),
                  cache_name(random_encoder_key(random_encoders(method), train, test, DEFAULT_BUDGETS, seeds, origin))]
        print(f"{name}: raw pixels and random encoder ({time.perf_counter() - t0:.0f} s)", flush=True)
    ship(sorted(set(names)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--backbone", default="small-convnet")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--method", help="use this method's probe sets and default backbone (e.g. the video stills)")
    p.add_argument("--bench", action="store_true", help="the raw-pixel and random-encoder references of the default bench")
    p.add_argument("--budget", default="60s", help="with --bench: the bench's pretraining budget (default 60s)")
    p.add_argument("--methods", default=",".join(DEFAULT_BENCH), help="with --bench: these methods (default: the bench's)")
    args = p.parse_args()
    if args.bench:
        bench_references(args.data, args.budget, args.seeds, [m.strip() for m in args.methods.split(",") if m.strip()])
        return
    if args.method:
        cls = get_method(args.method)
        method = cls(cls.Config(), _load_train(cls, args.data).shape)
        train, test = method.probe_datasets(args.data)
        args.backbone = getattr(method.cfg, "backbone", args.backbone)
    else:
        train, test = load(args.data, "train"), load(args.data, "test")
    t0 = time.perf_counter()
    rows = supervised_rows(train, test, DEFAULT_BUDGETS, args.seeds, args.backbone)
    print(f"supervised reference ({args.backbone}, {time.perf_counter() - t0:.0f} s):")
    for r in rows:
        print(f"  {r['labels_per_class']}/class: {100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f}  steps {r['steps']}")
    ship([cache_name(supervised_key(train, test, args.backbone, n, s)) for n in DEFAULT_BUDGETS
          for s in ([0] if n == "all" else range(args.seeds))])


if __name__ == "__main__":
    main()
