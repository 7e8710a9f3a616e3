"""Exemplar CNN: Dosovitskiy, Springenberg, Riedmiller & Brox,
"Discriminative Unsupervised Feature Learning with Convolutional Neural
Networks", NIPS 2014.

A fixed set of N seed patches, each its own surrogate class; the network
classifies randomly transformed versions of them by seed (an N-way softmax).
The choices that matter: many surrogate classes (8000 in the paper; 2000 by
default here, sized for a CPU) and strong transformations the features must
become invariant to: translation (up to 0.2 of the patch side), scale (0.7 to
1.4), rotation (up to 20 degrees), contrast (the intensity raised to a power
in [0.25, 4], multiplied by 0.7 to 1.4, plus -0.1 to 0.1; the paper's
"contrast 2" on the V channel; grayscale here, so no hue shift). Seeds are
drawn where the gradient is large, as in the paper. Transformed samples are
generated on the fly (the paper precomputed K per class), one affine warp for
the whole batch.

Geometry: the paper takes 32x32 seeds from 96x96 STL-10 images (patch_frac
1/3). Fashion-MNIST objects fill their 28x28 frame, so by default the seed is
the whole image (patch_frac 1.0) kept at 28x28; on STL-10 set patch_frac=0.333
for the paper's 32-pixel seeds.

Batch size: 64 by default (the paper used SGD with small mini-batches). In a
CPU budget of 40k views of 500 classes, batches of 256 (156 steps) reached 7%
surrogate accuracy and an encoder no better than random on the linear probe;
batches of 64 (625 steps, the same time) reached 24% and beat the random
encoder on all four probe numbers (benchmarks/results/pretext.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...data.augment import to_float
from ...errors import UnsupError
from ...registry import register
from .patches import gather_patches, require_fit
from .task import PretextTask


@dataclass
class ExemplarConfig(PretextTask.Config):
    surrogate_classes: int = 2000
    patch_frac: float = 1.0  # seed side / image side (1/3 in the paper on 96x96 images)
    translate: float = 0.2  # of the patch side
    scale: tuple[float, float] = (0.7, 1.4)
    rotate: float = 20.0  # degrees
    power: tuple[float, float] = (0.25, 4.0)  # contrast: intensity ** power (log-uniform)
    multiply: tuple[float, float] = (0.7, 1.4)
    add: float = 0.1
    lr: float = 2e-3
    batch_size: int = 64  # many small steps: see the module docstring


def strong_transform(seeds: torch.Tensor, cfg: ExemplarConfig) -> torch.Tensor:
    """One random transformation of each float seed (B, C, p, p), batched."""
    b, dev = len(seeds), seeds.device
    def u(lo, hi):
        return torch.rand(b, device=dev) * (hi - lo) + lo
    ang = u(-cfg.rotate, cfg.rotate) * math.pi / 180
    s = torch.exp(u(math.log(cfg.scale[0]), math.log(cfg.scale[1])))
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(ang) / s, -torch.sin(ang) / s
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(ang) / s, torch.cos(ang) / s
    theta[:, :, 2] = (torch.rand(b, 2, device=dev) * 2 - 1) * cfg.translate * 2  # grid units: the side is 2
    grid = F.affine_grid(theta, tuple(seeds.shape), align_corners=False)
    x = F.grid_sample(seeds, grid, mode="bilinear", padding_mode="zeros" if cfg.patch_frac >= 1 else "border", align_corners=False)
    p = torch.exp(u(math.log(cfg.power[0]), math.log(cfg.power[1]))).view(b, 1, 1, 1)
    x = x.clamp(0, 1) ** p * u(*cfg.multiply).view(b, 1, 1, 1) + u(-cfg.add, cfg.add).view(b, 1, 1, 1)
    return x.clamp(0, 1)


@register
class Exemplar(PretextTask):
    name = "exemplar"
    paper = "Dosovitskiy et al. 2014, Discriminative Unsupervised Feature Learning with Convolutional Neural Networks"
    Config = ExemplarConfig

    def __init__(self, cfg: ExemplarConfig, shape):
        super().__init__(cfg, shape)
        c, h, _ = self.shape
        if cfg.surrogate_classes < 2:
            raise UnsupError(f"exemplar: surrogate_classes={cfg.surrogate_classes}; choose at least 2")
        if not 0 < cfg.patch_frac <= 1:
            raise UnsupError(f"exemplar: patch_frac={cfg.patch_frac} must be in (0, 1]")
        self.patch = round(cfg.patch_frac * h)
        require_fit(self.name, 8, self.patch, f"a seed patch of {self.patch} pixels (patch_frac {cfg.patch_frac} of {h})", "raise patch_frac")
        self.classes = cfg.surrogate_classes
        # the surrogate classes: chosen from the training data at the first epoch, saved with the method
        self.register_buffer("seeds", torch.zeros(self.classes, c, self.patch, self.patch, dtype=torch.uint8))
        self.register_buffer("chosen", torch.zeros((), dtype=torch.bool))
        self.encoder = self.make_encoder()
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(self.encoder.out_dim, self.classes))

    def check_training_set(self, data) -> None:
        n = len(data)
        if n < self.classes:
            raise UnsupError(f"exemplar: {self.classes} surrogate classes need as many training images, got {n}; "
                             f"lower -o surrogate_classes to at most {n}")

    @torch.no_grad()
    def choose_seeds(self, images: torch.Tensor, seed: int = 0) -> None:
        """N images at random, and in each a seed patch drawn with probability
        proportional to its gradient energy (the paper's sampling)."""
        n = len(images)
        self.check_training_set(images)
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n, generator=g)[: self.classes].to(images.device)
        x = to_float(images[idx])
        h, p = x.shape[-1], self.patch
        if p == h:
            self.seeds.copy_(images[idx])
        else:
            gy, gx = x.diff(dim=2)[..., :, :-1], x.diff(dim=3)[..., :-1, :]
            energy = (gx ** 2 + gy ** 2).sum(1, keepdim=True)  # (N, 1, h-1, h-1)
            score = F.avg_pool2d(energy, p - 1, stride=1).flatten(1) + 1e-8  # per top-left corner
            pick = torch.multinomial(score.cpu(), 1, generator=g).to(x.device)[:, 0]
            side = h - p + 1
            top, left = (pick // side)[:, None], (pick % side)[:, None]
            self.seeds.copy_(gather_patches(images[idx], top, left, p)[:, 0])
        self.chosen.fill_(True)

    def on_epoch_start(self, data, epoch):
        if not bool(self.chosen):
            self.choose_seeds(data.images)

    def make_task(self, images):
        if not bool(self.chosen):  # used without the training loop: draw the classes from this batch's source
            raise UnsupError("exemplar: no surrogate classes yet; call choose_seeds(train_images) first")
        b, dev = len(images), images.device
        target = torch.randint(0, self.classes, (b,), device=dev)
        return strong_transform(to_float(self.seeds[target]), self.cfg), target

    def logits(self, inputs):
        return self.head(self.encoder(inputs))

    def pretext_accuracy(self, images=None, batch_size: int = 256) -> float:
        """Accuracy on fresh transformations of the surrogate classes (the only held-out data the task has)."""
        return super().pretext_accuracy(self.seeds[: min(len(self.seeds), 2048)], batch_size)

    def task_picture(self, images):
        if not bool(self.chosen):
            return None
        ids = torch.arange(8, device=self.seeds.device).repeat_interleave(8)
        return strong_transform(to_float(self.seeds[ids]), self.cfg)
