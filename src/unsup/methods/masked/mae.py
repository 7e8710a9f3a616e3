"""MAE: He, Chen, Xie, Li, Dollar & Girshick, "Masked Autoencoders Are
Scalable Vision Learners", CVPR 2022.

Split the image into patches, hide a random 75% of them per image (the
paper's ratio, found best for both fine-tuning and linear probing), run the
ViT encoder on the visible 25% only, and let a light decoder predict the
pixels of every hidden patch from the encoded visible tokens plus one shared
mask token per hidden position. The loss is the mean squared error on the
hidden patches only, against each patch's pixels normalised by that patch's
own mean and standard deviation (``norm_pix_loss``, which the paper reports
improves the representation). The choices that matter per the paper: the
high mask ratio, the encoder seeing no mask tokens, the per-patch normalised
target, and little augmentation (random resized crop and flip).

Scaled to 28x28 Fashion-MNIST on a CPU: ViT-tiny with 4x4-pixel patches (7x7
tokens, 12 visible), fixed sine-cosine positions as in the paper, a decoder
of 4 blocks of width 128 (the paper: 8 blocks of width 512 behind ViT-L;
its ablation shows a deeper decoder helps the linear probe). The encoder
exported for probing runs on all patches; its feature is the class token, as
in the paper's linear probe (which puts a BatchNorm without affine before the
classifier: the protocol's linear probe standardises features, the same map).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ...data import augment
from ...data.augment import AugmentConfig
from ...errors import UnsupError
from ...registry import register
from ..base import Method, MethodConfig
from .common import TokenPredictor, gather_tokens, patchify, unpatchify, vit_of


def random_masking(batch: int, tokens: int, ratio: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, a random ``int(tokens * (1 - ratio))`` token indices to keep and
    the rest to hide: ``(keep (B, K), hidden (B, N - K))``, each sorted. One
    argsort of uniform noise for the whole batch (the paper's shuffle)."""
    keep_n = int(tokens * (1 - ratio))
    if not 0 < keep_n < tokens:
        raise UnsupError(f"mask_ratio {ratio} keeps {keep_n} of {tokens} patches; it must keep at least one and hide at least one")
    order = torch.rand(batch, tokens, device=device).argsort(1)
    return order[:, :keep_n].sort(1).values, order[:, keep_n:].sort(1).values


def normalised_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch's pixels minus their mean, over their standard deviation (``norm_pix_loss``)."""
    mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def masked_patch_loss(pred: torch.Tensor, patches: torch.Tensor, hidden: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """Mean squared error of ``pred`` ``(B, M, P)`` against the pixels of the hidden
    patches ``hidden`` ``(B, M)`` of ``patches`` ``(B, N, P)``; the visible ones never enter."""
    target = gather_tokens(patches, hidden).float()
    if norm_pix:
        target = normalised_patches(target)
    return (pred.float() - target).pow(2).mean()


@dataclass
class MAEConfig(MethodConfig):
    backbone: str = "vit-tiny"  # pool: token (the class token, the paper's linear-probe feature)
    lr: float = 1e-3  # the paper: 1.5e-4 x batch / 256 over 800 epochs; raised for a budget of a few epochs
    weight_decay: float = 0.05  # the paper's
    mask_ratio: float = 0.75
    decoder_width: int = 128
    decoder_depth: int = 4
    decoder_heads: int = 4
    norm_pix_loss: bool = True
    augment: AugmentConfig = dataclasses.field(default_factory=lambda: AugmentConfig(
        crop_scale=(0.2, 1.0), flip=0.5, brightness=0.0, contrast=0.0, jitter_prob=0.0, blur_prob=0.0))


@register
class MAE(Method):
    name = "mae"
    family = "masked"
    paper = "He et al. 2022, Masked Autoencoders Are Scalable Vision Learners"
    Config = MAEConfig

    def __init__(self, cfg: MAEConfig, shape):
        super().__init__(cfg, shape)
        if not 0 < cfg.mask_ratio < 1:
            raise UnsupError(f"mae: mask_ratio must be in (0, 1), got {cfg.mask_ratio}")
        self.encoder = self.make_encoder()
        vit = vit_of(self.encoder, self.name)
        self.decoder = TokenPredictor(vit.out_dim, cfg.decoder_width, cfg.decoder_depth, cfg.decoder_heads,
                                      vit.patch * vit.patch * shape[0], vit.grid)

    def configure_optimizers(self, make):
        # the paper's AdamW betas (0.9, 0.95)
        return super().configure_optimizers(lambda params, **kw: make(params, **{"betas": (0.9, 0.95), **kw}))

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For float images ``x`` in [0, 1]: (predicted pixels of the hidden patches
        ``(B, M, P)``, the image's patches ``(B, N, P)``, hidden indices ``(B, M)``)."""
        vit = self.encoder.net
        tokens = vit.patch_tokens(self.encoder.normalise(x))
        keep, hidden = random_masking(tokens.shape[0], tokens.shape[1], self.cfg.mask_ratio, x.device)
        latent = vit.encode(gather_tokens(tokens, keep))
        k = vit.num_prefix_tokens
        pred = self.decoder(latent[:, k:], keep, hidden, prefix=latent[:, :k])
        return pred, patchify(x, vit.patch), hidden

    def training_loss(self, images):
        pred, patches, hidden = self.reconstruct(augment(images, self.cfg.augment))
        return masked_patch_loss(pred, patches, hidden, self.cfg.norm_pix_loss), {}

    @torch.no_grad()
    def figures(self, data, out_dir: Path) -> list[Path]:
        from ...data.augment import to_float
        from ...report.figures import save_image_grid

        was = self.training
        self.eval()
        x = to_float(data.images[:12].to(next(self.parameters()).device))
        pred, patches, hidden = self.reconstruct(x)
        if self.cfg.norm_pix_loss:  # back to pixels with each hidden patch's own statistics
            target = gather_tokens(patches, hidden)
            pred = pred * (target.var(-1, keepdim=True) + 1e-6).sqrt() + target.mean(-1, keepdim=True)
        index = hidden.unsqueeze(-1).expand(-1, -1, patches.shape[-1])
        masked = patches.scatter(1, index, torch.full_like(pred, 0.5))
        filled = patches.scatter(1, index, pred.to(patches.dtype).clamp(0, 1))
        self.train(was)
        vit, c = self.encoder.net, x.shape[1]
        path = Path(out_dir) / "reconstructions.png"
        grid = torch.cat([unpatchify(p, vit.patch, c) for p in (masked, filled)] + [x])
        save_image_grid(grid.cpu(), path, nrow=12, title=f"{self.cfg.mask_ratio:.0%} of patches hidden / reconstruction / original")
        return [path]
