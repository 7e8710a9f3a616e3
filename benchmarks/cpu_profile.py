"""Where the default bench's time goes on this CPU, stage by stage, and what of it is not compute.

    .venv/bin/python benchmarks/cpu_profile.py [--seconds 30] [--methods kmeans,simclr]

Runs ``unsup bench`` on the default methods (one process, the machine's threads,
a short pretraining budget, the shipped references) under cProfile, one method at
a time, and writes benchmarks/results/cpu_profile.md: the seconds of each stage
(pretraining steps, the k-NN monitor, checkpoints, features, linear probes, k-NN
probes, references, family metrics, figures, the report) and the functions with
the most own time, where host copies, Python loops and waits show up beside the
kernels (convolutions, matrix products) that are the work itself.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

from unsup.api import DEFAULT_BENCH, bench, machine

# (stage, the function's file (suffix; empty: any of unsup's), the function's name)
STAGES = [
    ("pretraining (whole, with the figures)", "unsup/api.py", "pretrain"),
    ("  k-NN monitor", "unsup/train/monitor.py", "__call__"),
    ("  checkpoints (serialise, write)", "unsup/train/loop.py", "checkpoint"),
    ("  training step (method)", "", "training_step"),
    ("  augmentation", "unsup/data/augment.py", "augment"),
    ("  figures (t-SNE, filters, samples)", "", "figures"),
    ("probe (whole)", "unsup/api.py", "probe_run"),
    ("  features", "unsup/evaluate/features.py", "extract_features"),
    ("  linear probes", "unsup/evaluate/linear.py", "linear_probe_accuracy"),
    ("  k-NN probes", "unsup/evaluate/knn.py", "knn_accuracy"),
    ("  raw-pixel reference", "unsup/evaluate/protocol.py", "raw_pixel_rows"),
    ("  random-encoder reference", "unsup/evaluate/protocol.py", "random_encoder_rows"),
    ("  supervised reference", "unsup/evaluate/protocol.py", "supervised_rows"),
    ("  family metrics", "", "family_metrics"),
    ("report", "unsup/report/leaderboard.py", "write_report"),
]


def stage_seconds(stats: pstats.Stats) -> dict[str, float]:
    out = {}
    for stage, file_suffix, name in STAGES:
        # a method's override and the base version it calls share a name: the outermost (largest) one counts
        out[stage] = max((cum for (file, _, func), (_, _, _, cum, _) in stats.stats.items()
                          if func == name and "unsup" in file and file.replace("\\", "/").endswith(file_suffix)), default=0.0)
    return out


def top_own_time(stats: pstats.Stats, n: int) -> list[tuple[str, float, int]]:
    rows = []
    for (file, line, func), (_, calls, own, _, _) in stats.stats.items():
        where = func if file == "~" else f"{Path(file).name}:{line} {func}"
        rows.append((where, own, calls))
    return sorted(rows, key=lambda r: -r[1])[:n]


def resnet_folding(images: int = 1024, rounds: int = 3) -> tuple[float, float]:
    """ResNet-18 feature extraction on Fashion-MNIST test images, images/s with its batch norms
    folded (``extract_features``) and without (the best of ``rounds`` passes each, alternated)."""
    from unsup.data import load
    from unsup.evaluate import features
    from unsup.nets import build_encoder

    enc = build_encoder("resnet18", 1, 28).eval()
    x = load("fashion-mnist", "test").images[:images]
    fold = features.fold_batchnorm
    best = {"folded": 0.0, "unfolded": 0.0}
    for _ in range(rounds):
        for name, folder in (("folded", fold), ("unfolded", lambda m: m.eval())):
            features.fold_batchnorm = folder
            try:
                t0 = time.perf_counter()
                features.extract_features(enc, x)
                best[name] = max(best[name], images / (time.perf_counter() - t0))
            finally:
                features.fold_batchnorm = fold
    return best["folded"], best["unfolded"]


def kmeans_feature_speed(images: int = 2000, rounds: int = 3) -> float:
    """k-means feature extraction (512 random centroids, the default encoder) on Fashion-MNIST test
    images: images/s, the best of ``rounds`` passes."""
    from unsup.data import load
    from unsup.evaluate.features import extract_features
    from unsup.methods.clustering.kmeans import KMeans, KMeansConfig

    torch.manual_seed(0)
    m = KMeans(KMeansConfig(), (1, 28, 28))
    m.encoder.centroids.copy_(torch.randn_like(m.encoder.centroids) * 3)
    x = load("fashion-mnist", "test").images[:images]
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        extract_features(m.encoder, x)
        best = max(best, images / (time.perf_counter() - t0))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=30, help="pretraining budget per method")
    p.add_argument("--methods", default=",".join(DEFAULT_BENCH))
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_profile.md"))
    p.add_argument("--kmeans-speed", action="store_true", help="only print k-means' feature extraction speed (images/s)")
    args = p.parse_args()
    if args.kmeans_speed:
        print(f"k-means features: {kmeans_feature_speed():.0f} images/s ({torch.get_num_threads()} threads)")
        return
    methods = args.methods.split(",")
    lines = ["# Where the default bench's time goes on this CPU", "",
             f"`.venv/bin/python benchmarks/cpu_profile.py --seconds {args.seconds} --methods {args.methods}` on "
             f"{machine()}, torch {torch.__version__}, Python "
             f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}. Each method is one `unsup bench` of "
             f"{args.seconds} s of pretraining, under cProfile (the shipped references; seconds include the "
             "profiler's overhead, which is small next to the kernels).", ""]
    table = {}
    tops = {}
    for m in methods:
        with tempfile.TemporaryDirectory() as tmp:
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            bench(methods=[m], budget=f"{args.seconds}s", out=Path(tmp) / "bench", quiet=True)
            prof.disable()
            wall = time.perf_counter() - t0
        stats = pstats.Stats(prof, stream=io.StringIO())
        table[m] = {"wall": wall, **stage_seconds(stats)}
        tops[m] = top_own_time(stats, args.top)
        print(f"{m}: {wall:.1f} s", file=sys.stderr, flush=True)
    lines += ["| stage | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    lines.append("| **bench, wall-clock** | " + " | ".join(f"**{table[m]['wall']:.1f}**" for m in methods) + " |")
    for stage, _, _ in STAGES:
        lines.append(f"| {stage.replace('  ', '&nbsp;&nbsp;')} | " + " | ".join(f"{table[m][stage]:.1f}" for m in methods) + " |")
    lines += ["", "Seconds. Indented stages are parts of the stage above them.", ""]
    for m in methods:
        lines += [f"## {m}: the {args.top} functions with the most own time", "", "| function | own s | calls |", "|---|---:|---:|"]
        lines += [f"| `{where}` | {own:.2f} | {calls} |" for where, own, calls in tops[m]]
        lines.append("")
    folded, unfolded = resnet_folding()
    lines += ["## Batch norms folded into the convolutions of a ResNet-18 (traced by torch.fx)", "",
              f"Feature extraction, 1,024 Fashion-MNIST images at 28x28, best of 3: **{folded:.0f} images/s folded, "
              f"{unfolded:.0f} unfolded ({folded / unfolded:.2f}x)**.", ""]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
