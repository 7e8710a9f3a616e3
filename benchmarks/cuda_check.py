"""The CUDA path, checked and timed on a GPU machine: every method pretrains a
few thousand images on the GPU (bf16 autocast, channels_last weights, as the
shared loop does on CUDA) and its encoder extracts finite features; then the
steady-state training throughput of a few methods with and without
``torch.compile``, peak GPU memory, and a probe on the GPU.

    python benchmarks/cuda_check.py [--out cuda_check.md] [--smoke-budget 4k] [--speed-budget 60k]

Writes a Markdown table (and prints it). Needs a CUDA GPU; ``--device cpu``
runs the same script on the CPU, only to test the script itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import time
import traceback
from pathlib import Path

import torch

from unsup.api import pretrain, probe_run
from unsup.registry import all_methods
from unsup.run import RunDir, load_method


def one_line(e: Exception) -> str:
    """An exception as one table cell: its type and the last non-empty line of its message (no newlines, no pipes)."""
    msg = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {(msg[-1] if msg else '')[:160]}".replace("|", "/")


def steady_rate(run: Path) -> float:
    """Images per second between the second and the last logged step (skips warm-up and compilation)."""
    rows = [r for r in RunDir(run).metrics() if "images_seen" in r and "seconds" in r and "step" in r]
    if len(rows) < 3:
        return float("nan")
    a, b = rows[1], rows[-1]
    return (b["images_seen"] - a["images_seen"]) / max(b["seconds"] - a["seconds"], 1e-9)


def last_loss(run: Path) -> float:
    losses = [r["loss"] for r in RunDir(run).metrics() if isinstance(r.get("loss"), float)]
    return losses[-1] if losses else float("nan")


def smoke(name: str, budget: str, device: str, root: Path) -> dict:
    """Pretrain one method briefly on ``device``; check its encoder's features there."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run = pretrain(name, budget=budget, out=root / name, device=device, quiet=True, monitor=False, figures=False,
                   overwrite=True)
    seconds = time.perf_counter() - t0
    method = load_method(run).to(device)
    enc = method.encoder.eval()
    _, test = method.probe_datasets("fashion-mnist")  # video methods probe their own stills
    x = test.images[:512].to(device).float().div(255)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        feats = enc(x)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    return {"method": name, "seconds": seconds, "loss": last_loss(run), "dim": feats.shape[1],
            "finite": bool(torch.isfinite(feats.float()).all()), "dtype": str(feats.dtype).replace("torch.", ""),
            "peak_mib": peak}


def speed(name: str, options: dict, budget: str, device: str, root: Path, compile: bool) -> dict:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tag = f"{name}-{'-'.join(f'{k}{v}' for k, v in options.items())}-{'compiled' if compile else 'eager'}"
    run = pretrain(name, budget=budget, out=root / tag, device=device, quiet=True, monitor=False, figures=False,
                   overwrite=True, compile=compile, options=options)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    return {"run": run, "method": name, "options": options, "compile": compile, "rate": steady_rate(run),
            "loss": last_loss(run), "peak_mib": peak}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="cuda_check.md")
    ap.add_argument("--root", default="/tmp/cuda-check-runs")
    ap.add_argument("--smoke-budget", default="4k")
    ap.add_argument("--speed-budget", default="60k")
    ap.add_argument("--methods", default="", help="comma-separated subset for the smoke test (default: all)")
    ap.add_argument("--no-smoke", action="store_true", help="skip the every-method smoke table (throughput and probe only)")
    args = ap.parse_args()
    dev, root = args.device, Path(args.root)
    lines = [f"# CUDA path check ({datetime.date.today()})", ""]
    if dev == "cuda":
        p = torch.cuda.get_device_properties(0)
        lines += [f"Device: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
                  f"bf16 supported: {torch.cuda.is_bf16_supported()}", ""]
    names = [] if args.no_smoke else [m.name for m in all_methods()]
    if args.methods:
        names = [n for n in names if n in args.methods.split(",")]

    lines += [f"## Every method: {args.smoke_budget} images on {dev}, then features of 512 test images", "",
              "| method | seconds | last loss | feature dim | features finite | feature dtype | peak MiB |",
              "|---|---|---|---|---|---|---|"]
    failures = []
    for name in names:
        try:
            r = smoke(name, args.smoke_budget, dev, root / "smoke")
            loss = "— (logs none)" if math.isnan(r["loss"]) else f"{r['loss']:.4g}"  # k-means fits have no loss
            lines.append(f"| {name} | {r['seconds']:.1f} | {loss} | {r['dim']} | {r['finite']} | {r['dtype']} "
                         f"| {r['peak_mib']:.0f} |")
            if not r["finite"] or (isinstance(r["loss"], float) and not math.isnan(r["loss"]) and not math.isfinite(r["loss"])):
                failures.append(name)
        except Exception as e:  # report every method, not only the first failure
            traceback.print_exc()
            lines.append(f"| {name} | FAILED: {one_line(e)} | | | | | |")
            failures.append(name)
        print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")  # a run stopped later keeps the smoke table

    lines += ["", f"## Steady-state training throughput ({args.speed_budget} images; images/s after the first log step)", "",
              "| method | options | torch.compile | images/s | last loss | peak MiB |", "|---|---|---|---|---|---|"]
    speed_runs = []
    for name, options in [("simclr", {}), ("simclr", {"backbone": "resnet18"}), ("dcgan", {}),
                          ("denoising-autoencoder", {})]:
        for comp in (False, True):
            try:
                r = speed(name, options, args.speed_budget, dev, root / "speed", comp)
                speed_runs.append(r)
                lines.append(f"| {name} | {options or '-'} | {comp} | {r['rate']:.0f} | {r['loss']:.4g} | {r['peak_mib']:.0f} |")
            except Exception as e:
                traceback.print_exc()
                lines.append(f"| {name} | {options or '-'} | {comp} | FAILED: {one_line(e)} | | |")
                failures.append(f"{name} {options or ''} compile={comp}".replace("  ", " "))
            print(lines[-1], flush=True)
            Path(args.out).write_text("\n".join(lines) + "\n")

    if speed_runs:
        t0 = time.perf_counter()
        res = probe_run(speed_runs[0]["run"], budgets=(10, 100, "all"), seeds=1, device=dev, supervised=False)
        acc = json.dumps({"method": res["results"], **res["references"]})
        lines += ["", f"## Probe on {dev} (simclr small-convnet run above, 1 seed, with raw-pixel and random references): "
                  f"{time.perf_counter() - t0:.1f} s", "", "```", acc[:3000], "```"]
    lines += ["", f"Failures: {', '.join(failures) or 'none'}"]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
