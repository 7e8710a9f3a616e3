"""Improved GAN (semi-supervised): Salimans, Goodfellow, Zaremba, Cheung,
Radford & Chen, "Improved Techniques for Training GANs", NeurIPS 2016.

The choices that matter: the discriminator is a K-class classifier whose
"fake" class is implicit, D(x) = Z(x) / (Z(x) + 1) with Z = sum_k exp l_k
(the K+1-class formulation with l_{K+1} fixed to 0); its loss is the
supervised cross-entropy on a labelled batch drawn every step from the N
labelled images per class, plus ``unsup_weight`` (the paper's code: 0.5)
times the unsupervised real/fake loss -log D(x) - log(1 - D(G(z))) on
unlabelled and generated images; the generator is trained by *feature
matching* (the squared distance between the mean discriminator features of
real and generated batches, on the last trunk layer, spatially averaged),
not by fooling D. D is the paper's: weight-normalised layers, no batch norm,
dropout (0.2 on the input, 0.5 inside); Adam lr 3e-4, beta1 0.5, decayed to
0 (the shared cosine schedule; the paper decays linearly). The test error is
that of D's K-class argmax.

This method uses labels: it is semi-supervised and is reported in its own
rows, with ``labels_per_class`` and the ``seed`` of the labelled draw (the
same draw ``unsup.data.few_label_indices`` gives every method).

Scaled: the three strided layers of the DCGAN trunk of ``gan_nets`` for
28x28 (not the paper's nine-layer CIFAR-10 D, for CPU time), no
data-dependent initialisation of the weight norm. ``d_norm="batch"`` keeps
the earlier variant (the batch-normed DCGAN trunk, ``dropout`` on every
layer's input), which was clearly worse with dropout 0.2 (0.247 vs 0.183
test error at 300k images, 100 labels per class; benchmarks/results/generative.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from ...data import few_label_indices
from ...errors import UnsupError
from ...registry import register
from .gan_nets import ConvTrunk, Discriminator, GanConfig, GanMethod, Generator, PooledFeatures, real_bn_stats, to_tanh, trunk_out_size


@dataclass
class ImprovedGanConfig(GanConfig):
    labels_per_class: int = 100
    seed: int = 0  # seed of the labelled draw
    num_classes: int = 10
    labelled_batch: int = 32
    unsup_weight: float = 0.5  # the paper's code weighs the unsupervised loss by 0.5
    lr: float = 3e-4  # the paper's Adam lr for the semi-supervised runs
    d_norm: str = "weight"  # "weight" (the paper: weight norm, no batch norm in D) or "batch" (the DCGAN trunk)
    input_dropout: float = 0.2  # dropout on D's input (the paper)
    dropout: float = 0.5  # dropout inside D (the paper)
    noise: float = 0.0  # d_norm="weight": std of Gaussian noise on every layer's input (the paper's MNIST D: 0.3 / 0.5)
    fm_layer: int = -1  # the trunk layer whose spatially averaged activations the generator matches


def unsupervised_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """-log D(x) on real plus -log(1 - D(G(z))) on generated images, batch means, with
    D = Z / (Z + 1), Z = sum_k exp l_k (the K+1th logit fixed at 0)."""
    lse_r, lse_f = torch.logsumexp(logits_real.float(), 1), torch.logsumexp(logits_fake.float(), 1)
    return (F.softplus(lse_r) - lse_r).mean() + F.softplus(lse_f).mean()


class GaussianNoise(nn.Module):
    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, x):
        return x + self.std * torch.randn_like(x) if self.training and self.std > 0 else x


class WeightNormTrunk(nn.Module):
    """The strided layout of ``gan_nets.ConvTrunk`` (s -> s/2 -> s/4 -> s/8)
    with the paper's D regularisers: weight-normalised convolutions, no batch
    norm, dropout on each layer's input (``input_dropout`` on the image,
    ``dropout`` after), optional Gaussian noise, LeakyReLU(0.2)."""

    def __init__(self, channels: int, width: int, dropout: float, input_dropout: float, noise: float):
        super().__init__()
        self.channels = [width, 2 * width, 4 * width]
        self.blocks = nn.ModuleList()
        cin = channels
        for i, c in enumerate(self.channels):
            p = input_dropout if i == 0 else dropout
            layers: list[nn.Module] = [GaussianNoise(noise)] + ([nn.Dropout(p)] if p > 0 else [])
            layers += [weight_norm(nn.Conv2d(cin, c, 4 if i < 2 else 3, 2, 1)), nn.LeakyReLU(0.2, True)]
            self.blocks.append(nn.Sequential(*layers))
            cin = c

    forward = ConvTrunk.forward  # the same pass: the activations of every layer


class WeightNormDiscriminator(nn.Module):
    """``WeightNormTrunk`` then the K logits: a weight-normalised linear layer on the flattened last layer."""

    def __init__(self, channels: int, size: int, width: int, out: int, dropout: float, input_dropout: float, noise: float):
        super().__init__()
        self.trunk = WeightNormTrunk(channels, width, dropout, input_dropout, noise)
        s = trunk_out_size(size)
        self.head = nn.Sequential(GaussianNoise(noise), weight_norm(nn.Linear(4 * width * s * s, out)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = self.trunk(x)
        return self.head(feats[-1].flatten(1)), feats


@register
class ImprovedGAN(GanMethod):
    name = "improved-gan"
    paper = "Salimans et al. 2016, Improved Techniques for Training GANs"
    Config = ImprovedGanConfig
    uses_labels = True

    def __init__(self, cfg: ImprovedGanConfig, shape):
        super().__init__(cfg, shape)
        c, s, _ = self.shape
        self.gen = Generator(cfg.z_dim, c, s, cfg.g_width)
        if cfg.d_norm == "weight":
            self.disc = WeightNormDiscriminator(c, s, cfg.d_width, cfg.num_classes, cfg.dropout, cfg.input_dropout, cfg.noise)
        elif cfg.d_norm == "batch":
            self.disc = Discriminator(c, s, cfg.d_width, out=cfg.num_classes, dropout=cfg.dropout)
        else:
            raise UnsupError(f"improved-gan: d_norm must be 'batch' or 'weight', got {cfg.d_norm!r}")
        self.encoder = PooledFeatures(self.disc.trunk, c, s)
        self._lab_x = self._lab_y = None

    def on_epoch_start(self, data, epoch: int) -> None:
        if self._lab_x is not None:
            return
        if data.labels is None:
            raise UnsupError(f"improved-gan is semi-supervised: {data.name} has no labels; pretrain on a labelled dataset")
        if data.num_classes != self.cfg.num_classes:
            raise UnsupError(f"improved-gan: {data.name} has {data.num_classes} classes but num_classes={self.cfg.num_classes}; "
                             f"pass -o num_classes={data.num_classes}")
        idx = few_label_indices(data.labels, self.cfg.labels_per_class, self.cfg.seed).to(data.images.device)
        self._lab_x, self._lab_y = data.images[idx], data.labels[idx]

    def d_parameters(self):
        return list(self.disc.parameters())

    def g_parameters(self):
        return list(self.gen.parameters())

    def d_step_loss(self, real, extra):
        if self._lab_x is None:
            raise UnsupError("improved-gan: no labelled subset; train it through unsup.pretrain (on_epoch_start draws it)")
        pick = torch.randint(len(self._lab_x), (self.cfg.labelled_batch,), device=real.device)
        xl = to_tanh(self._lab_x[pick].float() / 255)
        self._fake = self.gen(self.sample_latent(len(real), real.device))
        logits_l, _ = self.disc(xl)
        sup = F.cross_entropy(logits_l.float(), self._lab_y[pick])
        logits_u, _ = self.disc(real)
        with real_bn_stats(self.disc):
            logits_f, _ = self.disc(self._fake.detach())
        unsup = unsupervised_loss(logits_u, logits_f)
        acc = float((logits_l.argmax(1) == self._lab_y[pick]).float().mean())
        return sup + self.cfg.unsup_weight * unsup, {"sup_loss": float(sup.detach()), "unsup_loss": float(unsup.detach()),
                                                     "labelled_acc": acc}

    def g_step_loss(self, real, extra):
        with real_bn_stats(self.disc):
            _, feats_f = self.disc(self._fake)
            with torch.no_grad():
                _, feats_r = self.disc(real)
        # feature matching on the last trunk layer (spatially averaged, as the paper's global-pooled layer)
        k = self.cfg.fm_layer
        fr, ff = feats_r[k].float().mean((2, 3)), feats_f[k].float().mean((2, 3))
        return ((fr.mean(0) - ff.mean(0)) ** 2).mean(), {}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """D's class for uint8 images."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        out = torch.cat([self.disc(to_tanh(images[i : i + 1000].to(dev).float() / 255))[0].argmax(1).cpu()
                         for i in range(0, len(images), 1000)])
        self.train(was)
        return out

    def test_error(self, test) -> float:
        return float((self.predict(test.images) != test.labels.cpu()).float().mean())

    def figures(self, data, out_dir: Path) -> list[Path]:
        return self.base_figures(out_dir, f"Improved GAN ({self.cfg.labels_per_class} labels/class)")
