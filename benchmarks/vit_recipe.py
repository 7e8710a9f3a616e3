"""Choose the ViT-tiny's supervised recipe (all labels) on a validation split.

    .venv/bin/python benchmarks/vit_recipe.py [--images 32000] [--only NAME ...]

The training split of Fashion-MNIST is cut into 50k images to train on and 10k
to validate on (``unsup.api.validation_split``); the test split is not read.
Each candidate recipe trains the ViT-tiny classifier (``train_classifier``, the
reference's own loop) on the same number of images, its whole schedule inside
that length (a cosine decay ends at the last step), and is read once on the
10k validation images at the end. Candidates run two at a time, one thread
each. Writes benchmarks/results/vit_recipe.json and .md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from unsup.api import machine, validation_split
from unsup.data import load
from unsup.data.augment import AugmentConfig
from unsup.evaluate.supervised import LARGE_SET_AUGMENT, LARGE_SET_RECIPE, Recipe, train_classifier
from unsup.run import atomic_write

WARMUP_IMAGES = 3200  # the same warm-up in images for every batch size
NO_CROP = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), blur_prob=0.0)


def cosine(batch: int, lr: float, **kw) -> Recipe:
    return Recipe(augment=kw.pop("augment", LARGE_SET_AUGMENT), holdout_per_class=500, schedule="cosine", lr=lr,
                  batch_size=batch, warmup_steps=WARMUP_IMAGES // batch, **kw)


CANDIDATES = {
    "plateau, batch 256, lr 1e-3 (the convnet's large-set recipe)": LARGE_SET_RECIPE,
    "cosine, batch 256, lr 1e-3": cosine(256, 1e-3),
    "cosine, batch 64, lr 1e-3": cosine(64, 1e-3),
    "cosine, batch 64, lr 5e-4": cosine(64, 5e-4),
    "cosine, batch 64, lr 1e-3, weight decay 0.05": cosine(64, 1e-3, weight_decay=0.05),
    "cosine, batch 64, lr 1e-3, no crop": cosine(64, 1e-3, augment=NO_CROP),
}


def run(name: str, images: int) -> dict:
    torch.set_num_threads(1)
    recipe = CANDIDATES[name]
    fit, held = validation_split(load("fashion-mnist", "train"))
    steps = images // recipe.batch_size
    t0 = time.perf_counter()
    model, _ = train_classifier(fit.images, fit.labels, "vit-tiny", fit.num_classes, seed=0, steps=steps, recipe=recipe)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        accuracy = float(torch.cat([model(x).argmax(1) for x in held.images.split(500)]).eq(held.labels).float().mean())
    return {"candidate": name, "recipe": repr(recipe), "steps": steps, "images": steps * recipe.batch_size,
            "validation_accuracy": round(accuracy, 4), "seconds": round(seconds)}


def markdown(res: dict) -> str:
    lines = ["# The ViT-tiny's supervised recipe, chosen on a validation split", "",
             f"Machine: {res['machine']}; two candidates at a time, one thread each; {res['date']}. Command: "
             f"`{res['command']}`.", "",
             "ViT-tiny (patch 4, class token) trained on 50k Fashion-MNIST training images, read on the other 10k "
             f"(the test split is not read); every candidate sees {res['images']:,} images, its whole schedule inside "
             f"them, warm-up {WARMUP_IMAGES:,} images; seed 0.", "",
             "| recipe | steps | validation accuracy | seconds |", "|---|---|---|---|"]
    for r in sorted(res["results"], key=lambda r: -r["validation_accuracy"]):
        lines.append(f"| {r['candidate']} | {r['steps']} | {100 * r['validation_accuracy']:.2f}% | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import shlex
    import sys

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=32000)
    p.add_argument("--only", nargs="*", help="run these candidates only (names as in CANDIDATES); the others keep their result")
    p.add_argument("--out", default="benchmarks/results/vit_recipe.json")
    args = p.parse_args()
    names = args.only or list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidate {unknown[0]!r}; choose from: {'; '.join(CANDIDATES)}")
    out = Path(args.out)
    earlier = json.loads(out.read_text())["results"] if args.only and out.is_file() else []
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(run, names, [args.images] * len(names)))
    results += [r for r in earlier if r["candidate"] not in names]
    res = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "command": shlex.join(["python", *sys.argv]),
           "images": args.images, "results": results}
    atomic_write(out, json.dumps(res, indent=2))
    atomic_write(out.with_suffix(".md"), markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
