"""The shape every classification pretext task shares (after mmselfsup): a
generator of task inputs and targets from a uint8 batch, on the device, and a
head over the shared encoder's features. The loss is cross-entropy; the
pretext accuracy is logged as ``pretext_acc`` so a user sees during
pretraining whether the task is being solved (and chance is ``1/classes``).

Patch tasks train the encoder on patches but it is probed on whole images, so
their batch-norm running statistics are kept for whole images: the patch
forward pass uses its own batch statistics without recording them, and a
no-gradient pass over the batch's whole images records them (the weights
are learnt from patches only). ``pretext_accuracy`` therefore reads patches
with their own batch statistics too (read with the whole-image statistics,
jigsaw's held-out accuracy fell from 82% to 37% at 15k puzzles, a measurement
artefact, not overfitting: every task is fresh)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...data.augment import to_float
from ..base import Method


@contextlib.contextmanager
def stats_frozen(module: nn.Module):
    """Batch norm in train mode that does not update its running statistics."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


def mlp_head(in_dim: int, hidden: int, classes: int) -> nn.Sequential:
    """The papers' fc7/fc8 on concatenated features, scaled down."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, classes))


class PretextTask(Method):
    family = "pretext"
    classes: int = 2  # set by each task
    whole_image_stats: ClassVar[bool] = False  # patch tasks: batch-norm statistics from whole images

    def make_task(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(B, C, H, W)`` on the device -> (task inputs, int64 targets)."""
        raise NotImplementedError

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_loss(self, images):
        inputs, targets = self.make_task(images)
        if self.whole_image_stats:
            with stats_frozen(self.encoder):
                logits = self.logits(inputs)
            with torch.no_grad():  # a few whole images are enough for the statistics
                self.encoder(to_float(images[:64]))
        else:
            logits = self.logits(inputs)
        loss = F.cross_entropy(logits.float(), targets)
        acc = (logits.detach().argmax(1) == targets).float().mean()
        return loss, {"pretext_acc": float(acc)}

    @torch.no_grad()
    def pretext_accuracy(self, images: torch.Tensor, batch_size: int = 256) -> float:
        """Accuracy on fresh tasks generated from ``images`` (e.g. the test split)."""
        was = self.training
        self.eval()
        hits = total = 0
        with contextlib.ExitStack() as stack:
            if self.whole_image_stats:
                # the encoder's running statistics describe whole images, not patches: read patches with
                # their own batch statistics, as in training (frozen, so nothing is recorded)
                self.encoder.train()
                stack.enter_context(stats_frozen(self.encoder))
            for i in range(0, len(images), batch_size):
                inputs, targets = self.make_task(images[i : i + batch_size])
                hits += int((self.logits(inputs).argmax(1) == targets).sum())
                total += len(targets)
        self.train(was)
        return hits / max(1, total)

    eval_images = 2000  # held-out images the pretext accuracy is measured on

    def family_metrics(self, data: str, device) -> dict[str, float]:
        """``pretext_accuracy`` on fresh tasks made from the first
        ``eval_images`` test images of ``data`` (drawn with seed 0, the
        caller's random state untouched), and ``pretext_chance`` (1 / classes)."""
        dev = torch.device(device)
        _train, test = self.probe_datasets(data)
        self.to(dev)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(0)
            acc = self.pretext_accuracy(test.images[: self.eval_images].to(dev))
        return {"pretext_accuracy": acc, "pretext_chance": 1 / self.classes}

    def task_picture(self, images: torch.Tensor) -> torch.Tensor | None:
        """Task inputs laid out as images (N, C, h, w) for the figure."""
        return None

    def figures(self, data, out_dir: Path) -> list[Path]:
        from ...report.figures import save_image_grid

        with torch.no_grad():
            pic = self.task_picture(data.images[:8])
        if pic is None:
            return []
        path = Path(out_dir) / "pretext_task.png"
        save_image_grid(pic.float().clamp(0, 1).cpu(), path, nrow=max(1, len(pic) // 8), scale=3)
        return [path]
