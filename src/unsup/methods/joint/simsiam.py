"""SimSiam: Chen & He, "Exploring Simple Siamese Representation Learning",
CVPR 2021.

One network, two views: a predictor MLP maps one view's projection to the
other's, and the loss is the negative cosine similarity, symmetrised. The
choices that matter per the paper: the stop-gradient on the target branch
(without it the outputs collapse to a constant), the predictor with its
bottleneck (hidden width a quarter of the output), batch norm in the projector
including its output, and a predictor learning rate that is not decayed. No
negatives, no momentum encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data.augment import views
from ...losses import negative_cosine
from ...nets.heads import projection_mlp
from ...registry import register
from ..base import MethodConfig
from .common import JointMethod, spread


@dataclass
class SimSiamConfig(MethodConfig):
    proj_dim: int = 2048  # the paper's projector output and hidden width
    proj_layers: int = 2  # the paper's CIFAR projector (3 layers on ImageNet)
    pred_hidden: int = 512  # the bottleneck: 2048 -> 512 -> 2048
    fix_pred_lr: bool = True  # the predictor keeps its base learning rate (the paper's section 4.2)
    # the paper: SGD, lr 0.05 x batch/256 (0.03 on CIFAR), weight decay 1e-4 (5e-4 on CIFAR), 100-800 epochs;
    # for a few epochs on a CPU, AdamW at 5e-4 (batch 256): chosen on the validation split over 5e-4 / 1e-3 / 3e-3
    # (benchmarks/plans/modern_validation.yaml, results/modern_validation.md)
    lr: float = 5e-4
    # the paper: 512 (and SimSiam loses little from 64 to 2048, its table 2). In a CPU budget of minutes the number of
    # updates decides: on the validation split (4 minutes) batch 64 scored above 256 at all four probes (linear
    # 66.2 / 79.1 vs 64.9 / 78.1 at 10 / 100 labels per class, k-NN 59.0 / 71.4 vs 56.6 / 69.7;
    # benchmarks/plans/batch_screens.yaml, results/modern_validation.md)
    batch_size: int = 64


@register
class SimSiam(JointMethod):
    name = "simsiam"
    paper = "Chen & He 2021, Exploring Simple Siamese Representation Learning"
    Config = SimSiamConfig

    def __init__(self, cfg: SimSiamConfig, shape):
        super().__init__(cfg, shape)
        self.encoder = self.make_encoder()
        self.projector = projection_mlp(self.encoder.out_dim, cfg.proj_dim, cfg.proj_dim, layers=cfg.proj_layers, last_bn=True)
        self.predictor = projection_mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim)

    def configure_optimizers(self, make):
        rest = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("predictor.")]
        return [make([{"params": rest}, {"params": list(self.predictor.parameters()), "fixed_lr": self.cfg.fix_pred_lr}])]

    def training_loss(self, images):
        x = torch.cat(views(images, [self.cfg.augment] * 2))
        z = self.projector(self.encoder(x))
        p1, p2 = self.predictor(z).chunk(2)
        z1, z2 = z.detach().chunk(2)  # the stop-gradient
        loss = (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2
        return loss, {"spread": spread(z1)}
