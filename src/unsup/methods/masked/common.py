"""What MAE and I-JEPA share: the ViT they train, token gathering, patches
as pixels, and the narrow transformer (MAE's decoder, I-JEPA's predictor)
that fills in mask tokens at given positions from known tokens."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block, init_weights_vit_timm
from torch import nn

from ...errors import UnsupError
from ...nets.vit import ViT, sincos_2d


def vit_of(encoder, method: str) -> ViT:
    """The ViT inside ``encoder``, or one line saying the method needs one."""
    net = getattr(encoder, "net", None)
    if not isinstance(net, ViT):
        raise UnsupError(f"{method} masks patch tokens, so it needs a ViT: backbone=vit-tiny (got {type(net).__name__})")
    return net


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[b, idx[b]]`` for tokens ``(B, N, D)`` and indices ``(B, K)`` -> ``(B, K, D)``."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, N, patch * patch * C)``, patches row-major as the ViT's tokens."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, channels: int) -> torch.Tensor:
    """The inverse of ``patchify`` for square images."""
    b, n, _ = patches.shape
    g = int(round(n**0.5))
    x = patches.reshape(b, g, g, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, g * patch, g * patch)


class TokenPredictor(nn.Module):
    """A narrow ViT: known tokens (projected to ``width``, plus the fixed
    sine-cosine embedding of their grid positions) and one shared learned mask
    token at each query position (plus its position embedding) go through
    ``depth`` transformer blocks (timm's); the outputs at the queries are
    projected to ``out_dim``. ``prefix`` tokens (MAE's class token) join
    without a position."""

    def __init__(self, in_dim: int, width: int, depth: int, heads: int, out_dim: int, grid: int):
        super().__init__()
        if width % heads:
            raise UnsupError(f"the predictor width {width} is not divisible by its {heads} heads")
        self.embed = nn.Linear(in_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_dim)
        self.register_buffer("pos", sincos_2d(grid, width)[None], persistent=False)
        self.apply(init_weights_vit_timm)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def _at(self, idx: torch.Tensor) -> torch.Tensor:
        return gather_tokens(self.pos.expand(len(idx), -1, -1), idx)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, queries: torch.Tensor,
                prefix: torch.Tensor | None = None) -> torch.Tensor:
        """tokens ``(B, K, in_dim)`` at grid positions ``(B, K)``; queries ``(B, Q)`` -> ``(B, Q, out_dim)``."""
        known = self.embed(tokens) + self._at(positions)
        masks = self.mask_token.to(known.dtype) + self._at(queries)
        parts = ([self.embed(prefix)] if prefix is not None and prefix.shape[1] else []) + [known, masks]
        x = self.norm(self.blocks(torch.cat(parts, 1)))
        return self.head(x[:, -queries.shape[1]:])
