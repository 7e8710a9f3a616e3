"""Rotation prediction: Gidaris, Singh & Komodakis, "Unsupervised
Representation Learning by Predicting Image Rotations", ICLR 2018.

Each image is rotated by 0, 90, 180 and 270 degrees and the network classifies
the rotation (4-way). The choice that matters per the paper: all four rotated
copies of an image go into the same batch (``all_rotations``), which they
found better than one random rotation per image; rotations by multiples of 90
degrees leave no interpolation artefacts to exploit. The geometry is the whole
image, so nothing is rescaled: 28x28 stays 28x28, STL-10 stays 96x96 (the
paper's CIFAR setting used whole 32x32 images too). Classifier: an MLP head on
the global-pooled backbone features (the paper's non-linear classifier on top
of the conv blocks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data.augment import to_float
from ...registry import register
from .task import PretextTask, mlp_head


def rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate sample i by ``k[i]`` * 90 degrees (square images), batched."""
    r1, r2, r3 = x.rot90(1, (2, 3)), x.rot90(2, (2, 3)), x.rot90(3, (2, 3))
    kk = k.view(-1, 1, 1, 1)
    return torch.where(kk == 0, x, torch.where(kk == 1, r1, torch.where(kk == 2, r2, r3)))


@dataclass
class RotationConfig(PretextTask.Config):
    all_rotations: bool = True  # the 4 rotated copies of each image in one batch
    flip: float = 0.5  # random horizontal flip before rotating
    hidden: int = 256
    lr: float = 2e-3
    batch_size: int = 64  # images; 4x as many rotated copies


@register
class Rotation(PretextTask):
    name = "rotation"
    paper = "Gidaris, Singh & Komodakis 2018, Unsupervised Representation Learning by Predicting Image Rotations"
    Config = RotationConfig
    classes = 4

    def __init__(self, cfg: RotationConfig, shape):
        super().__init__(cfg, shape)
        self.encoder = self.make_encoder()
        self.head = mlp_head(self.encoder.out_dim, cfg.hidden, 4)

    def make_task(self, images):
        x = to_float(images)
        b, dev = len(x), x.device
        if self.cfg.flip > 0:
            x = torch.where((torch.rand(b, 1, 1, 1, device=dev) < self.cfg.flip), x.flip(3), x)
        if self.cfg.all_rotations:
            k = torch.arange(4, device=dev).repeat_interleave(b)
            x = x.repeat(4, 1, 1, 1)
        else:
            k = torch.randint(0, 4, (b,), device=dev)
        return rotate(x, k), k

    def logits(self, inputs):
        return self.head(self.encoder(inputs))

    def task_picture(self, images):
        x = to_float(images[:8])
        return torch.cat([x.rot90(k, (2, 3)) for k in range(4)])
