"""Does the ViT-tiny learn supervised? The library's supervised reference
(``unsup.evaluate.supervised``, the ViT's recipe for a large labelled set:
``VIT_LARGE_SET_RECIPE``, the length read on a hold-out of 500 images per class)
with the ViT-tiny backbone and all Fashion-MNIST labels, seed 0; the hold-out
readings and the test accuracy.

The full recipe is longer than this project's 2-core CPU can run in a session
(the ViT-tiny trains at about 65-75 images/s there; a few minutes on a GPU:
``benchmarks/gpu.py`` runs it uncapped). ``--max-steps`` caps the length, the
way the tests cap it; a cosine schedule then decays over the capped length.

    python benchmarks/vit_supervised.py --max-steps 6000 --device cpu [--out benchmarks/results/vit_supervised.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from unsup.api import machine, resolve_device
from unsup.data import load
from unsup.evaluate.supervised import VIT_LARGE_SET_RECIPE as RECIPE
from unsup.evaluate.supervised import supervised_reference
from unsup.run import atomic_write

FLOOR = 0.88  # issue 17: a ViT that cannot reach this supervised cannot be judged unsupervised


def markdown(res: dict) -> str:
    lines = [f"# ViT-tiny supervised on Fashion-MNIST, all labels ({res['date']})", "",
             f"Machine: {res['machine']}; torch {res['torch']}. Command: `{res['command']}`.", "",
             "The library's supervised reference with `backbone: vit-tiny` (patch 4, class token), seed 0: "
             f"{res['recipe']}; {res['schedule_steps']} steps of {res['batch_size']} images "
             f"({'capped by --max-steps; ' if res['max_steps'] else ''}the uncapped recipe runs up to {RECIPE.max_steps}).", "",
             "| step | images seen | hold-out accuracy | hold-out loss | learning rate |", "|---|---|---|---|---|"]
    for h in res["history"]:
        lines.append(f"| {h['step']} | {h['step'] * res['batch_size']:,} | {h['holdout_accuracy']:.4f} | "
                     f"{h['holdout_loss']:.4f} | {h['lr']:g} |")
    met = "met" if res["test_accuracy"] >= FLOOR else "not met"
    lines += ["", f"Test accuracy of the network chosen on the hold-out (step {res['steps']}): **{res['test_accuracy']:.4f}** "
              f"(floor {FLOOR}: {met}). Wall-clock {res['wall_seconds'] / 60:.1f} min, "
              f"{res['images_per_s']:.0f} training images/s including the hold-out readings.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-steps", type=int, default=None, help=f"cap the length (default: the recipe's, up to {RECIPE.max_steps} steps)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="benchmarks/results/vit_supervised.json")
    args = ap.parse_args()
    device = resolve_device(args.device)
    train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    t = time.perf_counter()
    row = supervised_reference(train, test, "all", 0, "vit-tiny", str(device), quiet=False, max_steps=args.max_steps)
    wall = time.perf_counter() - t
    last = row["history"][-1]["step"] if row.get("history") else row["steps"]
    res = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "command": " ".join(["python", *sys.argv]), "max_steps": args.max_steps,
           "recipe": f"{RECIPE.schedule} schedule, AdamW at {RECIPE.lr:g}, weight decay {RECIPE.weight_decay:g}, "
                     f"warm-up {RECIPE.warmup_steps} steps", "schedule_steps": row.get("schedule_steps", row["steps"]),
           "batch_size": row["batch_size"], "steps": row["steps"], "test_accuracy": round(row["accuracy"], 4),
           "history": row.get("history", []), "wall_seconds": round(wall, 1),
           "images_per_s": round(last * row["batch_size"] / wall, 1)}
    out = Path(args.out)
    atomic_write(out, json.dumps(res, indent=2))
    atomic_write(out.with_suffix(".md"), markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
