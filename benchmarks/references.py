"""Compute the protocol's references for a dataset and ship them with the package.

    .venv/bin/python benchmarks/references.py                  # Fashion-MNIST, small convnet
    .venv/bin/python benchmarks/references.py --data fashion-mnist --backbone resnet18
    .venv/bin/python benchmarks/references.py --method future-features   # a method's own probe sets and backbone

Runs the supervised reference for every label budget and seed (1, 10, 100 per
class with 3 seeds, and all labels), through the
library's own cache (``unsup.evaluate.protocol``), then copies those cache files
into src/unsup/evaluate/shipped/, where ``unsup probe`` and ``unsup bench`` find
them on a fresh machine. A user's cache always wins over a shipped file; delete
the shipped files to make every machine recompute its own.
"""

from __future__ import annotations

import argparse
import shutil
import time

from unsup.api import _load_train
from unsup.data import load
from unsup.evaluate.protocol import DEFAULT_BUDGETS, SHIPPED, cache_name, reference_cache, supervised_key, supervised_rows
from unsup.registry import get_method


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--backbone", default="small-convnet")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--method", help="use this method's probe sets and default backbone (e.g. the video stills)")
    args = p.parse_args()
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
    SHIPPED.mkdir(parents=True, exist_ok=True)
    names = [cache_name(supervised_key(train, test, args.backbone, n, s)) for n in DEFAULT_BUDGETS
             for s in ([0] if n == "all" else range(args.seeds))]
    for name in names:
        if (reference_cache() / name).is_file():
            shutil.copyfile(reference_cache() / name, SHIPPED / name)
    print(f"{len(names)} files in {SHIPPED}")


if __name__ == "__main__":
    main()
