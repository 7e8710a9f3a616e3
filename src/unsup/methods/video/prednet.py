"""PredNet: Lotter, Kreiman & Cox, "Deep Predictive Coding Networks for Video
Prediction and Unsupervised Learning", ICLR 2017 (arXiv 2016).

A stack of modules; module l holds a representation unit R_l (a ConvLSTM), a
prediction Ahat_l = ReLU(conv(R_l)) (clipped at the pixel maximum for l = 0),
a target A_l (the frame for l = 0, else MaxPool(ReLU(conv(E_{l-1})))) and
error units E_l = [ReLU(A_l - Ahat_l), ReLU(Ahat_l - A_l)]. Each time step
first updates R top-down (R_l from E_l at t-1, R_l at t-1 and the upsampled
R_{l+1} at t), then runs bottom-up (predictions, errors, targets). Loss: the
mean of each layer's error units, weighted per layer (the paper's L_0:
(1, 0, 0, 0); L_all: (1, 0.1, 0.1, 0.1)) and over time (0 for the first frame,
which has nothing to be predicted from). Multi-step prediction feeds each
prediction back as the next input, as in the paper's extrapolation.

Online learning (``learn_online``): a stream of frames, the next frame always
predicted, its error monitored against its recent level, and a learning step
(truncated back-propagation over the last few frames) taken only while the
error is high, so a change in the stream switches learning on and a familiar
stream costs no updates. The gate (``ErrorGate``) has hysteresis: it switches
on when the recent error exceeds 1.25 x the familiar level and stays on, with
the level frozen, until the error is back within 1.1 x that level (or stops
improving: then the new error becomes the level), so it neither adapts its
reference to the new, higher error nor stops learning halfway.

Two departures, both for sparse grey frames: R_0 has 8 channels, not the
frame's 1 (one channel cannot hold a frame and its motion), and the pixel
prediction's ReLU leaks (slope 0.01 below 0, still clipped at 1): on mostly
black frames the L1 error units push every pixel prediction below zero in the
first steps and a plain ReLU then stays dead, predicting blank frames forever.

Scaled from the paper's KITTI model (4 layers, 3/48/96/192 channels,
128x160 frames) to 4 layers of 1/16/32/64 channels on 64x64 frames; trained
on 10-frame windows of the 20-frame sequences, as the paper trained on
10-frame clips. The probed encoder runs the network on a still frame for two
steps and pools every layer's representation units (average and max).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...data.augment import to_float
from ...errors import UnsupError
from ...nets import Encoder
from ...nets.convlstm import ConvLSTMCell
from ...registry import register
from .common import VideoConfig, VideoMethod

LAYER_WEIGHTS = {"L0": (1.0, 0.0, 0.0, 0.0), "Lall": (1.0, 0.1, 0.1, 0.1)}


@dataclass
class PredNetConfig(VideoConfig):
    backbone: str = "prednet"  # the encoder is the network itself
    stack: tuple = (16, 32, 64)  # A / Ahat channels of layers 1.. (layer 0 = the frame's channels)
    r_stack: tuple = (8, 16, 32, 64)  # R channels of every layer, layer 0 included
    kernel: int = 3
    loss: str = "L0"  # L0 | Lall: the paper's layer weightings
    train_frames: int = 10  # frames per training window
    context: int = 10
    future: int = 10
    probe_steps: int = 2
    batch_size: int = 8


class PredNetNet(nn.Module):
    def __init__(self, channels: int, stack, r_stack, kernel: int = 3, pixel_max: float = 1.0):
        super().__init__()
        self.a = (channels, *stack)
        self.r = tuple(r_stack)
        n = self.layers = len(self.a)
        self.pixel_max = pixel_max
        self.leak = 0.01  # slope below 0 of the pixel prediction (dead-ReLU guard)
        self.cells = nn.ModuleList(
            ConvLSTMCell(2 * self.a[i] + (self.r[i + 1] if i < n - 1 else 0), self.r[i], kernel) for i in range(n))
        self.ahat = nn.ModuleList(nn.Conv2d(self.r[i], self.a[i], kernel, padding=kernel // 2) for i in range(n))
        self.atarget = nn.ModuleList(nn.Conv2d(2 * self.a[i], self.a[i + 1], kernel, padding=kernel // 2) for i in range(n - 1))

    def init_state(self, b: int, h: int, w: int, device, dtype=torch.float32):
        rs, es = [], []
        for i in range(self.layers):
            s = (h >> i, w >> i)
            z = torch.zeros(b, self.r[i], *s, device=device, dtype=dtype)
            rs.append((z, z))
            es.append(torch.zeros(b, 2 * self.a[i], *s, device=device, dtype=dtype))
        return rs, es

    def step(self, frame: torch.Tensor | None, state):
        """One time step. ``frame`` (B, C, H, W) in [0, 1], or None to feed the
        prediction back (extrapolation). Returns (prediction of this frame,
        error units per layer, new state)."""
        rs, es = state
        new_r = [None] * self.layers
        for i in reversed(range(self.layers)):  # top-down: update the representations
            inp = [es[i]]
            if i < self.layers - 1:
                inp.append(F.interpolate(new_r[i + 1][0], scale_factor=2, mode="nearest"))
            new_r[i] = self.cells[i](torch.cat(inp, 1), rs[i])
        errors, target, pred = [], frame, None
        for i in range(self.layers):  # bottom-up: predictions, errors, next targets
            if i == 0:  # SatLU on pixels, with a leak: see the module docstring
                ahat = F.leaky_relu(self.ahat[i](new_r[i][0]), self.leak).clamp(max=self.pixel_max)
                pred = ahat
                if target is None:
                    target = ahat
            else:
                ahat = F.relu(self.ahat[i](new_r[i][0]))
            e = torch.cat([F.relu(target - ahat), F.relu(ahat - target)], 1)
            errors.append(e)
            if i < self.layers - 1:
                target = F.max_pool2d(F.relu(self.atarget[i](e)), 2)
        return pred, errors, (new_r, errors)


class PredNetFeatures(nn.Module):
    """The probed encoder: a still frame shown for a few steps; every layer's
    representation units pooled (average and max)."""

    def __init__(self, net: PredNetNet, steps: int):
        super().__init__()
        self.prednet, self.steps = net, steps
        self.out_dim = 2 * sum(net.r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x.shape[0], not len(x): a trace (unsup export) then keeps the batch size free
        state = self.prednet.init_state(x.shape[0], x.shape[2], x.shape[3], x.device, x.dtype)
        for _ in range(self.steps):
            _pred, _err, state = self.prednet.step(x, state)
        rs = [h for h, _c in state[0]]
        return torch.cat([torch.cat([r.mean((2, 3)), r.amax((2, 3))], 1) for r in rs], 1)


def prednet_features(in_channels: int) -> PredNetFeatures:
    """The default network as a backbone: the ``prednet`` entry of ``unsup.nets.BACKBONES``,
    which the supervised reference of `unsup probe` builds by name."""
    return PredNetFeatures(PredNetNet(in_channels, PredNetConfig.stack, PredNetConfig.r_stack), PredNetConfig.probe_steps)


def prednet_loss(errors_per_t: list[list[torch.Tensor]], layer_weights, first_weight: float = 0.0) -> torch.Tensor:
    """Weighted mean error units: over layers (paper's lambda_l), over time
    (lambda_t = 0 for the first frame unless asked, equal otherwise)."""
    total, wsum = 0.0, 0.0
    for t, errors in enumerate(errors_per_t):
        wt = first_weight if t == 0 else 1.0
        if wt == 0:
            continue
        total = total + wt * sum(lw * e.float().mean() for lw, e in zip(layer_weights, errors) if lw)
        wsum += wt
    return total / max(wsum, 1e-8)


@register
class PredNet(VideoMethod):
    name = "prednet"
    paper = "Lotter, Kreiman & Cox 2016, Deep Predictive Coding Networks for Video Prediction and Unsupervised Learning"
    Config = PredNetConfig

    def __init__(self, cfg: PredNetConfig, shape):
        super().__init__(cfg, shape)
        c, h, _ = shape
        if len(cfg.stack) + 1 != len(cfg.r_stack):
            raise UnsupError(f"prednet: r_stack {cfg.r_stack} needs one more entry (layer 0) than stack {cfg.stack}")
        if cfg.loss not in LAYER_WEIGHTS:
            raise UnsupError(f"prednet: unknown loss {cfg.loss!r}; choose {' or '.join(LAYER_WEIGHTS)}")
        if h % (2 ** len(cfg.stack)):
            raise UnsupError(f"prednet: frames of {h}x{h} must be divisible by {2 ** len(cfg.stack)} for {len(cfg.stack) + 1} layers")
        self.prednet = PredNetNet(c, cfg.stack, cfg.r_stack, cfg.kernel)
        w = LAYER_WEIGHTS[cfg.loss]
        self.layer_weights = (w + (w[-1],) * self.prednet.layers)[: self.prednet.layers]
        self.encoder = Encoder(PredNetFeatures(self.prednet, cfg.probe_steps), c, h, mean=0.0, std=1.0)

    def run(self, frames: torch.Tensor, state=None):
        """Frames (B, T, C, H, W) -> (predictions (B, T, C, H, W), errors per t, state)."""
        b, t, _c, h, w = frames.shape
        state = state or self.prednet.init_state(b, h, w, frames.device, frames.dtype)
        preds, errs = [], []
        for i in range(t):
            p, e, state = self.prednet.step(frames[:, i], state)
            preds.append(p)
            errs.append(e)
        return torch.stack(preds, 1), errs, state

    def training_loss(self, images):
        n = self.cfg.train_frames
        x = self.sequences(images, n)
        start = int(torch.randint(0, x.shape[1] - n + 1, ()))  # a random window of each batch
        pred, errs, _ = self.run(x[:, start : start + n])
        loss = prednet_loss(errs, self.layer_weights)
        mse = (pred[:, 1:].detach().float() - x[:, start + 1 : start + n]).pow(2).sum((2, 3, 4)).mean()
        return loss, {"frame_mse": float(mse)}

    @torch.no_grad()
    def predict(self, context: torch.Tensor, steps: int) -> torch.Tensor:
        _p, _e, state = self.run(context)
        out = []
        for _ in range(steps):
            p, _e, state = self.prednet.step(None, state)
            out.append(p)
        return torch.stack(out, 1)

    def figures(self, data, out_dir: Path) -> list[Path]:
        return self.prediction_figure(data, out_dir, self.cfg.context, self.cfg.future)

    # --- online learning -------------------------------------------------
    def learn_online(self, chunks, optimizer, gated: bool = True, threshold: float = 1.25, window: int = 4,
                     **gate_options) -> dict:
        """Consume a stream: ``chunks`` yields uint8 frames (S, t, C, H, W) of S
        parallel streams. Each frame is predicted before it is seen; its error
        (squared error summed over the frame, mean over streams) goes to an
        ``ErrorGate`` (``threshold`` and ``gate_options`` are its settings).
        When ``gated``, a learning step is taken only while the gate is on
        (always when not gated): back-propagation through the last ``window``
        frames from the state before them. Returns per-frame error, updates,
        the gate's level and the frames where it switched (``switches``:
        (frame, "on" | "recovered" | "plateau"))."""
        gate = ErrorGate(threshold=threshold, **gate_options)
        state, frames, states = None, collections.deque(maxlen=window), collections.deque(maxlen=window)
        errors, learned, levels = [], [], []
        self.train()
        for chunk in chunks:
            x = to_float(chunk)
            for i in range(x.shape[1]):
                f = x[:, i]
                if state is None:
                    state = self.prednet.init_state(len(f), f.shape[2], f.shape[3], f.device)
                states.append(state)
                frames.append(f)
                with torch.no_grad():
                    pred, _e, state = self.prednet.step(f, state)
                err = float((pred - f).pow(2).sum((1, 2, 3)).mean())
                t = len(errors)
                errors.append(err)
                on = gate.update(err)
                learn = (on or not gated) and t > 0 and len(frames) == window
                if learn:
                    s = tuple(([(h.detach(), c.detach()) for h, c in states[0][0]], [e.detach() for e in states[0][1]]))
                    errs = []
                    for g in frames:
                        _p, e, s = self.prednet.step(g, s)
                        errs.append(e)
                    loss = prednet_loss(errs, self.layer_weights, first_weight=1.0)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                learned.append(bool(learn))
                levels.append(gate.level)
        return {"error": errors, "learned": learned, "level": levels, "switches": gate.switches}


class ErrorGate:
    """When to learn online, from the stream of prediction errors alone.

    The *level* is the error of the familiar stream: the mean of the first
    ``warmup`` frames (the very first frame, predicted from nothing, left
    out), then a slow running mean (rate ``rate``) of the frames seen while the
    gate is off. The gate compares the mean error of the last ``smooth``
    frames with it, with hysteresis (a Schmitt trigger):

    - off -> on when that mean exceeds ``threshold`` x level (something new);
    - while on, the level is frozen (the error of the new stream must not
      become the reference it is measured against), and learning goes on
      until the mean is back within ``off`` x level ("recovered"),
    - or until learning stops paying: the best mean has not fallen by a
      fraction ``min_gain`` for ``patience`` frames ("plateau"); the new
      stream's error is then accepted as the level (it cannot be learned
      away at this rate), so a lasting, unlearnable change does not keep
      learning on forever.

    ``update(error)`` returns whether the gate is on for that frame; no frame
    of the warm-up is learned on.
    """

    def __init__(self, threshold: float = 1.25, off: float = 1.1, smooth: int = 10, warmup: int = 20, rate: float = 0.01,
                 patience: int = 100, min_gain: float = 0.02):
        if not off < threshold:
            raise UnsupError(f"online gate: the off level ({off}) must be below the on threshold ({threshold})")
        if warmup < 2 or smooth < 1:
            raise UnsupError("online gate: warmup must be at least 2 frames and smooth at least 1")
        self.threshold, self.off, self.smooth, self.warmup, self.rate = threshold, off, smooth, warmup, rate
        self.patience, self.min_gain = patience, min_gain
        self.errors: list[float] = []
        self.level: float | None = None
        self.on = False
        self.best, self.best_t = float("inf"), 0
        self.switches: list[tuple[int, str]] = []

    def update(self, err: float) -> bool:
        t = len(self.errors)
        self.errors.append(err)
        if t < self.warmup:
            self.level = err if t == 0 else sum(self.errors[1:]) / t
            return False
        recent = sum(self.errors[-self.smooth :]) / len(self.errors[-self.smooth :])
        if not self.on:
            if recent > self.threshold * self.level:
                self.on, self.best, self.best_t = True, recent, t
                self.switches.append((t, "on"))
        else:
            if recent < self.best * (1 - self.min_gain):
                self.best, self.best_t = recent, t
            if recent <= self.off * self.level:
                self.on = False
                self.switches.append((t, "recovered"))
            elif t - self.best_t >= self.patience:
                self.on, self.level = False, recent
                self.switches.append((t, "plateau"))
        if not self.on:
            self.level += self.rate * (err - self.level)
        return self.on
