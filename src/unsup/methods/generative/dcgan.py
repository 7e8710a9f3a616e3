"""DCGAN: Radford, Metz & Chintala, "Unsupervised Representation Learning
with Deep Convolutional Generative Adversarial Networks", ICLR 2016.

The choices that matter: an all-convolutional generator (fractionally
strided convolutions, batch norm, ReLU, Tanh output) and discriminator
(strided convolutions, LeakyReLU 0.2, batch norm except on its first layer),
Adam with lr 2e-4 and beta1 0.5, the non-saturating generator loss. The
encoder is the paper's CIFAR-10 feature extractor: the discriminator's
activations of every layer, each max-pooled to a 4x4 grid and concatenated.
Scaled to 28x28: generator 7x7 -> 14 -> 28 with (4w, 2w) channels, w = 32
(the paper's 1024 -> 128 at 64x64), discriminator w, 2w, 4w channels at
14, 7, 4 pixels, z of 64 dimensions (the paper: 100).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...registry import register
from .gan_nets import (
    Discriminator,
    GanConfig,
    GanMethod,
    Generator,
    PooledFeatures,
    d_loss_bce,
    from_tanh,
    g_loss_nonsaturating,
    real_bn_stats,
)


@register
class DCGAN(GanMethod):
    name = "dcgan"
    paper = "Radford, Metz & Chintala 2015, Unsupervised Representation Learning with Deep Convolutional GANs"
    Config = GanConfig

    def __init__(self, cfg: GanConfig, shape):
        super().__init__(cfg, shape)
        c, s, _ = self.shape
        self.gen = Generator(cfg.z_dim, c, s, cfg.g_width)
        self.disc = Discriminator(c, s, cfg.d_width)
        self.encoder = PooledFeatures(self.disc.trunk, c, s)

    def d_parameters(self):
        return list(self.disc.parameters())

    def g_parameters(self):
        return list(self.gen.parameters())

    def d_step_loss(self, real, extra):
        self._fake = self.gen(self.sample_latent(len(real), real.device))
        real_logit, _ = self.disc(real)
        with real_bn_stats(self.disc):
            fake_logit, _ = self.disc(self._fake.detach())
        return d_loss_bce(real_logit, fake_logit), {"d_real": float(torch.sigmoid(real_logit.detach()).mean())}

    def g_step_loss(self, real, extra):
        with real_bn_stats(self.disc):
            fake_logit, _ = self.disc(self._fake)
        return g_loss_nonsaturating(fake_logit), {}

    @torch.no_grad()
    def figures(self, data, out_dir: Path) -> list[Path]:
        from .pictures import brightness_arithmetic

        paths = self.base_figures(out_dir, "DCGAN")
        if data.labels is None:
            return paths
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        # class guesses for samples: nearest class mean of real test images in D-feature space
        real = data.images[:2000].to(dev)
        fr = self.encoder(real.float() / 255)
        means = torch.stack([fr[data.labels[:2000].to(dev) == c].mean(0) for c in range(data.num_classes)])
        g = torch.Generator().manual_seed(2)
        z = self.sample_latent(1000, dev, g)
        imgs = from_tanh(self.gen(z))
        guess = torch.cdist(self.encoder(imgs), means).argmin(1)
        p, _gain = brightness_arithmetic(lambda v: from_tanh(self.gen(v)), z, imgs, guess, data.classes,
                                         Path(out_dir) / "arithmetic.png", "DCGAN")
        self.train(was)
        return [*paths, p]
