"""The one training loop for gradient methods.

Budget (images seen or seconds), warm-up + cosine schedule (or a constant
rate after the warm-up: ``schedule = "constant"``), bf16 autocast and
channels_last on CUDA, optional ``torch.compile``, data-parallel gradient
averaging under ``torchrun``, metrics as JSON lines, an atomic checkpoint every
few minutes, ``resume``, a k-NN monitor, and a clear stop on a NaN loss that
keeps the last good checkpoint. Every metrics record also goes to TensorBoard
event files in ``RUN/tensorboard/`` when the ``tensorboard`` package is installed
(``TrainContext.tensorboard``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from .. import progress as progress_bars
from ..errors import UnsupError
from . import distributed as dist
from .budget import Budget, parse_budget
from .optim import lr_factor, make_optimizer, set_lr
from .tensorboard import TensorBoardLog, open_log


@dataclass
class TrainContext:
    """Where and how a method trains; shared by gradient loops and ``fit``."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    run: object | None = None  # a RunDir, or None for in-memory training
    quiet: bool = False
    resume: bool = False
    compile: bool = False
    seed: int = 0
    checkpoint_every: float = 180.0  # seconds
    monitor_every: float = 60.0  # seconds
    log_every: int = 10  # steps
    monitor: object | None = None  # a KnnMonitor, or None
    desc: str = "pretrain"
    tensorboard: bool = True  # mirror metrics records to RUN/tensorboard/ (when the package is installed)
    _tb: TensorBoardLog | None = field(default=None, init=False, repr=False)
    _tb_opened: bool = field(default=False, init=False, repr=False)

    def log(self, record: dict) -> None:
        """Append ``record`` to ``metrics.jsonl`` and the TensorBoard events (main process, run on disk)."""
        if self.run is not None and dist.is_main():
            self.run.log(record)
            if not self._tb_opened:
                self._tb, self._tb_opened = open_log(self.run.path, self.tensorboard), True
            if self._tb is not None:
                self._tb.write(record)

    def close(self) -> None:
        """Close the TensorBoard writer; a later ``log`` opens a new one."""
        if self._tb is not None:
            self._tb.close()
        self._tb, self._tb_opened = None, False

    def progress_bar(self, total: float, unit: str):
        return progress_bars.bar(None if self.quiet or not dist.is_main() else self.desc, total, unit)


def _batches(n: int, batch: int, seed: int, epoch: int, device):
    """Index batches for one pass; the same order on every process. A set
    smaller than a batch is repeated to fill it (tiny labelled subsets)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    reps = max(1, math.ceil(batch / n))
    perm = torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])
    for i in range(0, len(perm) - batch + 1, batch):
        yield perm[i : i + batch].to(device)


def _check_finite(logs: dict, step: int, images_seen: int, ctx: TrainContext) -> None:
    bad = {k: v for k, v in logs.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        where = f"; the last good checkpoint is kept in {ctx.run.path}" if ctx.run is not None and ctx.run.file("checkpoint.pt").exists() else ""
        raise UnsupError(f"training diverged: {', '.join(f'{k}={v}' for k, v in bad.items())} at step {step} "
                         f"({images_seen} images seen){where}; lower --lr or the budget and try again")


def train_loop(method, data, budget: Budget | str, ctx: TrainContext) -> dict:
    """Train ``method`` on ``data`` (an ImageDataset on the device) until the budget is spent."""
    budget = parse_budget(budget)
    cfg = method.cfg
    device = ctx.device
    world, rank = dist.world_size(), dist.rank()
    if cfg.batch_size % world:
        raise UnsupError(f"batch size {cfg.batch_size} does not split over {world} processes; choose a multiple of {world}")
    local = cfg.batch_size // world
    method.to(device).to(memory_format=torch.channels_last)
    method.train()

    def make(params, lr=None, weight_decay=None, betas=(0.9, 0.999)):
        return make_optimizer(cfg.optimizer, params, cfg.lr if lr is None else lr,
                              cfg.weight_decay if weight_decay is None else weight_decay, cfg.momentum, betas)

    optimizers = method.configure_optimizers(make)
    lr_factor(0.0, cfg.warmup, cfg.schedule)  # an unknown schedule fails before any training
    step, images_seen, elapsed, epoch = 0, 0, 0.0, 0
    state = ctx.run.load_checkpoint() if (ctx.resume and ctx.run is not None) else None
    if state is not None:
        method.load_state_dict(state["method"])
        for opt, s in zip(optimizers, state["optimizers"]):
            opt.load_state_dict(s)
        step, images_seen, elapsed, epoch = state["step"], state["images_seen"], state["seconds"], state["epoch"]
        if dist.is_main() and not ctx.quiet:
            print(f"resuming from step {step} ({images_seen} images seen, {elapsed:.0f}s)")

    def backward(loss, opt):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        dist.average_gradients([p for g in opt.param_groups for p in g["params"]])
        opt.step()

    step_fn = method.training_step
    if ctx.compile:
        # the networks, not the loss code: compiling SimCLR's whole loss failed inside Triton (its fused nll_loss
        # kernel; torch 2.11 on an H100, benchmarks/results/cuda_check.md); in-place compile keeps state-dict keys
        for module in method.children():
            module.compile()

    def checkpoint():
        if ctx.run is not None and dist.is_main():
            ctx.run.save_checkpoint({"method": method.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
                                     "step": step, "images_seen": images_seen, "seconds": elapsed, "epoch": epoch})

    total = budget.value
    bar = ctx.progress_bar(total, "img" if budget.kind == "images" else "s")
    bar.update(min(total, images_seen if budget.kind == "images" else elapsed))
    start = time.perf_counter() - elapsed
    last_ckpt = last_monitor = time.perf_counter()
    logged_images, logged_seconds = images_seen, elapsed  # throughput since the previous record
    logs: dict = {}
    done = budget.done(images_seen, elapsed)
    while not done:
        method.on_epoch_start(data, epoch)
        for idx in _batches(len(data), cfg.batch_size, ctx.seed, epoch, device):
            idx = idx[rank * local : (rank + 1) * local]
            images = data.images[idx]
            progress = budget.progress(images_seen, elapsed)
            set_lr(optimizers, lr_factor(progress, cfg.warmup, cfg.schedule))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                if method.uses_labels:
                    logs = step_fn((images, data.labels[idx]), optimizers, backward)
                else:
                    logs = step_fn(images, optimizers, backward)
            _check_finite(logs, step, images_seen, ctx)
            method.after_step(progress)
            step += 1
            images_seen += cfg.batch_size
            now = time.perf_counter()
            new_elapsed = now - start
            bar.update(max(0.0, min(cfg.batch_size if budget.kind == "images" else new_elapsed - elapsed, total - bar.n)))
            elapsed = new_elapsed
            if step % ctx.log_every == 0:
                bar.set_postfix(loss=f"{logs['loss']:.4f}")
                images_per_s = (images_seen - logged_images) / max(elapsed - logged_seconds, 1e-9)
                logged_images, logged_seconds = images_seen, elapsed
                ctx.log({"step": step, "images_seen": images_seen, "seconds": round(elapsed, 2),
                         "lr": optimizers[0].param_groups[0]["lr"], "images_per_s": round(images_per_s, 1), **logs})
            if ctx.monitor is not None and now - last_monitor >= ctx.monitor_every:
                ctx.monitor(method.encoder, step, images_seen, elapsed, ctx)
                last_monitor = time.perf_counter()
            if now - last_ckpt >= ctx.checkpoint_every:
                checkpoint()
                last_ckpt = time.perf_counter()
            done = budget.done(images_seen, elapsed)
            if world > 1 and budget.kind == "seconds":  # all processes stop on the same step
                flag = torch.tensor([float(done)], device=device)
                done = bool(dist.all_reduce_sum(flag).item() > 0)
            if done:
                break
        epoch += 1
    bar.close()
    checkpoint()
    if ctx.monitor is not None:
        ctx.monitor(method.encoder, step, images_seen, elapsed, ctx)
    ctx.close()
    method.eval()
    return {"step": step, "images_seen": images_seen, "seconds": elapsed, **logs}
