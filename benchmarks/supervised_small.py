"""Choose the supervised reference's recipe for the smallest labelled sets on a validation split.

    .venv/bin/python benchmarks/supervised_small.py [--seeds 3] [--budgets 1 10] [--workers 2] [--candidates NAME ...]

The training split of Fashion-MNIST is cut into 50k images to draw labels
from and 10k to validate on (``unsup.api.validation_split``); the test split
is not read. For 1 and 10 labels per class and each label draw, every
candidate recipe trains the small convnet by the reference's own procedure
(``supervised_reference`` with that recipe: a fixed length at one label per
class, else the length chosen on a hold-out inside the labelled images, then a
refit on all of them) and is scored on the 10k validation images, beside the
linear probe on raw pixels of the same draws (the floor the reference must
not fall below). Jobs run in parallel one-thread processes; each finished one is written to
benchmarks/results/supervised_small.json at once, and a rerun does only the
missing ones. The table goes to benchmarks/results/supervised_small.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from unsup.api import machine
from unsup.data.augment import AugmentConfig
from unsup.evaluate.supervised import DEFAULT_RECIPE, LARGE_SET_AUGMENT, SMALL_SET_RECIPE, Recipe

CANDIDATES = {
    "early stopping on the hold-out (300 steps at one label)": DEFAULT_RECIPE,
    "light augmentation": Recipe(augment=LARGE_SET_AUGMENT),
    "weight decay 0.05": Recipe(weight_decay=0.05),
    "no augmentation": Recipe(augment=AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=0.0, jitter_prob=0.0,
                                                    blur_prob=0.0)),
    "100 steps": Recipe(fixed_steps=100),
    "1000 steps": Recipe(fixed_steps=1000),
    "light augmentation, 1000 steps": Recipe(augment=LARGE_SET_AUGMENT, fixed_steps=1000),
    "3000 steps": Recipe(fixed_steps=3000),
    "wider crops (scale 0.08-1), 1000 steps": Recipe(augment=AugmentConfig(crop_scale=(0.08, 1.0)), fixed_steps=1000),
    # a 10-label set holds out 2 images per class: under 5, train for the fixed length instead of stopping early
    "fixed 300 steps below a hold-out of 5 per class": Recipe(min_holdout_per_class=5),
    "fixed 1000 steps below a hold-out of 5 per class": SMALL_SET_RECIPE,  # the default for such sets
}
# at one label per class these two are the first and "1000 steps"; a fixed length alone only exists there
TEN_LABELS_ONLY = ["fixed 300 steps below a hold-out of 5 per class", "fixed 1000 steps below a hold-out of 5 per class"]
FOR_BUDGET = {1: [c for c in CANDIDATES if c not in TEN_LABELS_ONLY],
              10: ["early stopping on the hold-out (300 steps at one label)", "light augmentation", "weight decay 0.05", "no augmentation", *TEN_LABELS_ONLY]}


def _split():
    from unsup.api import validation_split
    from unsup.data import load

    return validation_split(load("fashion-mnist", "train"))


def run(name: str, per_class: int, seed: int) -> dict:
    from unsup.evaluate.supervised import supervised_reference

    torch.set_num_threads(1)
    fit, held = _split()
    t0 = time.perf_counter()
    result = supervised_reference(fit, held, per_class, seed, recipe=CANDIDATES[name])
    return {"candidate": name, "labels_per_class": per_class, "seed": seed, "accuracy": result["accuracy"],
            "steps": result["steps"], "seconds": round(time.perf_counter() - t0)}


def raw_pixel_probe(seeds: int) -> dict:
    from unsup.evaluate.features import raw_pixels
    from unsup.evaluate.protocol import evaluate_features

    fit, held = _split()
    rows = evaluate_features(raw_pixels(fit.images), fit.labels, raw_pixels(held.images), held.labels, fit.num_classes,
                             budgets=list(FOR_BUDGET), seeds=seeds)
    return {r["labels_per_class"]: r["accuracies"] for r in rows if r["classifier"] == "linear"}


# the candidates compared on 6 label draws
SIX = '"early stopping on the hold-out (300 steps at one label)" "1000 steps" "fixed 1000 steps below a hold-out of 5 per class"'


def table(results: list[dict], raw: dict) -> list[str]:
    lines = ["| labels per class | recipe | validation accuracy (mean of draws) | per draw | steps |", "|---|---|---|---|---|"]
    for n, names in FOR_BUDGET.items():
        if n in raw:
            lines.append(f"| {n} | linear probe on raw pixels | {100 * statistics.mean(raw[n]):.1f} | "
                         f"{' '.join(f'{100 * a:.1f}' for a in raw[n])} | |")
        for name in names:
            rs = sorted((r for r in results if r["candidate"] == name and r["labels_per_class"] == n), key=lambda r: r["seed"])
            if rs:
                accs = [r["accuracy"] for r in rs]
                lines.append(f"| {n} | {name} | {100 * statistics.mean(accs):.1f} | {' '.join(f'{100 * a:.1f}' for a in accs)} "
                             f"| {' '.join(str(r['steps']) for r in rs)} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budgets", type=int, nargs="+", default=list(FOR_BUDGET), help="labels per class (1, 10)")
    p.add_argument("--workers", type=int, default=multiprocessing.cpu_count(), help="parallel one-thread processes")
    p.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), help="only these recipes (default: all)")
    args = p.parse_args()
    out = Path(__file__).parent / "results" / "supervised_small.json"
    # finished runs are kept as they come in, and a rerun does only the missing ones
    results = json.loads(out.read_text())["results"] if out.is_file() else []
    done = {(r["candidate"], r["labels_per_class"], r["seed"]) for r in results}
    jobs = [(name, n, s) for n in args.budgets for name in FOR_BUDGET[n] for s in range(args.seeds)
            if (name, n, s) not in done and (not args.candidates or name in args.candidates)]
    jobs.sort(key=lambda j: -j[1])  # the longer 10-label runs first, so the workers finish together
    raw = raw_pixel_probe(args.seeds)

    def write():
        out.write_text(json.dumps({"seeds": args.seeds, "candidates": {k: repr(v) for k, v in CANDIDATES.items()},
                                   "raw_pixel_linear": raw, "results": results, "table": table(results, raw)}, indent=2))
        page = [f"# {__doc__.splitlines()[0]}", "", "    .venv/bin/python benchmarks/supervised_small.py --workers 1",
                f"    .venv/bin/python benchmarks/supervised_small.py --seeds 6 --budgets 1 10 --workers 1 --candidates {SIX}", "",
                "The first runs every candidate on 3 label draws, the second three of them on 3 more. "
                f"Machine: {machine(1).rsplit(',', 1)[0]}, one thread per run. Recipes (the reference's `Recipe`; every other "
                "setting as `unsup.evaluate.supervised`): see `candidates` in supervised_small.json. Validation accuracy "
                "on 10,000 images held out of the training split; the test split is not read. The reference trains 1 and "
                "10 labels per class with `SMALL_SET_RECIPE` (\"1000 steps\" at one label per class, \"fixed 1000 steps "
                "below a hold-out of 5 per class\" at ten: the same recipe): of the three compared on 6 draws, the only "
                "one at or above the raw-pixel linear probe.", "", *table(results, raw)]
        out.with_suffix(".md").write_text("\n".join(page) + "\n")

    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(run, *job) for job in jobs]):
            results.append(future.result())
            write()
    write()
    print("\n".join(table(results, raw)))


if __name__ == "__main__":
    main()
