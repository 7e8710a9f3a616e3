"""ViT-tiny for small images: timm's ``VisionTransformer``, unchanged.

Width 192, depth 12, 3 heads (Touvron et al. 2021's ViT-Ti; ``vit_tiny_patch16_224``
in timm). The patch size follows the image size (``patch_size_for``: 4 pixels
for 28 and 32 px images, 7x7 and 8x8 tokens), and the position embeddings are
the fixed 2-D sine-cosine ones MAE, I-JEPA and MoCo v3 use (``pos_embed="sincos"``;
``"learned"`` keeps timm's trained ones). ``pool="token"`` prepends a class
token and takes it as the feature (MAE's linear probe); ``pool="avg"`` has no
class token and averages the patch tokens. Either way the final layer norm acts
on every token (``fc_norm=False``: timm would otherwise, for ``avg``, normalise
the average instead), so the tokens a masked method passes on (I-JEPA's
context to its predictor) are normalised, as in the papers' encoders.
``dynamic_size=True`` also takes images of other sizes (multi-crop's small
local crops), interpolating the position embeddings (timm's
``dynamic_img_size``). A ``ViT`` is a timm ``VisionTransformer`` built by ``timm_arguments()``,
so its state dict loads with ``strict=True`` into
``timm.create_model("vit_tiny_patch16_224", **timm_arguments())``.

The masked methods run only some tokens through the blocks:
``patch_tokens`` (patch embedding plus position) and ``encode`` (class token,
blocks, final norm) split timm's ``forward_features`` at that point.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from ..errors import UnsupError

PATCH_SIZES = (16, 8, 4, 2)
MIN_GRID = 7  # tokens a side: the patch size is the largest that keeps at least this many


def patch_size_for(image_size: int) -> int:
    """The largest of ``PATCH_SIZES`` that divides the image into at least 7x7 patches."""
    for p in PATCH_SIZES:
        if image_size % p == 0 and image_size // p >= MIN_GRID:
            return p
    raise UnsupError(f"no patch size in {PATCH_SIZES} splits {image_size}x{image_size} images into at least "
                     f"{MIN_GRID}x{MIN_GRID} patches; pass backbone_options={{patch_size: P}} with P dividing {image_size}")


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings ``(grid * grid, dim)``, row-major:
    half the channels encode the row, half the column (Vaswani et al.'s
    frequencies 1 / 10000^(2i/d))."""
    if dim % 4:
        raise UnsupError(f"sine-cosine position embeddings need a width divisible by 4, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def encode(coord):
        angles = coord.reshape(-1, 1) * freqs
        return torch.cat([angles.sin(), angles.cos()], 1)

    return torch.cat([encode(rows), encode(cols)], 1).float()


class ViT(VisionTransformer):
    """timm's VisionTransformer with no classifier; ``forward`` gives the pooled
    feature ``(B, out_dim)``, ``forward_features`` the tokens ``(B, T, out_dim)``
    (class token first when ``pool="token"``)."""

    def __init__(self, in_channels: int, image_size: int, patch_size: int | None = None, depth: int = 12,
                 embed_dim: int = 192, num_heads: int = 3, pool: str = "token", pos_embed: str = "sincos",
                 dynamic_size: bool = False):
        if pool not in ("token", "avg"):
            raise UnsupError(f"ViT pool must be 'token' (class token) or 'avg' (mean of the patch tokens), got {pool!r}")
        if pos_embed not in ("sincos", "learned"):
            raise UnsupError(f"ViT pos_embed must be 'sincos' (fixed) or 'learned', got {pos_embed!r}")
        patch_size = patch_size or patch_size_for(image_size)
        if image_size % patch_size:
            raise UnsupError(f"patch_size {patch_size} does not divide {image_size}x{image_size} images")
        if embed_dim % num_heads:
            raise UnsupError(f"ViT embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        arguments = {"img_size": image_size, "patch_size": patch_size, "in_chans": in_channels, "num_classes": 0,
                     "global_pool": pool, "class_token": pool == "token", "embed_dim": embed_dim, "depth": depth,
                     "num_heads": num_heads, "fc_norm": False, **({"dynamic_img_size": True} if dynamic_size else {})}
        super().__init__(**arguments)
        self.arguments = arguments
        self.out_dim = embed_dim
        self.patch = patch_size
        self.grid = image_size // patch_size
        if pos_embed == "sincos":
            with torch.no_grad():  # the class token's entry stays zero, as in MAE
                self.pos_embed.zero_()
                self.pos_embed[0, self.num_prefix_tokens:] = sincos_2d(self.grid, embed_dim)
            self.pos_embed.requires_grad_(False)

    def timm_arguments(self) -> dict:
        """Keyword arguments of ``timm.create_model("vit_tiny_patch16_224", ...)`` for the same network."""
        return dict(self.arguments)

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images of the built size -> patch embeddings plus their positions ``(B, N, D)``, row-major."""
        tokens = self.patch_embed(x)
        if tokens.ndim == 4:  # dynamic_size: timm keeps the grid (B, h, w, D) for its own position step
            tokens = tokens.flatten(1, 2)
        return tokens + self.pos_embed[:, self.num_prefix_tokens:]

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Any subset of ``patch_tokens`` -> the transformer's output tokens (the
        class token first when there is one); all of them give ``forward_features``."""
        if self.cls_token is not None:
            cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([cls, tokens], 1)
        return self.norm(self.blocks(self.norm_pre(tokens)))
