"""Barlow Twins: Zbontar, Jing, Misra, LeCun & Deny, "Barlow Twins:
Self-Supervised Learning via Redundancy Reduction", ICML 2021.

The cross-correlation matrix between the two views' embeddings, each
standardised over the batch, is pushed to the identity: diagonal terms to 1
(invariance), off-diagonal terms to 0 (redundancy reduction), the latter
weighted by lambda = 5e-3. The choices that matter per the paper: a wide
projector (three layers, the first two with batch norm and ReLU) whose width
helps, the batch standardisation (over the global batch under torchrun), and
the off-diagonal weight. No negatives, no predictor, no momentum encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data.augment import views
from ...losses import barlow_twins
from ...nets.heads import projection_mlp
from ...registry import register
from ..base import MethodConfig
from .common import JointMethod, spread


@dataclass
class BarlowTwinsConfig(MethodConfig):
    proj_dim: int = 2048  # the paper's 8192 for a 2048-d ResNet-50; 2048 for this 256-d (or ResNet-18's 512-d) encoder
    lambd: float = 5e-3  # the off-diagonal weight (the paper's)
    # the paper: LARS, lr 0.2 (weights) / 0.0048 (biases), weight decay 1.5e-6, batch 2048, 1000 epochs; for a few
    # epochs on a CPU the shared AdamW setting of SimCLR here (lr 1e-3, batch 256) is used
    lr: float = 1e-3


@register
class BarlowTwins(JointMethod):
    name = "barlow-twins"
    paper = "Zbontar et al. 2021, Barlow Twins: Self-Supervised Learning via Redundancy Reduction"
    Config = BarlowTwinsConfig

    def __init__(self, cfg: BarlowTwinsConfig, shape):
        super().__init__(cfg, shape)
        self.encoder = self.make_encoder()
        self.projector = projection_mlp(self.encoder.out_dim, cfg.proj_dim, cfg.proj_dim, layers=3)

    def training_loss(self, images):
        x = torch.cat(views(images, [self.cfg.augment] * 2))
        z1, z2 = self.projector(self.encoder(x)).chunk(2)
        return barlow_twins(z1, z2, self.cfg.lambd), {"spread": spread(z1)}
