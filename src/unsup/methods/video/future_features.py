"""Future features: Vondrick, Pirsiavash & Torralba, "Anticipating Visual
Representations from Unlabeled Video", CVPR 2016.

From a frame at time t, a network regresses the representation of the frame
k steps later (L2 loss); a mixture of K regressors, of which only the best
one learns on each example, covers several possible futures (the paper's
multi-modal extension). The paper's targets are the features of a frozen
pretrained network (AlexNet fc7). Without one, the target here comes by
default from a momentum (exponential moving average) copy of the frame
encoder, as in BYOL: a target that is the trained encoder itself lets both
sides collapse to a constant, whereas the slowly moving copy with the
predictor asymmetry keeps targets informative while they improve. A frozen
encoder from another run can be given instead (``target=RUN_DIR``), which is
the paper's setting. Targets and predictions are L2-normalised (on unit
vectors the L2 loss is 2 - 2 cos), so the loss cannot shrink by scaling
features down.

Scaled for 64x64 frames: the ``frame-convnet`` encoder, pooled features,
an MLP regressor; k = 5 frames (the paper anticipates one second ahead).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...data import video
from ...data.augment import to_float
from ...errors import UnsupError
from ...registry import register
from ...train.ema import cosine_momentum, ema_update, momentum_copy
from .common import VideoConfig, VideoMethod


@dataclass
class FutureFeaturesConfig(VideoConfig):
    ahead: int = 5  # k: frames ahead whose representation is predicted
    mixtures: int = 3  # K regressors, the best one learns (paper's multi-modal model)
    hidden: int = 512  # regressor hidden units
    target: str = "momentum"  # "momentum" (EMA of the encoder) or a run directory with a frozen encoder
    momentum_base: float = 0.99  # EMA rate, raised to 1 on a cosine schedule (BYOL)


def anticipation_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pred (N, K, D), target (N, D): L2 between unit vectors, min over the K
    regressors; returns (loss, index of the best regressor per example)."""
    err = (F.normalize(pred.float(), dim=-1) - F.normalize(target.float(), dim=-1)[:, None]).pow(2).sum(-1)
    best, idx = err.min(1)
    return best.mean(), idx


@register
class FutureFeatures(VideoMethod):
    name = "future-features"
    paper = "Vondrick, Pirsiavash & Torralba 2016, Anticipating Visual Representations from Unlabeled Video"
    Config = FutureFeaturesConfig

    def __init__(self, cfg: FutureFeaturesConfig, shape):
        super().__init__(cfg, shape)
        self.encoder = self.make_encoder()
        self.target_dim = self.encoder.out_dim
        self.frozen = cfg.target != "momentum"
        if self.frozen:
            from ...run import load_encoder

            try:
                target = load_encoder(cfg.target)
            except UnsupError as e:
                raise UnsupError(f"future-features: target={cfg.target!r} must be 'momentum' or a run directory ({e})") from None
            with torch.no_grad():
                self.target_dim = target(torch.zeros(2, *shape)).shape[1]
        else:
            target = momentum_copy(self.encoder)
        self.target = target.requires_grad_(False)
        d = self.encoder.out_dim
        self.regressor = nn.Sequential(nn.Linear(d, cfg.hidden), nn.BatchNorm1d(cfg.hidden), nn.ReLU(inplace=True),
                                       nn.Linear(cfg.hidden, cfg.mixtures * self.target_dim))
        self.tau = cfg.momentum_base

    def anticipate(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, K, D) predicted future representations."""
        return self.regressor(self.encoder(frames)).view(len(frames), self.cfg.mixtures, self.target_dim)

    def training_loss(self, images):
        k = self.cfg.ahead
        x = self.sequences(images, k + 1)
        b, t = x.shape[:2]
        now, later = x[:, : t - k].flatten(0, 1), x[:, k:].flatten(0, 1)  # every (t, t+k) pair
        with torch.no_grad():
            self.target.train(not self.frozen)
            target = self.target(later)
        loss, idx = anticipation_loss(self.anticipate(now), target)
        usage = torch.bincount(idx, minlength=self.cfg.mixtures).float() / len(idx)
        return loss, {"regressor_usage_max": float(usage.max())}

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        if self.frozen:
            return
        self.tau = cosine_momentum(self.cfg.momentum_base, progress)
        ema_update(self.target, self.encoder, self.tau)

    @torch.no_grad()
    def retrieval(self, data, batch_size: int = 100, limit: int | None = 1000) -> dict:
        """Anticipation scored by retrieval: among a batch's true frames t+k, is
        the nearest (in target space) to the predicted representation the right
        one? Against the baseline of using frame t's own representation."""
        k = self.cfg.ahead
        was = self.training
        self.eval()
        self.target.eval()
        dev = next(self.parameters()).device
        hits = base = n = 0
        for batch in data.batches(batch_size, limit):
            x = to_float(batch.to(dev))
            t = x.shape[1] // 2 - k // 2
            now, later = x[:, t], x[:, t + k]
            tgt = F.normalize(self.target(later).float(), dim=1)
            pred = F.normalize(self.anticipate(now).float(), dim=-1)  # (B, K, D)
            best = (pred @ tgt.T).amax(1)  # best of the K regressors per candidate
            cur = F.normalize(self.target(now).float(), dim=1) @ tgt.T
            right = torch.arange(len(x), device=dev)
            hits += int((best.argmax(1) == right).sum())
            base += int((cur.argmax(1) == right).sum())
            n += len(x)
        self.train(was)
        return {"future_retrieval_top1": hits / n, "current_frame_top1": base / n, "candidates": batch_size, "sequences": n}

    eval_sequences = 1000  # retrieval is cheap: 10 batches of 100 candidates

    def family_metrics(self, data: str, device) -> dict[str, float]:
        """It predicts representations, not frames, so no frame MSE: anticipation
        scored by ``retrieval`` on the first ``eval_sequences`` sequences of the
        fixed held-out test set (100 candidates per batch):
        ``future_retrieval_top1`` from the predicted representation against
        ``current_frame_top1`` from frame t's own (chance 0.01)."""
        self.to(device)
        r = self.retrieval(video.load(type(self).training_data(data), "test"), limit=self.eval_sequences)
        return {k: float(r[k]) for k in ("future_retrieval_top1", "current_frame_top1")}

    @torch.no_grad()
    def figures(self, data, out_dir: Path) -> list[Path]:
        """Per row: frame t, the true frame t+k, and the frames retrieved (from a
        batch of candidates at t+k) nearest to each regressor's prediction."""
        from ...report.figures import save_image_grid

        k = self.cfg.ahead
        was = self.training
        self.eval()
        self.target.eval()
        dev = next(self.parameters()).device
        x = to_float(self.video_test(data).images[slice(0, 64)].to(dev))
        now, later = x[:, 0], x[:, k]
        tgt = F.normalize(self.target(later).float(), dim=1)
        pred = F.normalize(self.anticipate(now).float(), dim=-1)
        nearest = (pred @ tgt.T).argmax(-1)  # (B, K)
        self.train(was)
        rows = 6
        cells = [torch.stack([now[i], later[i], *later[nearest[i]]]) for i in range(rows)]
        path = Path(out_dir) / "anticipation.png"
        save_image_grid(torch.cat(cells).cpu(), path, nrow=2 + self.cfg.mixtures,
                        title=f"frame t / true t+{k} / nearest t+{k} frames to each of the {self.cfg.mixtures} predictions")
        return [path]
