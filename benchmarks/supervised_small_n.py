"""Choose the supervised reference's length and augmentation for small labelled
sets (1 and 10 labels per class) on a validation split.

    .venv/bin/python benchmarks/supervised_small_n.py [--seeds 5]

The training split of Fashion-MNIST is cut into 50k images to draw labelled
sets from and 10k to validate on (``unsup.api.validation_split``); the test
split is not read. For each labelled-set size and candidate (a fixed number of
steps with an augmentation, or the reference's hold-out procedure), the small
convnet is trained on ``--seeds`` label draws (``few_label_indices`` of the
50k) and scored on the 10k, in parallel one-thread processes. Prints the table
and writes benchmarks/results/supervised_small_n.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from unsup.api import validation_split
from unsup.data import few_label_indices, load
from unsup.data.augment import AugmentConfig

AUGMENTS = {
    "default": AugmentConfig(),
    "light": AugmentConfig(crop_scale=(0.6, 1.0), blur_prob=0.0),
}
# (name, augment, steps); steps None = the hold-out procedure (needs >= 2 labels per class)
CANDIDATES = [("default 100", "default", 100), ("default 300", "default", 300), ("default 1000", "default", 1000),
              ("light 300", "light", 300), ("light 1000", "light", 1000), ("hold-out (default)", "default", None)]
SIZES = (1, 10)


def run(job) -> dict:
    from unsup.evaluate.supervised import holdout_split, train_classifier
    from unsup.evaluate.features import extract_features

    per_class, (name, aug, steps), seed = job
    torch.set_num_threads(1)
    fit, held = validation_split(load("fashion-mnist", "train"))
    idx = few_label_indices(fit.labels, per_class, seed)
    images, labels = fit.images[idx], fit.labels[idx].cpu()
    t0 = time.perf_counter()
    if steps is None:
        split = holdout_split(labels, seed)
        if split is None:
            return {"per_class": per_class, "candidate": name, "seed": seed, "accuracy": None}
        f, h = split
        _, info = train_classifier(images[f], labels[f], "small-convnet", fit.num_classes, seed,
                                   holdout=(images[h], labels[h]), augment_config=AUGMENTS[aug])
        model, _ = train_classifier(images, labels, "small-convnet", fit.num_classes, seed, steps=info["steps"],
                                    drops_at=tuple(info["drops_at"]), augment_config=AUGMENTS[aug])
        length = info["steps"]
    else:
        model, _ = train_classifier(images, labels, "small-convnet", fit.num_classes, seed, steps=steps,
                                    augment_config=AUGMENTS[aug])
        length = steps
    logits = extract_features(model, held.images)
    acc = float((logits.argmax(1) == held.labels.cpu()).float().mean())
    return {"per_class": per_class, "candidate": name, "seed": seed, "steps": length, "accuracy": acc,
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    jobs = [(n, c, s) for n in SIZES for c in CANDIDATES for s in range(args.seeds) if not (n == 1 and c[2] is None)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(run, jobs))
    table = []
    # the same draws' raw-pixel linear probe (the protocol's own), the bar a supervised network should clear
    from unsup.evaluate.protocol import evaluate_features
    fit, held = validation_split(load("fashion-mnist", "train"))
    pixels = [x.images.flatten(1).float() / 255 for x in (fit, held)]
    raw = evaluate_features(pixels[0], fit.labels, pixels[1], held.labels, fit.num_classes, SIZES, args.seeds)
    for row in raw:
        if row["classifier"] == "linear":
            table.append({"per_class": row["labels_per_class"], "candidate": "raw pixels, linear probe",
                          "mean": 100 * row["accuracy_mean"], "std": 100 * row["accuracy_std"], "draws": len(row["seeds"])})
            print(f"{row['labels_per_class']:>3}/class  {'raw pixels, linear':<20} {table[-1]['mean']:.1f} ± {table[-1]['std']:.1f}")
    for n in SIZES:
        for name, _, _ in CANDIDATES:
            accs = [r["accuracy"] for r in results if r["per_class"] == n and r["candidate"] == name and r["accuracy"] is not None]
            if not accs:
                continue
            row = {"per_class": n, "candidate": name, "mean": 100 * statistics.mean(accs), "std": 100 * statistics.pstdev(accs),
                   "draws": len(accs)}
            table.append(row)
            print(f"{n:>3}/class  {name:<20} {row['mean']:.1f} ± {row['std']:.1f}  ({len(accs)} draws)")
    out = Path(__file__).parent / "results" / "supervised_small_n.json"
    out.write_text(json.dumps({"command": "python benchmarks/supervised_small_n.py --seeds %d" % args.seeds,
                               "seconds": round(time.perf_counter() - t0), "table": table, "runs": results}, indent=2))
    print(f"wrote {out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
