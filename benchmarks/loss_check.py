"""Check unsup's losses against lightly's on the same tensors: values and gradients.

lightly is never imported here or by the library: its side runs in a separate
Python environment (``--lightly-python``), reading the inputs from a ``.pt``
file this script writes and writing its values and gradients back. Each case
feeds both implementations the same random embeddings, in float32 (the
issue's tolerance, 1e-5 relative) and in float64 (where identical formulas
agree to rounding), and the table records the largest differences.

    python3 -m venv /tmp/lightly-venv
    /tmp/lightly-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 lightly
    .venv/bin/python benchmarks/loss_check.py --lightly-python /tmp/lightly-venv/bin/python
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from unsup import losses  # noqa: E402

BATCH, DIM, QUEUE = 64, 128, 1024

# name -> (unsup's loss of (a, b, queue), the lightly expression run on the other side, note for the table)
CASES = {
    "NT-Xent (SimCLR), t=0.5": (
        lambda a, b, q: losses.nt_xent(a, b, 0.5),
        "NTXentLoss(temperature=0.5)(a, b)",
        "same formula: mean over the 2N views, the other 2N-1 views as candidates"),
    "InfoNCE with a queue (MoCo v2), t=0.2": (
        lambda a, b, q: losses.info_nce(a, b, 0.2, queue=q),
        "moco_loss(a, b, q)",
        "lightly's NTXentLoss with a memory bank whose contents are set to the same queue; "
        "queue updates differ (lightly drops the keys that overflow the end of the bank, unsup wraps them to the start)"),
    "negative cosine (SimSiam; BYOL = 2 + 2x)": (
        lambda a, b, q: losses.negative_cosine(a, b),
        "NegativeCosineSimilarity()(a, b)",
        "same formula; BYOL's loss here is the paper's 2 - 2 cos per direction (lightly's BYOL example averages "
        "the two negative cosines instead: the same minimiser, gradients 4x smaller)"),
    "Barlow Twins, lambda=5e-3": (
        lambda a, b, q: losses.barlow_twins(a, b, 5e-3),
        "BarlowTwinsLoss(lambda_param=5e-3)(a, b)",
        "same formula: batch-norm standardisation (biased variance, eps 1e-5)"),
    "VICReg, 25/25/1, eps=1e-4": (
        lambda a, b, q: losses.vicreg(a, b),
        "VICRegLoss()(a, b)",
        "same formula"),
}

LIGHTLY_SIDE = r'''
import sys
import torch
from lightly.loss import BarlowTwinsLoss, NegativeCosineSimilarity, NTXentLoss, VICRegLoss

def moco_loss(a, b, q):
    fn = NTXentLoss(temperature=0.2, memory_bank_size=tuple(q.shape))
    fn.memory_bank.bank = q.clone()
    return fn(a, b)

data = torch.load(sys.argv[1])
out = {}
for key, (expr, a, b, q) in data.items():
    a, b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    value = eval(expr)
    value.backward()
    out[key] = (value.detach(), a.grad, b.grad)
torch.save(out, sys.argv[2])
'''


def inputs(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(BATCH, DIM, generator=g, dtype=torch.float64)
    b = a + 0.5 * torch.randn(BATCH, DIM, generator=g, dtype=torch.float64)  # correlated views, as in training
    q = F.normalize(torch.randn(QUEUE, DIM, generator=g, dtype=torch.float64), dim=1)
    return a.to(dtype), b.to(dtype), q.to(dtype)


def unsup_side(fn, a, b, q):
    a, b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    value = fn(a, b, q)
    value.backward()
    return value.detach(), a.grad, b.grad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lightly-python", required=True, help="python of an environment with lightly installed")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loss_check.md"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        feed, back, script = Path(tmp) / "in.pt", Path(tmp) / "out.pt", Path(tmp) / "lightly_side.py"
        data = {}
        for dtype in (torch.float32, torch.float64):
            for name, (_, expr, _) in CASES.items():
                data[(name, str(dtype))] = (expr, *inputs(dtype))
        torch.save(data, feed)
        script.write_text(LIGHTLY_SIDE)
        done = subprocess.run([args.lightly_python, str(script), str(feed), str(back)], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"the lightly side failed:\n{done.stderr[-3000:]}")
        version = subprocess.run([args.lightly_python, "-c", "import lightly, torch; print(lightly.__version__, torch.__version__)"],
                                 capture_output=True, text=True).stdout.split()
        theirs = torch.load(back)
    python = Path(sys.executable)
    python = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python.name
    rows = []
    worst_rel32 = 0.0
    for name, (fn, _, note) in CASES.items():
        cells = []
        for dtype in (torch.float32, torch.float64):
            key = (name, str(dtype))
            _, a, b, q = data[key]
            mine = unsup_side(fn, a, b, q)
            other = theirs[key]
            dv = float((mine[0] - other[0]).abs())
            rel_v = dv / max(float(other[0].abs()), 1e-30)
            dg = max(float((m - o).abs().max()) for m, o in zip(mine[1:], other[1:]))
            scale = max(float(o.abs().max()) for o in other[1:])
            rel_g = dg / max(scale, 1e-30)
            if dtype == torch.float32:
                worst_rel32 = max(worst_rel32, rel_v, rel_g)
                cells += [f"{float(mine[0]):.6f}", f"{float(other[0]):.6f}"]
            cells += [f"{dv:.1e} ({rel_v:.1e})", f"{dg:.1e} ({rel_g:.1e})"]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {note} |")
    lines = [
        "# Losses: unsup against lightly",
        "",
        f"`{python} benchmarks/loss_check.py --lightly-python {args.lightly_python}` "
        f"(lightly {version[0] if version else '?'}, torch {version[1] if len(version) > 1 else '?'} on its side; "
        f"torch {torch.__version__} on unsup's). Both sides get the same random embeddings, batch {BATCH}, "
        f"dimension {DIM}, the two views correlated (b = a + 0.5 noise), a queue of {QUEUE} unit vectors; "
        "gradients are with respect to both inputs. Differences are absolute, with the relative one (to lightly's "
        "value, or to the largest gradient entry) in brackets; the issue's tolerance is 1e-5 relative in float32.",
        "",
        "| loss | unsup (f32) | lightly (f32) | value diff f32 | grad diff f32 | value diff f64 | grad diff f64 | note |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Largest relative difference in float32: {worst_rel32:.1e} "
        f"({'within' if worst_rel32 <= 1e-5 else 'over'} the 1e-5 tolerance).",
        "",
        "Not compared: MoCo v3's in-batch InfoNCE (`info_nce` without a queue: queries against the other keys only); "
        "lightly 1.6 has no loss of that form (its NTXentLoss without a memory bank is SimCLR's 2N-view loss).",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
