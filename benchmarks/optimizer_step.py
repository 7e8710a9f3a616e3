"""The optimiser's step on the CPU: torch's fused kernels against its multi-tensor (foreach) loop.

    .venv/bin/python benchmarks/optimizer_step.py [--rounds 2] [--seconds 60] [--out benchmarks/results/optimizer_step]

Part 1 times AdamW's step alone over each method's trainable parameters (the
library's parameter groups, random gradients), both ways, and checks that 20
steps with the same gradients end at the same weights. Part 2 pretrains the
k-means floor entry (moco v3, every-conv mean-max read-out, 1,024-wide
projector) and SimCLR for ``--seconds`` with each kernel choice, alternating,
``--rounds`` times, and counts the steps; the foreach choice is patched into
``unsup.train.optim._multi_tensor`` for that comparison.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

import unsup.train.optim as optim
from unsup.methods.base import config_from_dict
from unsup.registry import get_method

FLOOR_ENTRY = {"version": 3, "batch_size": 64, "proj_hidden": 1024,
               "backbone_options": {"pool_grid": 3, "read_out": "every-conv", "grid_statistics": "mean-max"}}
METHODS = [("simclr", {}), ("moco", FLOOR_ENTRY), ("byol", {}), ("barlow-twins", {}), ("vicreg", {}), ("swav", {}),
           ("dino", {})]
KERNELS = {"foreach": {"foreach": True}, "fused": {"fused": True}}


def adamw(params, kernel: str):
    return torch.optim.AdamW(optim.decay_groups(params), lr=1e-3, weight_decay=1e-4, **KERNELS[kernel])


def step_times(name: str, options: dict) -> dict:
    cls = get_method(name)
    method = cls(config_from_dict(cls.Config, options), (1, 28, 28))
    start = [p.detach().clone() for p in method.parameters() if p.requires_grad]
    grads = [[torch.randn_like(p) * 1e-3 for p in start] for _ in range(20)]
    row, ends = {"method": name, "parameters": sum(p.numel() for p in start)}, {}
    for kernel in KERNELS:
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = adamw(params, kernel)
        for g in grads:  # 20 steps with the same gradients both ways: the weights must agree
            for p, gp in zip(params, g):
                p.grad = gp
            opt.step()
        ends[kernel] = [q.detach() for q in params]
        t = time.perf_counter()
        for _ in range(20):
            opt.step()
        row[f"{kernel}_ms"] = (time.perf_counter() - t) / 20 * 1000
    row["max_abs_difference"] = max(float((a - b).abs().max()) for a, b in zip(*ends.values()))
    return row


def pretrain_steps(name: str, options: dict, kernel: str, seconds: int, train) -> dict:
    from unsup import api

    chosen = optim._multi_tensor
    if kernel == "foreach":
        optim._multi_tensor = lambda groups: KERNELS["foreach"]
    try:
        out = Path("bench-out/optimizer_step") / name
        api.pretrain(name, train, budget=f"{seconds}s", out=out, quiet=True, figures=False, tensorboard=False,
                     overwrite=True, options=options, monitor=False)
    finally:
        optim._multi_tensor = chosen
    done = [json.loads(line) for line in open(out / "metrics.jsonl") if '"done"' in line][-1]
    return {"method": name, "kernel": kernel, "steps": done["step"], "images_per_s": done["images_seen"] / done["seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/optimizer_step")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from unsup import api
    from unsup.data import load

    steps = [step_times(name, options) for name, options in METHODS]
    for r in steps:
        print(r, flush=True)
    train, _ = api.validation_split(load("fashion-mnist", "train"))
    runs = []
    for _ in range(args.rounds):
        for name, options in [("moco", FLOOR_ENTRY), ("simclr", {})]:
            for kernel in KERNELS:
                runs.append(pretrain_steps(name, options, kernel, args.seconds, train))
                print(runs[-1], flush=True)
    meta = {"command": "python benchmarks/optimizer_step.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "threads": args.threads}
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "step_times": steps, "pretraining": runs}, indent=1))
    lines = [f"# AdamW's step on the CPU: fused against foreach\n\n`{meta['command']}`, {meta['date']}, torch "
             f"{meta['torch']}, {args.threads} threads.\n",
             "| method | parameters trained | foreach ms/step | fused ms/step | ratio | max abs difference after 20 steps |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['parameters']:,} | {r['foreach_ms']:.1f} | {r['fused_ms']:.1f} | "
              f"{r['foreach_ms'] / r['fused_ms']:.1f}x | {r['max_abs_difference']:.1e} |" for r in steps]
    lines += ["", f"Pretraining {args.seconds} s on the validation split, the two choices alternating:", "",
              "| method | kernel | steps | images/s |", "|---|---|---:|---:|"]
    lines += [f"| {r['method']} | {r['kernel']} | {r['steps']} | {r['images_per_s']:.0f} |" for r in runs]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
