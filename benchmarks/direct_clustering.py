"""Direct-mapping and clustering methods on Fashion-MNIST (issue 3 floors).

    .venv/bin/python benchmarks/direct_clustering.py [--methods a,b] [--out bench-out/direct_clustering]

Each method is pretrained with a fixed images-seen budget and probed with the
common protocol (linear probe and k-NN at 10 and 100 labels per class, 3
seeds, no supervised reference) against its random-encoder reference; the
layered methods are also probed per depth (stacked-autoencoder 1..3 layers,
conv-clustering 1..2 layers, next to one-layer kmeans). sparse-coding is also
trained on natural images and on the phase-randomised control, and its atoms
are scored by the share that a 2-D Gabor fits with R^2 >= 0.8. Results of
each method are cached as JSON in --out, so the script can be run in parts;
the table is written to benchmarks/results/direct_clustering.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import time
from pathlib import Path

import torch
from results_page import write_results

import unsup
from unsup.data import load
from unsup.evaluate import probe
from unsup.evaluate.gabor import gabor_fit_share
from unsup.run import load_method

PLAN = {  # method: (data, budget, options)
    "sparse-coding": ("fashion-mnist", "60k", {}),
    "autoencoder": ("fashion-mnist", "60k", {}),
    "sparse-autoencoder": ("fashion-mnist", "180k", {}),
    "stacked-autoencoder": ("fashion-mnist", "900k", {}),
    "kmeans": ("fashion-mnist", "60k", {}),
    "conv-clustering": ("fashion-mnist", "60k", {}),
    "deepcluster": ("fashion-mnist", "180k", {"epoch_size": 10_000}),
}
DEPTHS = {"stacked-autoencoder": (1, 2), "conv-clustering": (1,)}  # truncations probed besides the full stack
GABOR = {"natural-images": "sparse-coding on natural images", "natural-noise": "control: phase-randomised natural images"}
RESULTS = Path(__file__).parent / "results"


def lin_knn(rows) -> dict:
    return {f"{r['classifier']}@{r['labels_per_class']}": (r["accuracy_mean"], r["accuracy_std"]) for r in rows}


def run_method(name: str, out: Path, device: str, reuse: bool = False) -> dict:
    """Pretrain and probe ``name``; with ``reuse``, a finished run (its encoder
    and probe.json) in ``out`` is read back instead of being run again."""
    data, budget, opts = PLAN[name]
    device = str(unsup.api.resolve_device(device))
    run = out / "runs" / name
    t0 = time.perf_counter()
    reused = reuse and (run / "encoder.safetensors").is_file()
    if not reused:
        unsup.pretrain(name, data=data, budget=budget, out=run, options=opts, quiet=True, overwrite=True, device=device)
    t1 = time.perf_counter()
    if reuse and (run / "probe.json").is_file():
        res = json.loads((run / "probe.json").read_text())
    else:
        res = unsup.probe_run(run, budgets=(10, 100), seeds=3, supervised=False, device=device)
    row = {"method": name, "budget": budget, "options": opts, "pretrain_s": round(t1 - t0, 1),
           "probe_s": round(time.perf_counter() - t1, 1), "result": lin_knn(res["results"]),
           "random": lin_knn(res["references"]["random_encoder"]), "raw": lin_knn(res["references"]["raw_pixels"]),
           "depths": {}, "reused": reused}  # a reused run's seconds are not its training time
    if name in DEPTHS:
        m = load_method(run)
        train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
        for d in DEPTHS[name]:
            row["depths"][d] = lin_knn(probe(m.encoder.truncated(d), train, test, (10, 100), 3, device))
    return row


def run_gabor(data: str, out: Path, device: str) -> dict:
    run = unsup.pretrain("sparse-coding", data=data, budget="1k", out=out / "runs" / f"sparse-coding-{data}", quiet=True,
                         overwrite=True, device=device)
    m = load_method(run)
    share, r2 = gabor_fit_share(m.atom_images()[:, 0])
    fig = RESULTS / f"sparse_coding_atoms_{data}.png"
    m.figures(None, out / "runs")
    shutil.copy(out / "runs" / "atoms.png", fig)
    return {"data": data, "share": share, "median_r2": float(torch.tensor(r2).median()), "figure": fig.name}


def fmt(acc) -> str:
    return f"{100 * acc[0]:.1f} ± {100 * acc[1]:.1f}" if acc else "-"


def write_table(rows: dict, gabor: dict, command: str) -> str:
    lines = [
        "# Direct mapping and clustering on Fashion-MNIST", "",
        f"Command: `{command}`", "",
        f"Date {datetime.date.today()}; machine: {platform.machine()} 2-core CPU, shared with other jobs (times are "
        "not comparable); probe: linear probe and k-NN, 10 and 100 labels per class, 3 seeds, test split of 10,000.", "",
        "| method | budget | linear 10 | linear 100 | k-NN 10 | k-NN 100 | random enc. linear 10 | random enc. linear 100 | beats random (linear 10 & 100) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        res, rnd = r["result"], r["random"]
        beats = res["linear@10"][0] > rnd["linear@10"][0] and res["linear@100"][0] > rnd["linear@100"][0]
        opts = f" {r['options']}" if r["options"] else ""
        lines.append(f"| {name} | {r['budget']}{opts} | {fmt(res['linear@10'])} | {fmt(res['linear@100'])} | "
                     f"{fmt(res['knn@10'])} | {fmt(res['knn@100'])} | {fmt(rnd['linear@10'])} | {fmt(rnd['linear@100'])} | "
                     f"{'yes' if beats else '**no**'} |")
    if rows:
        raw = next(iter(rows.values()))["raw"]
        lines.append(f"| raw pixels | - | {fmt(raw['linear@10'])} | {fmt(raw['linear@100'])} | {fmt(raw['knn@10'])} | "
                     f"{fmt(raw['knn@100'])} | | | |")
    lines += ["", "## Accuracy per depth (linear probe)", "", "| method | layers | linear 10 | linear 100 |", "|---|---|---|---|"]
    for name, r in rows.items():
        full = len(r["depths"]) + 1
        for d, acc in sorted(((int(k), v) for k, v in r["depths"].items())):
            lines.append(f"| {name} | {d} | {fmt(acc['linear@10'])} | {fmt(acc['linear@100'])} |")
        if r["depths"]:
            lines.append(f"| {name} | {full} | {fmt(r['result']['linear@10'])} | {fmt(r['result']['linear@100'])} |")
    if "kmeans" in rows:
        lines.append(f"| kmeans (reference, 1 layer) | 1 | {fmt(rows['kmeans']['result']['linear@10'])} | "
                     f"{fmt(rows['kmeans']['result']['linear@100'])} |")
    lines += ["", "## Sparse coding atoms: share fitted by a 2-D Gabor with R^2 >= 0.8", "",
              "| training data | Gabor share | median R^2 | atoms |", "|---|---|---|---|"]
    for data, g in gabor.items():
        lines.append(f"| {GABOR[data]} | {100 * g['share']:.0f}% | {g['median_r2']:.2f} | ![]({g['figure']}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default=",".join([*PLAN, *GABOR]))
    ap.add_argument("--out", default="bench-out/direct_clustering")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--reuse", action="store_true", help="read back finished runs in --out instead of rerunning them")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.methods.split(","):
        t0 = time.perf_counter()
        row = run_gabor(name, out, args.device) if name in GABOR else run_method(name, out, args.device, args.reuse)
        (out / f"{name}.json").write_text(json.dumps(row, indent=1))
        print(f"{name}: {json.dumps(row)[:400]} ({time.perf_counter() - t0:.0f}s)", flush=True)
    rows = {n: json.loads((out / f"{n}.json").read_text()) for n in PLAN if (out / f"{n}.json").exists()}
    gabor = {n: json.loads((out / f"{n}.json").read_text()) for n in GABOR if (out / f"{n}.json").exists()}
    text = write_table(rows, gabor, "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/direct_clustering.py")
    write_results(RESULTS / "direct_clustering.md", text)
    print(text)


if __name__ == "__main__":
    main()
