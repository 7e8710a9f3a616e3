"""Issue 2's floors on Fashion-MNIST: raw pixels, kmeans, denoising
autoencoder, SimCLR with a 10-minute budget, and SimCLR training throughput.

    .venv/bin/python benchmarks/foundation.py [--quick] [--skip simclr,...]

Writes benchmarks/results/foundation.md and foundation.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

import unsup
import unsup.run
from unsup.data import AugmentConfig, augment, load
from unsup.evaluate import raw_pixel_rows
from unsup.methods.joint.simclr import SimCLR, SimCLRConfig

OUT = Path(__file__).parent / "results"
RUNS = Path("bench-out/foundation")


def row(rows, n, clf="linear"):
    r = next(r for r in rows if r["labels_per_class"] == n and r["classifier"] == clf)
    return r["accuracy_mean"], r["accuracy_std"]


def fmt(rows, n, clf="linear"):
    m, s = row(rows, n, clf)
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def throughput(backbone: str, shape, batch: int, steps: int) -> float:
    """SimCLR training images per second (each image gives two views)."""
    m = SimCLR(SimCLRConfig(backbone=backbone, batch_size=batch), shape).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randint(0, 255, (batch, *shape), dtype=torch.uint8)
    for i in range(steps + 1):
        if i == 1:
            t = time.perf_counter()
        loss, _ = m.training_loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--simclr-budget", default="10m")
    ap.add_argument("--dae-budget", default="60k")
    ap.add_argument("--skip", default="")
    ap.add_argument("--reuse", action="store_true", help="probe finished runs in bench-out/foundation instead of retraining")
    ap.add_argument("--tag", default="foundation", help="name of the results files")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    budgets = (1, 10, 100, "all")
    report: dict = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                    "torch": torch.__version__}
    report["raw_pixels"] = raw_pixel_rows(train, test, budgets, 3)
    for name, budget in [("kmeans", "60k"), ("denoising-autoencoder", args.dae_budget), ("simclr", args.simclr_budget)]:
        if name in skip:
            continue
        t0 = time.perf_counter()
        if args.reuse and (RUNS / name / "encoder.safetensors").is_file():
            run = RUNS / name
            seconds = next((m["pretrain_seconds"] for m in unsup.run.RunDir(run).metrics() if "pretrain_seconds" in m), None)
        else:
            run = unsup.pretrain(name, budget=budget, out=RUNS / name, overwrite=True, quiet=True)
            seconds = None
        t1 = time.perf_counter()
        result = unsup.probe_run(run, budgets, seeds=3, supervised=False)
        result["pretrain_seconds"], result["probe_seconds"] = seconds or (t1 - t0), time.perf_counter() - t1
        report[name] = result
        print(name, {n: fmt(result["results"], n) for n in budgets}, flush=True)
    if "throughput" not in skip:
        report["throughput"] = {
            "small-convnet 28x28 (img/s, 2 views)": throughput("small-convnet", (1, 28, 28), 256, 10),
            "resnet18 32x32 (img/s, 2 views)": throughput("resnet18", (3, 32, 32), 64, 3),
        }
        x = torch.randint(0, 255, (4096, 1, 28, 28), dtype=torch.uint8)
        t = time.perf_counter()
        augment(x, AugmentConfig())
        report["throughput"]["augmentation 28x28 (img/s)"] = 4096 / (time.perf_counter() - t)
    OUT.mkdir(exist_ok=True)
    (OUT / f"{args.tag}.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [f"# Foundation benchmark ({report['date']}, {report['machine']}, torch {report['torch']})", "",
             f"Command: `.venv/bin/python {' '.join(sys.argv)}`", "",
             "Linear probe accuracy (%), mean ± std over 3 seeds (1 for all):", "",
             "| encoder | budget | 1 | 10 | 100 | all | k-NN 100 |", "|---|---|---|---|---|---|---|"]
    lines.append("| raw pixels | - | " + " | ".join(fmt(report["raw_pixels"], n) for n in budgets) + f" | {fmt(report['raw_pixels'], 100, 'knn')} |")
    for name in ("kmeans", "denoising-autoencoder", "simclr"):
        if name in report:
            r = report[name]
            lines.append(f"| {name} | {r['budget']} ({r['pretrain_seconds']:.0f}s) | " + " | ".join(fmt(r["results"], n) for n in budgets)
                         + f" | {fmt(r['results'], 100, 'knn')} |")
            rnd = r["references"]["random_encoder"]
            lines.append(f"| random {name} | - | " + " | ".join(fmt(rnd, n) for n in budgets) + f" | {fmt(rnd, 100, 'knn')} |")
    if "throughput" in report:
        lines += ["", "Throughput:", ""] + [f"- {k}: {v:.0f}" for k, v in report["throughput"].items()]
    (OUT / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
