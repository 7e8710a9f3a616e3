"""Is the linear probe's all-label fit converged? The raw-pixel reference on
the video stills (Fashion-MNIST objects at random places on a 64x64 canvas)
reads about 30% with all labels against 66% for k-NN; this fits the same
probe (standardised features, the L2 strength the protocol chooses) with 100
L-BFGS iterations, the protocol's, then warm-started on to more, and prints
the objective, the training accuracy and the test accuracy at each count.

    .venv/bin/python benchmarks/linear_convergence.py [--data moving-fashion-mnist] [--iters 100 300 1000] [--l2 L] [--threads 1]

``--data fashion-mnist`` runs the same check on the 28x28 images; ``--l2``
replaces the protocol's choice (a weaker penalty: does the fit get better?). Prints a
Markdown table; about 5 minutes on one core of the 2-core CPU for the stills.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from unsup.data import load, video
from unsup.evaluate.features import raw_pixels
from unsup.evaluate.linear import choose_l2, fit_logistic
from unsup.evaluate.protocol import standardise


def datasets(name: str):
    if name == "fashion-mnist":
        return load(name, "train"), load(name, "test")
    return video.still_source(name, "train", video.SIZE, 1), video.still_source(name, "test", video.SIZE, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="moving-fashion-mnist")
    ap.add_argument("--iters", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--l2", type=float, default=None, help="the L2 strength (default: chosen as the protocol does)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, test = datasets(args.data)
    x, xt = raw_pixels(train.images), raw_pixels(test.images)
    x, xt = standardise(x, xt)
    y, yt, k = train.labels, test.labels, train.num_classes
    l2 = choose_l2(x, y, k) if args.l2 is None else args.l2
    how = "chosen as the protocol does" if args.l2 is None else "given"
    print(f"{train.name}: {len(x)} x {x.shape[1]} raw pixels, L2 {l2:.3g} ({how})\n")
    print("| L-BFGS iterations | objective | training accuracy | test accuracy | seconds |")
    print("|---:|---:|---:|---:|---:|")
    w = b = None
    done = 0
    for total in sorted(args.iters):
        t0 = time.perf_counter()
        w, b = fit_logistic(x, y, k, l2, max_iter=total - done, init=None if w is None else (w, b))
        done = total
        logits = x @ w + b
        objective = float(F.cross_entropy(logits, y) + l2 * (w * w).sum())
        train_acc = float((logits.argmax(1) == y).float().mean())
        test_acc = float(((xt @ w + b).argmax(1) == yt).float().mean())
        print(f"| {total} | {objective:.4f} | {100 * train_acc:.1f} | {100 * test_acc:.1f} | {time.perf_counter() - t0:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
