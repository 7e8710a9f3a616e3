"""Choose the supervised reference's augmentation on a validation split.

    .venv/bin/python benchmarks/supervised_augment.py [--steps 1500]

The training split of Fashion-MNIST is cut into 50k images to train on and
10k to validate on (``unsup.api.validation_split``); the test split is not
read. For each candidate augmentation the small convnet is trained by the
reference's own procedure (``train_classifier`` with that validation set as
its hold-out, the length capped at ``--steps``), the candidates in parallel
one-thread processes. Prints and writes the hold-out curves to
benchmarks/results/supervised_augment.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from unsup.api import validation_split
from unsup.data import load
from unsup.data.augment import AugmentConfig

CANDIDATES = {
    "pretraining default": AugmentConfig(),
    "light (crop 0.6-1, flip, jitter, no blur)": AugmentConfig(crop_scale=(0.6, 1.0), blur_prob=0.0),
}


def run(name: str, steps: int) -> dict:
    from unsup.evaluate.supervised import Recipe, train_classifier

    torch.set_num_threads(1)
    fit, held = validation_split(load("fashion-mnist", "train"))
    t0 = time.perf_counter()
    _, info = train_classifier(fit.images, fit.labels, "small-convnet", fit.num_classes, seed=0,
                               holdout=(held.images, held.labels), max_steps=steps, recipe=Recipe(augment=CANDIDATES[name]))
    return {"candidate": name, "config": repr(CANDIDATES[name]), "seconds": round(time.perf_counter() - t0),
            "best_step": info["steps"], "best_validation_accuracy": info["holdout_accuracy"], "history": info["history"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    args = p.parse_args()
    with ProcessPoolExecutor(len(CANDIDATES), mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(run, CANDIDATES, [args.steps] * len(CANDIDATES)))
    for r in results:
        curve = " ".join(f"{h['step']}:{100 * h['holdout_accuracy']:.1f}" for h in r["history"])
        print(f"{r['candidate']}: best {100 * r['best_validation_accuracy']:.2f}% at step {r['best_step']} ({r['seconds']} s)\n  {curve}")
    out = Path(__file__).parent / "results" / "supervised_augment.json"
    out.write_text(json.dumps({"steps": args.steps, "results": results}, indent=2))


if __name__ == "__main__":
    main()
