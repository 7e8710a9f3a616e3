"""The one training loop for gradient methods.

Budget (images seen or seconds), warm-up + cosine schedule (or a constant
rate after the warm-up: ``schedule = "constant"``), bf16 autocast and
channels_last on CUDA, optional ``torch.compile``, data-parallel gradient
averaging under ``torchrun``, metrics as JSON lines, a k-NN monitor.
Every metrics record also goes to TensorBoard event files in
``RUN/tensorboard/`` when the ``tensorboard`` package is installed
(``TrainContext.tensorboard``).

Checkpoints make a run resumable exactly: each holds the weights, the
optimisers, the step, the images seen, the position inside the epoch, the
torch random-number states (CPU and CUDA; the batch order comes from a
generator seeded per epoch; numpy's and Python's generators are not used in
training), the method's plain attributes, the monitor's
state and the size of ``metrics.jsonl`` at that moment. On one process and
the same machine a run resumed from any checkpoint ends bit-identical to the
uninterrupted run. A checkpoint is written every ``checkpoint_every`` (images
or seconds), at the end, and on SIGTERM/SIGINT (then the run stops with one
line). Before writing, every parameter, buffer and optimiser tensor is checked
to be finite; a loss that is not finite, exceeds ``LOSS_LIMIT``, or (with
several optimisers: GANs) sits at exactly 0 for ``ZERO_LOSS_STEPS`` steps
stops the run with one line that names the kept checkpoint and the fix.

The step loop does not wait for the device: losses stay there as 0-d tensors
and are read (and checked, step by step) every ``log_every`` steps, before a
checkpoint is taken or committed, at a stop and at the end; the batch order is
drawn on the device.
"""

from __future__ import annotations

import itertools
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, is_dataclass

import torch
from torch import nn

from .. import progress as progress_bars
from ..data.shards import prefetched
from ..errors import UnsupError
from ..run import checkpoint_bytes
from . import distributed as dist
from .budget import Budget, parse_budget
from .optim import lr_factor, make_optimizer, set_lr
from .tensorboard import TensorBoardLog, open_log


def parse_interval(every: Budget | str | float) -> Budget:
    """The checkpoint interval: a number of seconds, or a budget string (``60s``, ``2m``, ``5000img``, ``20k``)."""
    if isinstance(every, (int, float)) and not isinstance(every, bool) and every > 0:
        return Budget("seconds", float(every))
    try:
        return parse_budget(every)
    except UnsupError:
        raise UnsupError(f"bad --checkpoint-every {every!r}; give seconds (60s, 2m) or images (5000img, 20k)") from None


@dataclass
class TrainContext:
    """Where and how a method trains; shared by gradient loops and ``fit``."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    run: object | None = None  # a RunDir, or None for in-memory training
    quiet: bool = False
    resume: bool = False
    compile: bool = False
    seed: int = 0
    checkpoint_every: Budget | str | float = "60s"  # seconds (a number) or a budget: "60s", "2m", "5000img", "20k"
    monitor_every: float = 60.0  # seconds
    log_every: int = 10  # steps
    monitor: object | None = None  # a KnnMonitor, or None
    desc: str = "pretrain"
    tensorboard: bool = True  # mirror metrics records to RUN/tensorboard/ (when the package is installed)
    _tb: TensorBoardLog | None = field(default=None, init=False, repr=False)
    _tb_opened: bool = field(default=False, init=False, repr=False)
    _resume_loaded: bool = field(default=False, init=False, repr=False)
    _resume_state: dict | None = field(default=None, init=False, repr=False)
    last_checkpoint_step: int | None = field(default=None, init=False, repr=False)
    _pending: tuple[bytes, int] | None = field(default=None, init=False, repr=False)

    def checkpoint_interval(self) -> Budget:
        return parse_interval(self.checkpoint_every)

    def resume_state(self, method=None) -> dict | None:
        """The checkpoint to resume from (loaded once), or None: not resuming, or none written yet, which
        is said in one line (the run starts from the beginning). ``metrics.jsonl`` is cut back to the
        records written up to that checkpoint (all of them go when there is none), after the checkpoint
        was found to fit ``method`` (when given): a refused checkpoint leaves the folder as it was."""
        if self._resume_loaded:
            return self._resume_state
        if not self.resume or self.run is None:
            self._resume_loaded = True
            return None
        state = self.run.load_checkpoint()
        if state is not None and method is not None and isinstance(state.get("method"), dict):
            mine = {k: tuple(v.shape) for k, v in method.state_dict().items()}
            theirs = {k: tuple(v.shape) for k, v in state["method"].items() if isinstance(v, torch.Tensor)}
            if mine != theirs:
                odd = sorted(set(mine.items()) ^ set(theirs.items()))[:1]
                raise UnsupError(f"{self.run.file('checkpoint.pt')}: not a checkpoint of this run's model "
                                 f"(e.g. {odd[0][0] if odd else '?'} differs); delete it or pass --overwrite")
        self._resume_loaded = True
        if dist.is_main():
            if state is None:
                print(f"unsup: --resume: no checkpoint in {self.run.path} yet; starting from the beginning", file=sys.stderr)
            self.run.truncate_metrics(state.get("metrics_bytes", 0) if state is not None else 0)
        self._resume_state = state
        if state is not None:
            self.last_checkpoint_step = state.get("step")
        return state

    def save_state(self, state: dict, weights: dict[str, torch.Tensor], others: dict[str, torch.Tensor], advice: str,
                   defer: bool = False) -> None:
        """Write ``state`` as the run's checkpoint (main process, run on disk) after checking that the
        ``weights`` (parameters) are finite and within ``WEIGHT_LIMIT`` and the ``others`` (buffers,
        optimiser state) finite; if not, the previous checkpoint is kept and the run stops with a
        divergence error ending in ``advice``. ``defer``: keep it in memory (serialised) until
        ``commit``, once the next step's losses, computed with these very weights, were fine, so that
        exploded weights never become the checkpoint."""
        peaks = {k: float(t.detach().abs().max()) for k, t in weights.items() if t.is_floating_point() and t.numel()}
        bad = [f"{k} (max |x| {v:.3g})" for k, v in peaks.items() if not v <= WEIGHT_LIMIT]  # NaN fails too
        bad += [k for k, t in others.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            self._pending = None
            raise UnsupError(f"training diverged: {len(bad)} tensor(s) not finite or past {WEIGHT_LIMIT:g} ({', '.join(bad[:2])}"
                             f"{', ...' if len(bad) > 2 else ''}) at step {state.get('step')}; {self.kept()}; {advice}")
        if self.run is not None and dist.is_main():
            self._pending = (checkpoint_bytes({**state, "metrics_bytes": self.run.metrics_size()}), state.get("step"))
        if not defer:
            self.commit()

    def commit(self) -> None:
        """Write the checkpoint ``save_state(..., defer=True)`` holds, if any."""
        if self._pending is not None:
            data, step = self._pending
            self._pending = None
            self.run.save_checkpoint(data)
            self.last_checkpoint_step = step

    def kept(self) -> str:
        """Where the last good checkpoint is, for error messages."""
        if self.run is None:
            return "nothing is saved (training in memory)"
        if self.last_checkpoint_step is None and not self.run.file("checkpoint.pt").exists():
            return f"no checkpoint was written in {self.run.path} yet (--resume starts from the beginning)"
        at = f" (step {self.last_checkpoint_step})" if self.last_checkpoint_step is not None else ""
        return f"the last good checkpoint{at} is kept in {self.run.path}"

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


# a parameter past this in magnitude has exploded though still finite (trained weights here stay below 10);
# resuming from it diverges again at any rate. Buffers (batch-norm statistics grow as the weights squared) need
# only be finite.
WEIGHT_LIMIT = 1e6
# a loss past this is an explosion: the largest any method here logs while training works is a
# sum-reduced reconstruction, under 3e4 even on 96x96x3 images
LOSS_LIMIT = 1e6
# with several optimisers (GANs) a loss at exactly 0 this many steps in a row means one player gets no gradient
ZERO_LOSS_STEPS = 50


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived: a checkpoint was written and the run stopped; the message says so in one line."""


class StopSignals:
    """``with StopSignals() as stop:`` SIGTERM and SIGINT set ``stop.name`` instead of killing the
    process, so the loop can checkpoint at the next step boundary; a second signal interrupts at once.
    Outside the main thread (where handlers cannot be set) it does nothing."""

    def __enter__(self) -> StopSignals:
        self.name: str | None = None
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    self._old[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):
                    pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.name is not None:
            raise KeyboardInterrupt
        self.name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class Interval:
    """When the next checkpoint is due: every ``every`` images (or other units of work) or seconds."""

    def __init__(self, every: Budget, units: float = 0, seconds: float = 0.0):
        self.every, self.units, self.seconds = every, units, seconds

    def due(self, units: float, seconds: float) -> bool:
        if self.every.kind == "seconds":
            return seconds - self.seconds >= self.every.value
        return units - self.units >= self.every.value

    def mark(self, units: float, seconds: float) -> None:
        self.units, self.seconds = units, seconds


def rng_state(device: torch.device) -> dict:
    """Every global random-number state training draws from: torch's CPU generator and, on CUDA, the GPUs'."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_PLAIN = (bool, int, float, str)


def method_attributes(method: nn.Module) -> dict:
    """The method's public plain attributes that its state dict misses (e.g. a momentum ``tau``), and those
    of helper objects it holds (e.g. a GAN's collapse counter); not its config, which a resume may change."""
    out = {}
    for name, value in vars(method).items():
        if name.startswith("_") or name in ("training", "cfg"):
            continue
        if isinstance(value, _PLAIN) or (isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter)):
            out[name] = value
        elif hasattr(value, "__dict__") and not isinstance(value, (nn.Module, torch.optim.Optimizer, type)) \
                and not is_dataclass(value):
            attrs = {k: v for k, v in vars(value).items() if not k.startswith("_") and isinstance(v, _PLAIN)}
            if attrs:
                out[name] = {"attributes": attrs}
    return out


def set_method_attributes(method: nn.Module, saved: dict) -> None:
    for name, value in saved.items():
        if isinstance(value, dict):
            target = getattr(method, name, None)
            for k, v in value.get("attributes", {}).items():
                if target is not None:
                    setattr(target, k, v)
        else:
            setattr(method, name, value)


def _lr_advice(cfg) -> str:
    lower = f"lr={cfg.lr / 10:g}" + (f" -o g_lr={cfg.g_lr / 10:g}" if getattr(cfg, "g_lr", 0) else "")
    return f"continue with a lower learning rate: --resume -o {lower}"


class _Divergence:
    """Checks every logged value of a step: finite, every loss within ``LOSS_LIMIT``, and (several
    optimisers) no loss at exactly 0 for ``ZERO_LOSS_STEPS`` steps in a row."""

    def __init__(self, zero_check: bool, zero_runs: dict | None = None):
        self.zero_check = zero_check
        self.zero_runs: dict[str, int] = dict(zero_runs or {})

    def check(self, logs: dict, step: int, images_seen: int, ctx: TrainContext, cfg) -> None:
        bad = [f"{k}={v}" for k, v in logs.items() if isinstance(v, float) and not math.isfinite(v)]
        losses = {k: v for k, v in logs.items() if "loss" in k and isinstance(v, float) and math.isfinite(v)}
        bad += [f"{k}={v:.3g} (past {LOSS_LIMIT:g})" for k, v in losses.items() if abs(v) > LOSS_LIMIT]
        if self.zero_check:
            for k, v in losses.items():
                self.zero_runs[k] = self.zero_runs.get(k, 0) + 1 if v == 0.0 else 0
            bad += [f"{k}=0 for {n} steps in a row (a player gets no gradient)" for k, n in self.zero_runs.items()
                    if n >= ZERO_LOSS_STEPS]
        if bad:
            raise UnsupError(f"training diverged: {', '.join(bad)} at step {step} ({images_seen} images seen); "
                             f"{ctx.kept()}; {_lr_advice(cfg)}")


def _batches(n: int, batch: int, seed: int, epoch: int, device):
    """Index batches for one pass, drawn on ``device`` (no host round trip per batch); the same order on
    every process (of one device kind and model). A set smaller than a batch is repeated to fill it (tiny
    labelled subsets)."""
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed * 100_003 + epoch)
    reps = max(1, math.ceil(batch / n))
    perm = torch.cat([torch.randperm(n, generator=g, device=device) for _ in range(reps)])
    for i in range(0, len(perm) - batch + 1, batch):
        yield perm[i : i + batch]


class _StepLogs:
    """The logs of the steps since the last read, as they came: 0-d tensors stay on the device, since
    reading one is a host sync. ``read`` fetches them all in one transfer (every ``log_every`` steps,
    before a checkpoint, at a stop and at the end) and checks each step's values in order, so a bad
    loss is reported with the step that made it."""

    def __init__(self, divergence: _Divergence, ctx: TrainContext, cfg):
        self.divergence, self.ctx, self.cfg = divergence, ctx, cfg
        self.steps: list[tuple[int, int, dict]] = []

    def add(self, logs: dict, step: int, images_seen: int) -> None:
        self.steps.append((step, images_seen, {k: v.detach() if isinstance(v, torch.Tensor) else v
                                               for k, v in logs.items()}))

    def read(self) -> dict | None:
        """The last step's logs as Python numbers after every buffered step passed the divergence check;
        None when no step came since the last read."""
        if not self.steps:
            return None
        steps, self.steps = self.steps, []
        tensors = [v for _, _, logs in steps for v in logs.values() if isinstance(v, torch.Tensor) and v.dim() == 0]
        values = iter(torch.stack([t.to(self.ctx.device, torch.float64) for t in tensors]).tolist() if tensors else [])
        out = {}
        for step, images_seen, logs in steps:
            out = {k: next(values) if isinstance(v, torch.Tensor) and v.dim() == 0 else v for k, v in logs.items()}
            self.divergence.check(out, step, images_seen, self.ctx, self.cfg)
        return out


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
    step, images_seen, elapsed, epoch, batch_in_epoch = 0, 0, 0.0, 0, 0
    last_logs: dict = {}
    every = ctx.checkpoint_interval()
    state = ctx.resume_state()
    divergence = _Divergence(zero_check=len(optimizers) > 1)
    monitor_at = 0.0  # elapsed seconds at the monitor's last run
    if state is not None:
        try:
            method.load_state_dict(state["method"])
        except (RuntimeError, KeyError, TypeError) as e:
            raise UnsupError(f"{ctx.run.file('checkpoint.pt')}: not a checkpoint of this run's model "
                             f"({str(e).splitlines()[0][:120]}); delete it or pass --overwrite") from None
        for opt, s in zip(optimizers, state["optimizers"]):
            # this run's rate (a resume may lower it) and kernels (a CUDA run's fused flag fails on a CPU)
            mine = [{k: g[k] for k in ("foreach", "fused") if k in g} | {"base_lr": g.get("base_lr", g["lr"])}
                    for g in opt.param_groups]
            opt.load_state_dict(s)
            for g, keep in zip(opt.param_groups, mine):
                g.update(keep)
        step, images_seen, elapsed, epoch = state["step"], state["images_seen"], state["seconds"], state["epoch"]
        batch_in_epoch = state.get("batch", 0)
        if batch_in_epoch:  # mid-epoch: redo what the epoch's start set up that the state misses (data-derived)
            method.on_epoch_start(data, epoch)
        set_method_attributes(method, state.get("attributes", {}))
        if "rng" in state:
            set_rng_state(state["rng"])
        divergence.zero_runs = dict(state.get("zero_runs", {}))
        last_logs = dict(state.get("logs", {}))  # a resumed finished run reports the same last losses
        monitor_at = state.get("monitor", {}).get("seconds", elapsed)
        if ctx.monitor is not None and hasattr(ctx.monitor, "history"):
            ctx.monitor.history = list(state.get("monitor", {}).get("history", []))
            ctx.monitor.raw_pixels = state.get("monitor", {}).get("raw_pixels")
        if dist.is_main() and not ctx.quiet:
            print(f"resuming from step {step} ({images_seen} images seen, {elapsed:.0f}s)")
    interval = Interval(every, images_seen, elapsed)
    step_logs = _StepLogs(divergence, ctx, cfg)
    # shards are read from disk by index: their batch order is drawn on the host, where the reader needs it
    order_on = torch.device("cpu") if hasattr(data.images, "prefetch") else device
    committing = False  # a deferred checkpoint waits for the next step's losses

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

    def read_logs() -> None:
        nonlocal logs
        got = step_logs.read()
        if got is not None:
            logs = got

    def checkpoint(defer: bool = False):
        nonlocal committing
        read_logs()  # the losses up to here pass the check before their weights are saved
        weights = {f"method.{k}": v for k, v in method.named_parameters()}
        others = {f"method.{k}": v for k, v in method.named_buffers()}
        for i, opt in enumerate(optimizers):
            for j, st in enumerate(opt.state.values()):
                others.update({f"optimizer{i}.{j}.{k}": v for k, v in st.items() if isinstance(v, torch.Tensor)})
        ctx.save_state({"method": method.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
                        "step": step, "images_seen": images_seen, "seconds": elapsed, "epoch": epoch,
                        "batch": batch_in_epoch, "rng": rng_state(device), "attributes": method_attributes(method),
                        "zero_runs": dict(divergence.zero_runs), "logs": logs,
                        "monitor": {"seconds": monitor_at, "history": list(getattr(ctx.monitor, "history", [])),
                                    "raw_pixels": getattr(ctx.monitor, "raw_pixels", None)}},
                       weights, others, _lr_advice(cfg), defer)
        committing = defer
        interval.mark(images_seen, elapsed)

    total = budget.value
    bar = ctx.progress_bar(total, "img" if budget.kind == "images" else "s")
    bar.update(min(total, images_seen if budget.kind == "images" else elapsed))
    start = time.perf_counter() - elapsed
    logged_images, logged_seconds = images_seen, elapsed  # throughput since the previous record
    logs: dict = last_logs
    done = budget.done(images_seen, elapsed)
    with StopSignals() as stop:
        if ctx.monitor is not None and state is None:  # the starting point of time-to-accuracy, before any step
            ctx.monitor(method.encoder, step, images_seen, elapsed, ctx)
            start = time.perf_counter() - elapsed
        while not done:
            if batch_in_epoch == 0:
                method.on_epoch_start(data, epoch)
            batches = _batches(len(data), cfg.batch_size, ctx.seed, epoch, order_on)
            mine = (idx[rank * local : (rank + 1) * local] for idx in itertools.islice(batches, batch_in_epoch, None))
            for idx in prefetched(mine, data.images):  # a resumed epoch skips the batches it did; shards read ahead
                images = data.images[idx]
                progress = budget.progress(images_seen, elapsed)
                set_lr(optimizers, lr_factor(progress, cfg.warmup, cfg.schedule))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    if method.uses_labels:
                        step_logs.add(step_fn((images, data.labels[idx]), optimizers, backward), step, images_seen)
                    else:
                        step_logs.add(step_fn(images, optimizers, backward), step, images_seen)
                if committing:  # this step's losses were computed with the weights the deferred checkpoint holds
                    read_logs()
                    ctx.commit()
                    committing = False
                method.after_step(progress)
                step += 1
                batch_in_epoch += 1
                images_seen += cfg.batch_size
                log_point = step % ctx.log_every == 0
                if log_point:
                    read_logs()  # waits for the device, so the time taken below includes its queued work
                now = time.perf_counter()
                new_elapsed = now - start
                bar.update(max(0.0, min(cfg.batch_size if budget.kind == "images" else new_elapsed - elapsed, total - bar.n)))
                elapsed = new_elapsed
                if log_point:
                    bar.set_postfix(loss=f"{logs['loss']:.4f}")
                    images_per_s = (images_seen - logged_images) / max(elapsed - logged_seconds, 1e-9)
                    logged_images, logged_seconds = images_seen, elapsed
                    ctx.log({"step": step, "images_seen": images_seen, "seconds": round(elapsed, 2),
                             "lr": optimizers[0].param_groups[0]["lr"], "images_per_s": round(images_per_s, 1), **logs})
                if ctx.monitor is not None and elapsed - monitor_at >= ctx.monitor_every:
                    measured = time.perf_counter()
                    ctx.monitor(method.encoder, step, images_seen, elapsed, ctx)
                    start += time.perf_counter() - measured  # the monitor's own time is not training time
                    monitor_at = elapsed
                done = budget.done(images_seen, elapsed)
                stopping = stop.name is not None
                if world > 1:
                    # all processes stop on the same step (a time budget, a signal to one of them); agreeing is a
                    # host sync, so it happens at log points and at an image budget's end (the same step everywhere)
                    if log_point or (done and budget.kind == "images"):
                        flag = torch.tensor([float(done), float(stopping)], device=device)
                        flag = dist.all_reduce_sum(flag).tolist()
                        done, stopping = flag[0] > 0, flag[1] > 0
                    else:
                        done = stopping = False
                if stopping:
                    checkpoint()
                    bar.close()
                    ctx.close()
                    where = f" in {ctx.run.path}" if ctx.run is not None else ""
                    raise Stopped(f"stopped by {stop.name or 'a signal'} at step {step} ({images_seen} images seen); "
                                  f"checkpoint written{where}, continue with --resume")
                if interval.due(images_seen, elapsed) and not done:
                    checkpoint(defer=True)
                if done:
                    break
            else:
                epoch, batch_in_epoch = epoch + 1, 0
                continue
            break
    bar.close()
    checkpoint()
    if ctx.monitor is not None:
        ctx.monitor(method.encoder, step, images_seen, elapsed, ctx)
    ctx.close()
    method.eval()
    return {"step": step, "images_seen": images_seen, "seconds": elapsed, **logs}
