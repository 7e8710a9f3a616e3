"""k-means on the device vs scikit-learn's MiniBatchKMeans: the same whitened
Fashion-MNIST patches, the same k, batch size and number of passes, both
seeded with k-means++; reports time, inertia and the ratio side by side.

    .venv/bin/python benchmarks/kmeans_speed.py [--device cuda] [--k 256]

Writes benchmarks/results/kmeans_speed.md (and prints the table).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import torch

from unsup.data import load
from unsup.methods.base import config_from_dict
from unsup.methods.clustering.kmeans import KMeans, KMeansConfig
from unsup.methods.clustering.kmeans_core import inertia, kmeans

READING_MARK = "<!-- reading (hand-written, kept when the tables are rewritten) -->"


def write_results(path: Path, tables: str) -> None:
    """Write ``tables`` to ``path``, keeping the hand-written reading below ``READING_MARK`` already there."""
    old = path.read_text() if path.exists() else ""
    reading = old[old.index(READING_MARK):] if READING_MARK in old else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tables.rstrip("\n") + "\n\n" + reading if reading else tables)


def patches(n: int, device) -> torch.Tensor:
    train = load("fashion-mnist", "train")
    m = KMeans(config_from_dict(KMeansConfig, {"num_patches": n}), train.shape)
    rows = m.random_patches(train.images, n, seed=0)
    return m.fit_whitening(rows).to(device).contiguous()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--patches", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "kmeans_speed.md"))
    args = ap.parse_args()
    from sklearn.cluster import MiniBatchKMeans

    dev = torch.device(args.device)
    x = patches(args.patches, dev)
    xs = x.cpu().numpy()
    rows = []
    for rep in range(2):  # the first round warms up both
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        c = kmeans(x, args.k, args.iterations, args.batch, seed=rep, init="k-means++")
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t_dev = time.perf_counter() - t0
        t0 = time.perf_counter()
        sk = MiniBatchKMeans(args.k, batch_size=args.batch, max_iter=args.iterations, n_init=1, random_state=rep,
                             max_no_improvement=None, tol=0.0, compute_labels=False).fit(xs)
        t_sk = time.perf_counter() - t0
        i_dev = inertia(x, c)
        i_sk = inertia(x, torch.from_numpy(sk.cluster_centers_).to(x))
        rows.append((t_dev, t_sk, i_dev, i_sk))
    t_dev, t_sk, i_dev, i_sk = rows[-1]
    ratio = t_sk / t_dev
    rel = (i_dev - i_sk) / i_sk
    cmd = "  .venv/bin/python benchmarks/kmeans_speed.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k != "out")
    text = f"""# k-means on the device vs scikit-learn MiniBatchKMeans

Command:

{cmd}

Date {datetime.date.today()}, machine {platform.machine()} ({torch.get_num_threads()} torch threads,
device {dev}{' ' + torch.cuda.get_device_name() if dev.type == 'cuda' else ''}), scikit-learn and unsup on the same
{args.patches} whitened 6x6 Fashion-MNIST patches (float32), k={args.k}, batch {args.batch}, {args.iterations} passes,
k-means++ seeding for both, no early stopping; inertia of each set of centroids on all patches.

| implementation | seconds | inertia |
|---|---|---|
| unsup kmeans_core ({dev.type}) | {t_dev:.2f} | {i_dev:.5g} |
| sklearn MiniBatchKMeans (cpu) | {t_sk:.2f} | {i_sk:.5g} |

Speed ratio (sklearn / unsup): **{ratio:.1f}x**; inertia difference {100 * rel:+.2f}% (floor: >= 5x, within 1%).
"""
    print(text)
    write_results(Path(args.out), text)


if __name__ == "__main__":
    main()
