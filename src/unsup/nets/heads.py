"""The heads of the joint-embedding methods, written once.

``projection_mlp`` builds every projector and predictor of SimCLR, MoCo,
BYOL, SimSiam, Barlow Twins and VICReg: they differ only in depth, widths,
and whether the output is batch-normalised; each method's config names its
paper's shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def projection_mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2, last_bn: bool = False,
                   hidden_bn: bool = True) -> nn.Sequential:
    """The MLP head of the joint-embedding papers: (Linear-BN-ReLU) x (layers-1), Linear.

    ``last_bn`` ends with a non-affine BatchNorm (SimSiam's projector, MoCo v3's
    projector); ``hidden_bn=False`` drops the hidden BatchNorms (MoCo v2's
    head: Linear-ReLU-Linear). A Linear followed by a BatchNorm has no bias,
    which the BatchNorm would cancel.
    """
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods.append(nn.Linear(d, hidden, bias=not hidden_bn))
        if hidden_bn:
            mods.append(nn.BatchNorm1d(hidden))
        mods.append(nn.ReLU(inplace=True))
        d = hidden
    mods.append(nn.Linear(d, out_dim, bias=not last_bn))
    if last_bn:
        mods.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*mods)


class DINOHead(nn.Module):
    """DINO's head (Caron et al., "Emerging Properties in Self-Supervised Vision
    Transformers", ICCV 2021, section 3 and appendix): an MLP (``layers`` Linear
    layers, GELU, no batch norm: ``in_dim -> hidden -> ... -> bottleneck``), its
    output L2-normalised, then a weight-normalised Linear to ``out_dim``
    prototypes whose weight norm is fixed at 1 (the paper's ``norm_last_layer``:
    each output is a cosine, which keeps training stable). ``last_layer.weight``
    holds the directions; a method freezes it early in training, as the paper does.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 2048, bottleneck: int = 256, layers: int = 3):
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [bottleneck]
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < layers - 1:
                mods.append(nn.GELU())
        self.mlp = nn.Sequential(*mods)
        for m in self.mlp:
            if isinstance(m, nn.Linear):  # the paper's initialisation
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.Linear(bottleneck, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.last_layer.weight, dim=1))
