"""The GPU figures of issue 19 in one call (at most about 8 minutes on one GPU):

1. training throughput (images/s, steady state) of SimCLR and BYOL with
   ResNet-18 at 32x32 (RGB) and at 28x28 (Fashion-MNIST, the figure recorded
   before: 13.2k images/s on an H100), and with the small convnet at 28x28;
   the FLOPs of one training step are counted with
   ``torch.utils.flop_counter`` (forward and backward, per image), so the
   achieved FLOP/s and its share of the GPU's dense bf16 peak follow;
2. the default bench (``unsup bench``, six methods, 30 s each on a GPU) with
   its wall-clock;
3. the time SimCLR with the small convnet needs to reach 85% k-NN accuracy on
   Fashion-MNIST with all labels (the whole test split, every 10 s of training);
4. the supervised reference with the ViT-tiny backbone and all labels (the
   library's recipe, early stopping on its hold-out; the floor is 88% test
   accuracy, and on this project's 2-core CPU the run takes hours).

    python benchmarks/gpu.py [--out benchmarks/results/gpu.json] [--skip-bench] [--skip-vit]
    python benchmarks/gpu.py --device cpu --smoke     # the script itself on a CPU: small convnet only, tiny budgets

Writes JSON and a Markdown page beside it; needs Fashion-MNIST (``unsup data get
fashion-mnist``; on a machine without a registry, carry /usr/share/datasets/fashion-mnist).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unsup.api import bench, machine, resolve_device
from unsup.data import load
from unsup.evaluate.features import extract_features
from unsup.evaluate.knn import knn_accuracy
from unsup.evaluate.protocol import supervised_rows
from unsup.methods.base import config_from_dict
from unsup.registry import get_method
from unsup.run import RunDir, atomic_write
from unsup.train.loop import TrainContext, train_loop

# dense bf16 tensor-core peaks (FLOP/s, no sparsity) from the vendors' data sheets
PEAK_BF16 = {"H200": 989.4e12, "H100 80GB HBM3": 989.4e12, "H100 SXM": 989.4e12, "H100 NVL": 835.0e12, "H100 PCIe": 756.0e12,
             "A100": 312.0e12, "L40S": 362.1e12, "L4": 121.0e12, "A10G": 70.0e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def synthetic_rgb(n: int, size: int, seed: int = 0) -> Path:
    """Smooth random RGB images (upsampled noise), so the encoder sees structure; an .npz in a temp folder."""
    g = np.random.default_rng(seed)
    small = g.integers(0, 256, (n, 3, size // 4, size // 4), dtype=np.uint8)
    x = torch.nn.functional.interpolate(torch.from_numpy(small).float(), size=(size, size), mode="bilinear", align_corners=False)
    path = Path(tempfile.mkdtemp(prefix="unsup-gpu-")) / f"rgb{size}.npz"
    np.savez(path, images=x.round().clamp(0, 255).to(torch.uint8).numpy())
    return path


def step_flops(method, images: torch.Tensor) -> float:
    """FLOPs of one training step (forward and backward) per image, counted on ``images``."""
    from torch.utils.flop_counter import FlopCounterMode

    method.train()
    with FlopCounterMode(display=False) as counter, torch.autocast(images.device.type, dtype=torch.bfloat16,
                                                                   enabled=images.device.type == "cuda"):
        loss, _ = method.training_loss(images)
        loss.backward()
    method.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(images)


def throughput(name: str, data: str, options: dict, images: int, device: torch.device, root: Path) -> dict:
    """Steady-state images/s of the shared loop (between the second and the last log record), and FLOP/s."""
    cls = get_method(name)
    cfg = config_from_dict(cls.Config, options)
    train = load(data, "train") if not data.endswith(".npz") else load(data, "unlabeled")
    torch.manual_seed(0)
    method = cls(cfg, train.shape).to(device)
    flops = step_flops(method, train.images[: cfg.batch_size].to(device))
    run = RunDir(root / f"{name}-{Path(data).stem}-{options.get('backbone', 'small-convnet')}")
    run.path.mkdir(parents=True, exist_ok=True)
    steps = images // cfg.batch_size
    ctx = TrainContext(device=device, run=run, quiet=True, seed=0, log_every=max(1, min(20, steps // 4)), tensorboard=False)
    t0 = time.perf_counter()
    train_loop(method, train.to(device), str(images), ctx)
    wall = time.perf_counter() - t0
    rows = [r for r in run.metrics() if "images_per_s" in r]
    a, b = rows[1] if len(rows) > 2 else rows[0], rows[-1]
    rate = (b["images_seen"] - a["images_seen"]) / max(b["seconds"] - a["seconds"], 1e-9)
    peak = peak_flops(device)
    return {"method": name, "data": Path(data).stem, "shape": list(train.shape), "options": options, "images": images,
            "images_per_s": round(rate, 1), "step_gflop_per_image": round(flops / 1e9, 3),
            "achieved_tflops": round(rate * flops / 1e12, 2), "share_of_peak_bf16": round(rate * flops / peak, 4) if peak else None,
            "wall_seconds": round(wall, 1)}


class AllLabelKnn:
    """A monitor for ``TrainContext``: k-NN accuracy with every training label on the whole test split."""

    def __init__(self, train, test):
        self.train, self.test, self.trace = train, test, []
        self.t0 = time.perf_counter()

    def __call__(self, encoder, step, images_seen, seconds, ctx) -> None:
        was = encoder.training
        encoder.eval()
        tf = extract_features(encoder, self.train.images, ctx.device)
        sf = extract_features(encoder, self.test.images, ctx.device)
        encoder.train(was)
        acc = knn_accuracy(tf, self.train.labels.cpu(), sf, self.test.labels.cpu(), self.train.num_classes)
        self.trace.append({"training_seconds": round(seconds, 2), "wall_seconds": round(time.perf_counter() - self.t0, 2),
                           "images_seen": images_seen, "knn_all_labels": round(acc, 4)})


def time_to_accuracy(name: str, target: float, budget: str, device: torch.device, every: float) -> dict:
    cls = get_method(name)
    train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    torch.manual_seed(0)
    method = cls(config_from_dict(cls.Config, {}), train.shape)
    mon = AllLabelKnn(train.to(device), test.to(device))
    ctx = TrainContext(device=device, quiet=True, seed=0, monitor=mon, monitor_every=every, tensorboard=False)
    train_loop(method, train.to(device), budget, ctx)
    hit = next((r for r in mon.trace if r["knn_all_labels"] >= target), None)
    return {"method": name, "target": target, "budget": budget, "trace": mon.trace,
            "training_seconds_to_target": hit["training_seconds"] if hit else None,
            "wall_seconds_to_target": hit["wall_seconds"] if hit else None}


def vit_supervised(device: torch.device, max_steps: int | None) -> dict:
    """The ViT-tiny supervised reference with all labels, through the protocol's cache (as a bench would read it)."""
    train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    t = time.perf_counter()
    row = supervised_rows(train, test, ("all",), 1, "vit-tiny", str(device), max_steps=max_steps)[0]
    return {"backbone": "vit-tiny", "labels_per_class": "all", "test_accuracy": round(row["accuracy_mean"], 4),
            "steps": row["steps"], "source": row["source"], "wall_seconds": round(time.perf_counter() - t, 1)}


def markdown(res: dict) -> str:
    lines = [f"# GPU figures ({res['date']})", "", f"- Device: {res['machine']}; torch {res['torch']}",
             f"- Command: `{res['command']}`", f"- Script wall-clock: {res['wall_seconds']:.0f} s", "",
             "## Training throughput (steady state, bf16 autocast, channels_last)", "",
             "| method | data | backbone | images/s | GFLOP per image (step) | TFLOP/s | share of bf16 peak |", "|---|---|---|---:|---:|---:|---:|"]
    for r in res["throughput"]:
        share = f"{100 * r['share_of_peak_bf16']:.1f}%" if r.get("share_of_peak_bf16") else "-"
        lines.append(f"| {r['method']} | {r['data']} {'x'.join(map(str, r['shape']))} | {r['options'].get('backbone', 'small-convnet')} | "
                     f"{r['images_per_s']:.0f} | {r['step_gflop_per_image']:.2f} | {r['achieved_tflops']:.1f} | {share} |")
    if res.get("bench"):
        b = res["bench"]
        lines += ["", "## Default bench", "", f"`unsup bench` ({', '.join(b['methods'])}, {b['budget']} each): "
                  f"**{b['wall_seconds']:.0f} s** wall-clock"]
    t = res.get("time_to_accuracy")
    if t:
        got = t["training_seconds_to_target"]
        lines += ["", "## Time to accuracy", "", f"{t['method']} (small convnet) reached {100 * t['target']:.0f}% k-NN accuracy "
                  "(all training labels, whole test split) after " + (f"**{got:.0f} s** of training ({t['wall_seconds_to_target']:.0f} s "
                  "wall-clock with the evaluations)" if got is not None else f"**not reached** within {t['budget']}"), "",
                  "| training s | wall s | images seen | k-NN all labels |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['training_seconds']} | {r['wall_seconds']} | {r['images_seen']} | {r['knn_all_labels']:.4f} |" for r in t["trace"]]
    v = res.get("vit_supervised")
    if v:
        lines += ["", "## ViT-tiny supervised reference", "", f"All labels, the library's recipe: **{100 * v['test_accuracy']:.1f}%** "
                  f"test accuracy after {v['steps'][0]} steps ({v['wall_seconds']:.0f} s)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: tests the script itself (e.g. on a CPU)")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--skip-vit", action="store_true", help="leave out the ViT-tiny supervised reference")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    t0 = time.perf_counter()
    images = 1_000 if args.smoke else 150_000
    rgb = synthetic_rgb(1_000 if args.smoke else 50_000, 32)
    configs = [(str(rgb), {"backbone": "resnet18"}), ("fashion-mnist", {"backbone": "resnet18"}), ("fashion-mnist", {})]
    jobs = [(m, data, opts) for m in ("simclr", "byol") if _registered(m) for data, opts in (configs[2:] if args.smoke else configs)]
    res = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "torch": torch.__version__, "command": " ".join(sys.argv),
           "throughput": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data, opts in jobs:
            if args.smoke:
                opts = {**opts, "batch_size": 64}
            res["throughput"].append(throughput(name, data, opts, images, dev, Path(tmp)))
            print(res["throughput"][-1], flush=True)
            save(res, Path(args.out), t0)
        if not args.skip_bench:
            budget = "2s" if args.smoke else "30s"
            methods = ["rotation"] if args.smoke else None
            t = time.perf_counter()
            bench(methods=methods, budget=budget, out=Path(tmp) / "bench", device=str(dev), quiet=True,
                  budgets=(10,) if args.smoke else (1, 10, 100, "all"), seeds=1 if args.smoke else 3)
            from unsup.api import DEFAULT_BENCH

            res["bench"] = {"methods": list(methods or DEFAULT_BENCH), "budget": budget, "wall_seconds": round(time.perf_counter() - t, 1)}
            print(res["bench"], flush=True)
            save(res, Path(args.out), t0)
        res["time_to_accuracy"] = time_to_accuracy("simclr", 0.85, "3s" if args.smoke else "150s", dev, 1.0 if args.smoke else 10.0)
        save(res, Path(args.out), t0)
    if not args.skip_vit:
        res["vit_supervised"] = vit_supervised(dev, 5 if args.smoke else None)
        print(res["vit_supervised"], flush=True)
    save(res, Path(args.out), t0)
    print(markdown(res))


def save(res: dict, out: Path, t0: float) -> None:
    """Write what is measured so far (JSON and Markdown), so a run stopped by a time limit keeps its finished parts."""
    res["wall_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write(out, json.dumps(res, indent=2))
    atomic_write(out.with_suffix(".md"), markdown(res))


def _registered(name: str) -> bool:
    try:
        get_method(name)
        return True
    except Exception:  # noqa: BLE001 - a method not in this version
        return False


if __name__ == "__main__":
    main()
