"""Improved GAN (semi-supervised): Salimans, Goodfellow, Zaremba, Cheung,
Radford & Chen, "Improved Techniques for Training GANs", NeurIPS 2016.

The choices that matter: the discriminator is a K-class classifier whose
"fake" class is implicit, D(x) = Z(x) / (Z(x) + 1) with Z = sum_k exp l_k
(the K+1-class formulation with l_{K+1} fixed to 0); its loss is the
supervised cross-entropy on the N labelled images per class plus the
unsupervised real/fake loss on unlabelled and generated images; the
generator is trained by *feature matching* (the squared distance between the
mean discriminator features of real and generated batches), not by fooling
D. This method uses labels: it is semi-supervised and is reported in its
own rows, with ``labels_per_class`` and the ``seed`` of the labelled draw
(the same draw ``unsup.data.few_label_indices`` gives every method).
Scaled: the DCGAN nets of ``gan_nets`` for 28x28, with the paper's dropout
in the discriminator; its test error is that of D's K logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ...data import few_label_indices
from ...errors import UnsupError
from ...registry import register
from .gan_nets import Discriminator, GanConfig, GanMethod, Generator, PooledFeatures, real_bn_stats, to_tanh


@dataclass
class ImprovedGanConfig(GanConfig):
    labels_per_class: int = 100
    seed: int = 0  # seed of the labelled draw
    num_classes: int = 10
    labelled_batch: int = 32
    unsup_weight: float = 1.0
    dropout: float = 0.2  # the paper's discriminator uses dropout (0.2 on the input, 0.5 inside)
    lr: float = 3e-4  # the paper's Adam lr for the semi-supervised runs


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
        self.disc = Discriminator(c, s, cfg.d_width, out=cfg.num_classes, dropout=cfg.dropout)
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
        lse_u, lse_f = torch.logsumexp(logits_u.float(), 1), torch.logsumexp(logits_f.float(), 1)
        # -log D(x) for real, -log(1 - D(G(z))) for fake, with D = Z / (Z + 1)
        unsup = (-lse_u + F.softplus(lse_u)).mean() + F.softplus(lse_f).mean()
        acc = float((logits_l.argmax(1) == self._lab_y[pick]).float().mean())
        return sup + self.cfg.unsup_weight * unsup, {"sup_loss": float(sup.detach()), "unsup_loss": float(unsup.detach()),
                                                     "labelled_acc": acc}

    def g_step_loss(self, real, extra):
        with real_bn_stats(self.disc):
            _, feats_f = self.disc(self._fake)
            with torch.no_grad():
                _, feats_r = self.disc(real)
        # feature matching on the last trunk layer (spatially averaged, as the paper's global-pooled layer)
        fr, ff = feats_r[-1].float().mean((2, 3)), feats_f[-1].float().mean((2, 3))
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
