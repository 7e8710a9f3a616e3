"""VICReg: Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance
Regularization for Self-Supervised Learning", ICLR 2022.

Three terms on the two views' embeddings: invariance (mean squared distance
between the views), variance (a hinge keeping every dimension's standard
deviation over the batch above 1, the term that prevents collapse) and
covariance (decorrelating the dimensions), weighted 25 / 25 / 1. The choices
that matter per the paper: the variance hinge on the standard deviation (with
eps, not on the variance), each branch regularised on its own, statistics over
the global batch (gathered under torchrun), and a wide expander (three layers,
batch norm and ReLU after the first two). No negatives, no predictor, no
momentum encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data.augment import views
from ...losses import vicreg_terms
from ...nets.heads import projection_mlp
from ...registry import register
from ..base import MethodConfig
from .common import JointMethod, spread


@dataclass
class VICRegConfig(MethodConfig):
    proj_dim: int = 2048  # the paper's 8192 for a 2048-d ResNet-50; 2048 for this 256-d (or ResNet-18's 512-d) encoder
    sim_coeff: float = 25.0  # the paper's lambda / mu / nu
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    eps: float = 1e-4
    # the paper: LARS, base lr 0.2 x batch/256, weight decay 1e-6, batch 2048, 1000 epochs; for a few epochs on a
    # CPU, AdamW at 5e-4 (batch 256): chosen on the validation split over 2.5e-4 / 5e-4 / 1e-3 / 3e-3
    # (benchmarks/plans/modern_validation.yaml, results/modern_validation.md)
    lr: float = 5e-4


@register
class VICReg(JointMethod):
    name = "vicreg"
    paper = "Bardes, Ponce & LeCun 2022, VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning"
    Config = VICRegConfig

    def __init__(self, cfg: VICRegConfig, shape):
        super().__init__(cfg, shape)
        self.encoder = self.make_encoder()
        self.projector = projection_mlp(self.encoder.out_dim, cfg.proj_dim, cfg.proj_dim, layers=3)

    def training_loss(self, images):
        cfg = self.cfg
        x = torch.cat(views(images, [cfg.augment] * 2))
        z1, z2 = self.projector(self.encoder(x)).chunk(2)
        inv, var, cov = vicreg_terms(z1, z2, cfg.eps)
        loss = cfg.sim_coeff * inv + cfg.std_coeff * var + cfg.cov_coeff * cov
        return loss, {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach(),
                      "spread": spread(z1)}
