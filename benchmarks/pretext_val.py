"""Validation probe for choosing pretext-task settings without the test split.

Probes finished pretext runs (bench-out/pretext/runs/<label>) and the random
encoder on two disjoint parts of the Fashion-MNIST TRAINING split (drawn with
seed 1: 6,000 labelled-pool images and 3,000 validation images); the test split
is never read. Same protocol as the benchmark (k-NN and linear, 10 and 100
labels per class), with 5 label draws to lower the noise.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/pretext_val.py jigsaw jigsaw-seed1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from pretext import OUT, encoder_of, random_encoder, summarise

from unsup.data import load
from unsup.evaluate import probe

KEYS = ["linear@10", "knn@10", "linear@100", "knn@100"]
SEEDS = 5


def val_sets(pool: int = 6_000, val: int = 3_000):
    tr = load("fashion-mnist", "train")
    perm = torch.randperm(len(tr), generator=torch.Generator().manual_seed(1))
    return tr.subset(perm[:pool]), tr.subset(perm[pool : pool + val])


def line(name: str, s: dict) -> str:
    return f"{name:40s} " + "  ".join(f"{k} {100 * s[k][0]:5.1f}±{100 * s[k][1]:.1f}" for k in KEYS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels", nargs="*", help="finished run labels under bench-out/pretext/runs, or run directories")
    args = ap.parse_args()
    pool, val = val_sets()
    cache = OUT / "val"
    cache.mkdir(parents=True, exist_ok=True)
    ref = cache / "random.json"
    if not ref.exists():
        ref.write_text(json.dumps(summarise(probe(random_encoder(), pool, val, (10, 100), SEEDS, "cpu"))))
    print(line("random encoder", json.loads(ref.read_text())), flush=True)
    for label in args.labels:
        s = summarise(probe(encoder_of(label), pool, val, (10, 100), SEEDS, "cpu"))
        (cache / f"{Path(label).name}.json").write_text(json.dumps(s))
        print(line(label, s), flush=True)


if __name__ == "__main__":
    main()
