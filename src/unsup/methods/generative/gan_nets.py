"""Shared pieces of the GAN family, scaled to 28x28 / 32x32 images.

- ``Generator``: the DCGAN generator (Radford et al. 2015): a projection of
  the code to a (4w, s/4, s/4) grid, then fractionally-strided 4x4
  convolutions with batch norm and ReLU, Tanh output in [-1, 1].
- ``ConvTrunk``: the DCGAN discriminator body: strided convolutions with
  LeakyReLU(0.2), batch norm after every layer but the first; it returns each
  layer's activations (for feature matching and the pooled-feature encoder).
- ``PooledFeatures``: the encoder of the DCGAN CIFAR-10 experiment: every
  trunk layer max-pooled to a 4x4 grid, flattened and concatenated.
- ``GanMethod``: two Adam optimisers (lr 2e-4, beta1 0.5), the D step then the
  G step, sampling, figures and a divergence guard: a NaN, or a
  discriminator loss stuck near zero (D wins, G gets no gradient) for many
  steps, is reported as a non-finite loss so the loop stops and keeps the last
  good checkpoint.

Batch norm in D keeps running statistics of *real* batches only
(``real_bn_stats``): the encoder runs in eval mode on real images, and
statistics averaged over real and generated batches would not fit them.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...data.augment import to_float
from ...errors import UnsupError
from ..base import Method, MethodConfig


@dataclass
class GanConfig(MethodConfig):
    batch_size: int = 32  # small batches: more steps per image seen on a CPU budget (the paper: 128)
    optimizer: str = "adam"
    lr: float = 2e-4  # Adam(2e-4, beta1 = 0.5), the DCGAN setting
    g_lr: float = 0.0  # the generator's lr; 0 = lr
    beta1: float = 0.5
    weight_decay: float = 0.0
    warmup: float = 0.0
    z_dim: int = 64
    g_width: int = 32  # generator: 4w, 2w channels (the paper's 1024..128 scaled down)
    d_width: int = 32  # discriminator: w, 2w, 4w channels
    collapse_loss: float = 1e-3  # D loss below this ...
    collapse_steps: int = 300  # ... for this many steps in a row is a divergence


def to_tanh(x01: torch.Tensor) -> torch.Tensor:
    return x01 * 2 - 1


def from_tanh(x: torch.Tensor) -> torch.Tensor:
    return (x.float() + 1) / 2


class Generator(nn.Module):
    def __init__(self, in_dim: int, channels: int, size: int, width: int = 32):
        super().__init__()
        if size % 4:
            raise UnsupError(f"GAN generators need an image size divisible by 4, got {size}; resize to 28 or 32")
        self.s0, self.w4 = size // 4, 4 * width
        self.project = nn.Sequential(nn.Linear(in_dim, self.w4 * self.s0 * self.s0, bias=False),
                                     nn.BatchNorm1d(self.w4 * self.s0 * self.s0), nn.ReLU(True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(self.w4, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(True),
            nn.ConvTranspose2d(2 * width, channels, 4, 2, 1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).view(len(z), self.w4, self.s0, self.s0))


class ConvTrunk(nn.Module):
    """Strided 4x4/3x3 convolutions, LeakyReLU(0.2): s -> s/2 -> s/4 -> s/8."""

    def __init__(self, channels: int, width: int = 32, dropout: float = 0.0, norm: bool = True):
        super().__init__()
        chans = [width, 2 * width, 4 * width]
        self.blocks = nn.ModuleList()
        cin = channels
        for i, c in enumerate(chans):
            k = 4 if i < 2 else 3
            layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
            layers.append(nn.Conv2d(cin, c, k, 2, 1, bias=not (norm and i > 0)))
            if norm and i > 0:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2, True))
            self.blocks.append(nn.Sequential(*layers))
            cin = c
        self.channels = chans

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x in [-1, 1] -> the activations of every layer."""
        outs = []
        for b in self.blocks:
            x = b(x)
            outs.append(x)
        return outs


class Discriminator(nn.Module):
    """The DCGAN trunk with one real/fake logit on its last layer."""

    def __init__(self, channels: int, size: int, width: int, out: int = 1, dropout: float = 0.0):
        super().__init__()
        self.trunk = ConvTrunk(channels, width, dropout)
        s = trunk_out_size(size)
        self.head = nn.Linear(4 * width * s * s, out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = self.trunk(x)
        return self.head(feats[-1].flatten(1)), feats


def trunk_out_size(size: int) -> int:
    for k in (4, 4, 3):
        size = (size + 2 - k) // 2 + 1
    return size


class PooledFeatures(nn.Module):
    """Encoder from a trunk: [0, 1] images -> every layer max-pooled to 4x4, concatenated."""

    def __init__(self, trunk: ConvTrunk, in_channels: int, image_size: int, grid: int = 4):
        super().__init__()
        self.trunk = trunk
        self.in_channels, self.image_size, self.grid = in_channels, image_size, grid
        self.out_dim = sum(trunk.channels) * grid * grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise UnsupError(f"encoder expects images (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        feats = self.trunk(to_tanh(x))
        return torch.cat([F.adaptive_max_pool2d(f, self.grid).flatten(1) for f in feats], 1)


@contextlib.contextmanager
def real_bn_stats(module: nn.Module):
    """Inside: batch norm normalises with batch statistics but leaves the
    running statistics alone (momentum 0), so they describe real data only."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


def d_loss_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)), the generator loss every GAN paper here trains with."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


class DivergenceGuard:
    """Counts steps with the discriminator loss stuck below a floor."""

    def __init__(self, floor: float, patience: int):
        self.floor, self.patience, self.run = floor, patience, 0

    def check(self, d_loss: float, logs: dict) -> dict:
        self.run = self.run + 1 if d_loss < self.floor else 0
        if self.run >= self.patience or not math.isfinite(d_loss):
            # a non-finite value makes the loop stop with a clear error, keeping the last good checkpoint
            logs = {**logs, "loss": float("nan"), f"d_loss_below_{self.floor:g}_for_{self.run}_steps": float("nan")}
        return logs


class GanMethod(Method):
    """Shared skeleton: ``self.gen``, a latent prior, two optimisers."""

    family = "generative"
    Config = GanConfig

    def __init__(self, cfg: GanConfig, shape):
        super().__init__(cfg, shape)
        self.guard = DivergenceGuard(cfg.collapse_loss, cfg.collapse_steps)

    # --- the latent space ---------------------------------------------------
    def latent_dim(self) -> int:
        return self.cfg.z_dim

    uniform_latent = False  # True: z ~ U[0, 1) (e.g. the improved GAN's MNIST G); False: N(0, I)

    def sample_latent(self, n: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        # a seeded draw (figures, samples) uses its CPU generator; a training step draws on the device, no copy
        draw = torch.rand if self.uniform_latent else torch.randn
        return draw(n, self.latent_dim(), generator=generator, device="cpu" if generator is not None else device).to(device)

    def generate(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent codes -> images in [-1, 1]."""
        return self.gen(latent)

    @torch.no_grad()
    def sample(self, n: int, device=None, seed: int = 0) -> torch.Tensor:
        """``n`` float images in [0, 1] (eval mode, fixed seed)."""
        device = device or next(self.parameters()).device
        was = self.training
        self.eval()
        g = torch.Generator().manual_seed(seed)
        out = torch.cat([from_tanh(self.generate(self.sample_latent(len(c), device, g)))
                         for c in torch.arange(n).split(500)])
        self.train(was)
        return out

    # --- optimisation -------------------------------------------------------
    def d_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def g_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def configure_optimizers(self, make):
        betas = (self.cfg.beta1, 0.999)
        return [make(self.d_parameters(), betas=betas),
                make(self.g_parameters(), lr=self.cfg.g_lr or self.cfg.lr, betas=betas)]

    def d_step_loss(self, real: torch.Tensor, extra) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def g_step_loss(self, real: torch.Tensor, extra) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def training_step(self, images, optimizers, backward) -> dict:
        extra = None
        if isinstance(images, tuple):
            images, extra = images
        real = to_tanh(to_float(images))
        opt_d, opt_g = optimizers
        d_loss, d_logs = self.d_step_loss(real, extra)
        backward(d_loss, opt_d)
        g_loss, g_logs = self.g_step_loss(real, extra)
        backward(g_loss, opt_g)
        d, g = float(d_loss.detach()), float(g_loss.detach())
        logs = {"loss": d + g, "d_loss": d, "g_loss": g, **d_logs, **g_logs}
        return self.guard.check(d, logs)

    # --- family-specific numbers ---------------------------------------------
    fcd_samples = 5000

    def family_metrics(self, data: str, device) -> dict[str, float]:
        """Sample quality on ``data``'s held-out split: ``fcd``, the Fréchet
        classifier distance (own classifier, ``unsup.evaluate.generative``;
        not FID) of ``fcd_samples`` samples (seed 0) against as many first
        test images, and each model's own numbers (``sample_metrics``). The
        reference classifier is trained once per dataset and cached (the
        first call on Fashion-MNIST trains it: minutes on a 2-core CPU, 455 s
        measured under load); with it cached this takes 4-10 s there.
        A dataset without labels gives {} (no classifier to train)."""
        from ...evaluate.generative import reference_classifier

        train, test = self.probe_datasets(data)
        if train.labels is None or test.labels is None:
            return {}
        self.to(device).eval()
        return self.sample_metrics(reference_classifier(train, device), train, test, device)

    def sample_metrics(self, clf, train, test, device) -> dict[str, float]:
        """The numbers of ``family_metrics`` given the reference classifier ``clf``."""
        from ...evaluate.generative import sample_fcd

        return {"fcd": sample_fcd(self, clf, test, device, self.fcd_samples)}

    # --- pictures -----------------------------------------------------------
    @torch.no_grad()
    def interpolation_walk(self, rows: int = 8, steps: int = 10, seed: int = 1) -> torch.Tensor:
        """Rows of images along straight lines between random latent points."""
        dev = next(self.parameters()).device
        g = torch.Generator().manual_seed(seed)
        a, b = self.sample_latent(rows, dev, g), self.sample_latent(rows, dev, g)
        t = torch.linspace(0, 1, steps, device=dev)[None, :, None]
        z = (a[:, None] * (1 - t) + b[:, None] * t).reshape(rows * steps, -1)
        return from_tanh(self.generate(z))

    def base_figures(self, out_dir: Path, label: str) -> list[Path]:
        from ...report.figures import save_image_grid

        was = self.training
        self.eval()
        out = Path(out_dir)
        paths = [save_image_grid(self.sample(64).cpu(), out / "samples.png", nrow=8, title=f"{label}: samples"),
                 save_image_grid(self.interpolation_walk().cpu(), out / "interpolation.png", nrow=10,
                                 title=f"{label}: walks between random latent points")]
        self.train(was)
        return paths
