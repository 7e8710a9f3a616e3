"""How far above the random encoder a pretext run is at 10 labels per class,
read with more label draws than the protocol's 3 (a noise check, not the floor).

Same test-probe sets and random encoder as benchmarks/pretext.py. Each label
draw is the same for every encoder, so the per-draw difference to the random
encoder is paired: its mean, its standard error and how many draws the run wins
say whether a margin is more than the choice of the 100 labelled images.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/pretext_draws.py jigsaw-s72 jigsaw-s72-120k
    .venv/bin/python benchmarks/pretext_draws.py --report

Writes bench-out/pretext/draws/<label>.json; --report prints a markdown table of them.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from pretext import OUT, encoder_of, probe_sets, random_encoder

from unsup.evaluate import probe

CACHE = OUT / "draws"
RANDOM = "random-encoder"


def measure(label: str, train, test, draws: int) -> None:
    """Per-draw linear@10 and k-NN@10 accuracies of one encoder, cached as JSON."""
    encoder = random_encoder() if label == RANDOM else encoder_of(label)
    rows = probe(encoder, train, test, (10,), draws, "cpu")
    (CACHE / f"{label}.json").write_text(json.dumps({f"{r['classifier']}@10": r["accuracies"] for r in rows}))


def report() -> None:
    if not (CACHE / f"{RANDOM}.json").exists():
        raise SystemExit(f"nothing measured in {CACHE}: run `benchmarks/pretext_draws.py LABEL ...` first")
    ref = json.loads((CACHE / f"{RANDOM}.json").read_text())
    print("| run | draws | linear@10 | minus random, per draw (mean ± s.e.) | draws won | k-NN@10 | minus random |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(CACHE.glob("*.json")):
        got = json.loads(path.read_text())
        cells = []
        for key in ("linear@10", "knn@10"):
            n = min(len(got[key]), len(ref[key]))
            diff = [100 * (a - b) for a, b in zip(got[key][:n], ref[key][:n])]
            se = statistics.stdev(diff) / n**0.5 if n > 1 else 0.0
            cells.append((100 * statistics.fmean(got[key][:n]), statistics.fmean(diff), se, sum(d > 0 for d in diff), n))
        (lm, ld, lse, lwon, n), (km, kd, kse, _, _) = cells
        print(f"| {path.stem} | {n} | {lm:.1f} | {ld:+.1f} ± {lse:.1f} | {lwon}/{n} | {km:.1f} | {kd:+.1f} ± {kse:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels", nargs="*", help="finished run labels under bench-out/pretext/runs")
    ap.add_argument("--draws", type=int, default=12, help="label draws per encoder (the protocol uses 3)")
    ap.add_argument("--report", action="store_true", help="print the table from measured runs")
    args = ap.parse_args()
    if args.report:
        report()
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    train, test = probe_sets()
    torch.manual_seed(0)
    if not (CACHE / f"{RANDOM}.json").exists():
        measure(RANDOM, train, test, args.draws)
    for label in args.labels:
        measure(label, train, test, args.draws)
        print(label, "done", flush=True)


if __name__ == "__main__":
    main()
