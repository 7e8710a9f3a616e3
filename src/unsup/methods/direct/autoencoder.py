"""Autoencoders: Vincent, Larochelle, Lajoie, Bengio & Manzagol, "Stacked
Denoising Autoencoders: Learning Useful Representations in a Deep Network
with a Local Denoising Criterion", JMLR 2010.

The denoising criterion: corrupt the input (masking noise: a random fraction
of pixels set to 0, or additive Gaussian noise) and reconstruct the *clean*
input, with cross-entropy for inputs in [0, 1] as in the paper. Here the
encoder is the shared convolutional backbone and the decoder mirrors it with
transposed convolutions from the feature vector.

One implementation, three methods: ``autoencoder`` (no corruption, the
paper's baseline), ``denoising-autoencoder`` (masking noise) and
``sparse-autoencoder`` (no corruption; a sigmoid code layer whose mean
activations rho_hat_j are pulled towards a small target rho by the penalty
beta * sum_j KL(rho || rho_hat_j), the sparse autoencoder the paper compares
with; the encoder's output is that code). The sparse code needs more training
than the plain autoencoder: on Fashion-MNIST it probes below its random code
after 60k images and clearly above it after 180k
(benchmarks/results/direct_clustering.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...data.augment import to_float
from ...registry import register
from ..base import Method, MethodConfig


@dataclass
class AutoencoderConfig(MethodConfig):
    corruption: str = "none"  # none | mask | gaussian
    noise_level: float = 0.0  # masking fraction, or Gaussian std
    decoder_width: int = 64
    sparsity_target: float = 0.0  # rho of the KL sparsity penalty; 0 = no sparse code layer
    sparsity_weight: float = 0.0  # beta
    code_dim: int = 256  # width of the sparse code layer


def corrupt(x: torch.Tensor, kind: str, level: float) -> torch.Tensor:
    if kind == "mask":  # masking noise: destroy a random fraction of the pixels
        return x * (torch.rand_like(x[:, :1]) >= level)
    if kind == "gaussian":
        return (x + level * torch.randn_like(x)).clamp(0, 1)
    return x


class ConvDecoder(nn.Module):
    """Feature vector -> image: a linear map to a (w, H/4, W/4) grid, two
    stride-2 transposed convolutions, logits at the input size."""

    def __init__(self, in_dim: int, channels: int, size: int, width: int = 64):
        super().__init__()
        self.s0 = max(1, size // 4)
        self.size = size
        self.fc = nn.Linear(in_dim, width * self.s0 * self.s0)
        self.net = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.BatchNorm2d(width // 2), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width // 2, width // 4, 4, 2, 1), nn.BatchNorm2d(width // 4), nn.ReLU(inplace=True),
            nn.Conv2d(width // 4, channels, 3, 1, 1),
        )
        self.width = width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.net(self.fc(z).view(len(z), self.width, self.s0, self.s0))
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x


class SigmoidCodeEncoder(nn.Module):
    """Backbone features -> a sigmoid code layer: the hidden units a KL
    sparsity penalty needs (activations in (0, 1))."""

    def __init__(self, backbone: nn.Module, code_dim: int):
        super().__init__()
        self.backbone = backbone
        self.code = nn.Linear(backbone.out_dim, code_dim)
        self.out_dim = code_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.code(self.backbone(x)))


def kl_sparsity(code: torch.Tensor, rho: float) -> torch.Tensor:
    """sum_j KL(rho || rho_hat_j), rho_hat_j the batch-mean activation of unit j."""
    rho_hat = code.float().mean(0).clamp(1e-6, 1 - 1e-6)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


class AutoencoderBase(Method):
    """Encode, decode, cross-entropy against the clean input; subclasses pick
    the corruption and the sparsity penalty."""

    family = "direct mapping"
    Config = AutoencoderConfig

    def __init__(self, cfg: AutoencoderConfig, shape):
        super().__init__(cfg, shape)
        self.encoder = self.make_encoder()
        if cfg.sparsity_target > 0:
            self.encoder = SigmoidCodeEncoder(self.encoder, cfg.code_dim)
        self.decoder = ConvDecoder(self.encoder.out_dim, shape[0], shape[1], cfg.decoder_width)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits of the reconstruction, code) for float images."""
        code = self.encoder(corrupt(x, self.cfg.corruption, self.cfg.noise_level))
        return self.decoder(code), code

    def training_loss(self, images):
        x = to_float(images)
        logits, code = self.reconstruct(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none").sum((1, 2, 3)).mean()
        logs = {"mse": F.mse_loss(torch.sigmoid(logits.detach().float()), x)}
        if self.cfg.sparsity_target > 0:
            kl = kl_sparsity(code, self.cfg.sparsity_target)
            loss = loss + self.cfg.sparsity_weight * kl
            logs.update(kl=kl.detach(), mean_activation=code.detach().float().mean())
        return loss, logs

    @torch.no_grad()
    def figures(self, data, out_dir: Path) -> list[Path]:
        from ...report.figures import save_image_grid

        was = self.training
        self.eval()
        x = to_float(data.images[:12].to(next(self.parameters()).device))
        noisy = corrupt(x, self.cfg.corruption, self.cfg.noise_level)
        recon = torch.sigmoid(self.decoder(self.encoder(noisy)))
        self.train(was)
        path = Path(out_dir) / "reconstructions.png"
        save_image_grid(torch.cat([noisy, recon, x]).cpu(), path, nrow=12, title="corrupted / reconstruction / original")
        return [path]


@dataclass
class DenoisingConfig(AutoencoderConfig):
    corruption: str = "mask"
    noise_level: float = 0.25  # the paper uses 10-40% masking noise


@register
class DenoisingAutoencoder(AutoencoderBase):
    name = "denoising-autoencoder"
    paper = "Vincent et al. 2010, Stacked Denoising Autoencoders"
    Config = DenoisingConfig


@register
class Autoencoder(AutoencoderBase):
    name = "autoencoder"
    paper = "Vincent et al. 2010 (the basic autoencoder they compare against)"
    Config = AutoencoderConfig


@dataclass
class SparseAutoencoderConfig(AutoencoderConfig):
    sparsity_target: float = 0.05  # rho: each hidden unit active about 5% of the time
    sparsity_weight: float = 1.0  # beta, against a reconstruction loss summed over pixels
    code_dim: int = 256


@register
class SparseAutoencoder(AutoencoderBase):
    name = "sparse-autoencoder"
    paper = "Vincent et al. 2010 (the sparse autoencoder with a KL sparsity penalty they compare against)"
    Config = SparseAutoencoderConfig
