"""BiGAN: Donahue, Krähenbühl & Darrell, "Adversarial Feature Learning",
ICLR 2017 (and ALI, Dumoulin et al. 2017).

An encoder E : x -> z is learned jointly with the generator G : z -> x.
The discriminator sees pairs: (x, E(x)) for real images and (G(z), z) for
generated ones; at the optimum E inverts G. G and E are trained together
against D with the flipped (non-saturating) labels, as in the paper's code.
The encoder that the probe measures is E (its convolutional layers,
max-pooled to 4x4 and concatenated like the DCGAN features; the latent
E(x) is included). Scaled: DCGAN nets of ``gan_nets`` for 28x28, z of 50
dimensions (the paper's MNIST setting), a joint D = image trunk + latent MLP
+ a joint MLP on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...errors import UnsupError
from ...registry import register
from .gan_nets import (
    ConvTrunk,
    GanConfig,
    GanMethod,
    Generator,
    d_loss_bce,
    from_tanh,
    g_loss_nonsaturating,
    to_tanh,
    trunk_out_size,
)


@dataclass
class BiGanConfig(GanConfig):
    z_dim: int = 50
    joint_hidden: int = 512
    e_width: int = 32


class InverseEncoder(nn.Module):
    """E: a DCGAN-style trunk, then a linear map to z. As the probed encoder it
    takes [0, 1] images and returns every layer max-pooled to 4x4 and E(x)."""

    def __init__(self, channels: int, size: int, width: int, z_dim: int, grid: int = 4):
        super().__init__()
        self.trunk = ConvTrunk(channels, width)
        s = trunk_out_size(size)
        self.to_z = nn.Linear(4 * width * s * s, z_dim)
        self.in_channels, self.image_size, self.grid = channels, size, grid
        self.out_dim = sum(self.trunk.channels) * grid * grid + z_dim

    def encode(self, x_tanh: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = self.trunk(x_tanh)
        return self.to_z(feats[-1].flatten(1)), feats

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        if x01.ndim != 4 or x01.shape[1] != self.in_channels:
            raise UnsupError(f"encoder expects images (B, {self.in_channels}, H, W), got {tuple(x01.shape)}")
        z, feats = self.encode(to_tanh(x01))
        pooled = [nn.functional.adaptive_max_pool2d(f, self.grid).flatten(1) for f in feats]
        return torch.cat([*pooled, z], 1)


class JointDiscriminator(nn.Module):
    """D(x, z): image trunk features and a latent MLP, joined by an MLP."""

    def __init__(self, channels: int, size: int, width: int, z_dim: int, hidden: int):
        super().__init__()
        self.trunk = ConvTrunk(channels, width, dropout=0.2, norm=False)
        s = trunk_out_size(size)
        self.z_net = nn.Sequential(nn.Linear(z_dim, hidden), nn.LeakyReLU(0.2, True), nn.Dropout(0.2))
        self.joint = nn.Sequential(nn.Linear(4 * width * s * s + hidden, hidden), nn.LeakyReLU(0.2, True),
                                   nn.Dropout(0.2), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.joint(torch.cat([self.trunk(x)[-1].flatten(1), self.z_net(z)], 1))


@register
class BiGAN(GanMethod):
    name = "bigan"
    paper = "Donahue, Krähenbühl & Darrell 2016, Adversarial Feature Learning (BiGAN)"
    Config = BiGanConfig

    def __init__(self, cfg: BiGanConfig, shape):
        super().__init__(cfg, shape)
        c, s, _ = self.shape
        self.gen = Generator(cfg.z_dim, c, s, cfg.g_width)
        self.encoder = InverseEncoder(c, s, cfg.e_width, cfg.z_dim)
        self.disc = JointDiscriminator(c, s, cfg.d_width, cfg.z_dim, cfg.joint_hidden)

    def d_parameters(self):
        return list(self.disc.parameters())

    def g_parameters(self):
        return list(self.gen.parameters()) + list(self.encoder.parameters())

    def d_step_loss(self, real, extra):
        self._z = self.sample_latent(len(real), real.device)
        self._fake = self.gen(self._z)
        self._ez, _ = self.encoder.encode(real)
        real_logit = self.disc(real, self._ez.detach())
        fake_logit = self.disc(self._fake.detach(), self._z)
        return d_loss_bce(real_logit, fake_logit), {"d_real": float(torch.sigmoid(real_logit.detach()).mean())}

    def g_step_loss(self, real, extra):
        # G and E fool D with flipped labels: (G(z), z) looks real, (x, E(x)) looks fake
        real_logit = self.disc(real, self._ez)
        fake_logit = self.disc(self._fake, self._z)
        loss = g_loss_nonsaturating(fake_logit) + g_loss_nonsaturating(-real_logit)
        return loss, {}

    @torch.no_grad()
    def reconstruct(self, images01: torch.Tensor) -> torch.Tensor:
        return from_tanh(self.gen(self.encoder.encode(to_tanh(images01))[0]))

    @torch.no_grad()
    def figures(self, data, out_dir: Path) -> list[Path]:
        from ...report.figures import save_image_grid
        from .pictures import brightness_arithmetic

        paths = self.base_figures(out_dir, "BiGAN")
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        x = data.images[:2000].to(dev).float() / 255
        paths.append(save_image_grid(torch.cat([x[:16], self.reconstruct(x[:16])]).cpu(), Path(out_dir) / "reconstructions.png",
                                     nrow=16, title="BiGAN: test images / G(E(x))"))
        if data.labels is not None:
            z = self.encoder.encode(to_tanh(x))[0]
            p, _ = brightness_arithmetic(lambda v: from_tanh(self.gen(v)), z, x, data.labels[:2000].cpu(), data.classes,
                                         Path(out_dir) / "arithmetic.png", "BiGAN, codes E(x) of test images")
            paths.append(p)
        self.train(was)
        return paths
