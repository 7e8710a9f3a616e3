"""SimCLR: Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for
Contrastive Learning of Visual Representations", ICML 2020.

Two random views of each image (crop + flip + jitter + blur); encoder, then a
2-layer MLP projection head; the NT-Xent loss: each view must pick its
partner among the 2N-1 other views of the batch, with cosine similarity over
a temperature. The choices that matter per the paper: strong crop + colour
augmentation, the projection head (features are taken before it), a large
batch of negatives (gathered across processes here under torchrun).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data.augment import views
from ...losses import nt_xent
from ...nets.heads import projection_mlp
from ...registry import register
from ..base import MethodConfig
from .common import JointMethod


@dataclass
class SimCLRConfig(MethodConfig):
    temperature: float = 0.5  # the paper's CIFAR-10 setting
    proj_hidden: int = 512
    proj_dim: int = 128


@register
class SimCLR(JointMethod):
    name = "simclr"
    paper = "Chen et al. 2020, A Simple Framework for Contrastive Learning of Visual Representations"
    Config = SimCLRConfig

    def __init__(self, cfg: SimCLRConfig, shape):
        super().__init__(cfg, shape)
        self.encoder = self.make_encoder()
        self.projector = projection_mlp(self.encoder.out_dim, cfg.proj_hidden, cfg.proj_dim)

    def training_loss(self, images):
        z1, z2 = self.projector(self.encoder(torch.cat(views(images, [self.cfg.augment] * 2)))).chunk(2)
        return nt_xent(z1, z2, self.cfg.temperature), {}
