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
not by fooling D. With ``arch="conv"`` D is weight-normalised, without batch
norm, with dropout (0.2 on the input, 0.5 inside); Adam lr 3e-4, beta1 0.5,
decayed to 0 (the shared cosine schedule; the paper's CIFAR code decays
linearly). The test error is that of D's K-class argmax (eval mode: no
noise, no dropout).

This method uses labels: it is semi-supervised and is reported in its own
rows, with ``labels_per_class`` and the ``seed`` of the labelled draw (the
same draw ``unsup.data.few_label_indices`` gives every method).

Two architectures (``arch``), as the paper chose per dataset:

- ``"mlp"``: the paper's MNIST model (its ``train_mnist_feature_matching.py``),
  for 28x28 grey images: D = Gaussian noise (std 0.3) on the [0, 1] input,
  then fully connected layers 1000-500-250-250-250 with ReLU, each
  weight-normalised with a fixed scale set by a data-dependent
  initialisation on 500 training images, Gaussian noise (std 0.5) before
  each next layer, and a weight-normalised output layer (trainable scale)
  to the K logits; G = uniform noise z -> dense 500 softplus (batch norm)
  -> dense 500 softplus (batch norm) -> weight-normalised dense to the
  pixels, sigmoid. Feature matching on the last hidden layer. The paper
  trains it with batch 100 (labelled and unlabelled), Adam lr 0.003 and
  beta1 0.5 at a constant rate, and tests the Polyak average of D's
  parameters (``ema_rate``: the paper's 1e-4 over 180k steps); the
  settings are ``PAPER_MNIST``. The MLP D is the encoder's trunk too
  (every hidden layer, concatenated). Not the paper's: the labelled batch
  is drawn at random each step (the paper cycles through permutations), the
  generator step reuses the D step's samples and real batch, and the
  paper's 300 epochs are far beyond a CPU budget. Measured on
  Fashion-MNIST at 100k images, 100 labels per class: 0.186 test error,
  ahead of the same network trained on the labels alone (``unsup_weight=0``:
  0.188; the GAN is ahead in each of 3 seeds) but behind the convnet with
  augmentations (0.162; benchmarks/results/generative.md).
- ``"conv"`` (the default): scaled, the three strided layers of the DCGAN
  trunk of ``gan_nets`` for 28x28 (not the paper's nine-layer CIFAR-10 D,
  for CPU time), no data-dependent initialisation of the weight norm.
  ``d_norm="batch"`` keeps the earlier variant (the batch-normed DCGAN
  trunk, ``dropout`` on every layer's input), which was clearly worse with
  dropout 0.2 (0.247 vs 0.183 test error at 300k images, 100 labels per
  class; benchmarks/results/generative.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from ...data import few_label_indices
from ...errors import UnsupError
from ...registry import register
from ...train.ema import ema_update
from .gan_nets import (
    ConvTrunk,
    Discriminator,
    GanConfig,
    GanMethod,
    Generator,
    PooledFeatures,
    from_tanh,
    real_bn_stats,
    to_tanh,
    trunk_out_size,
)


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
    arch: str = "conv"  # "conv" (the scaled DCGAN trunk) or "mlp" (the paper's fully connected MNIST model)
    ema_rate: float = 0.0  # > 0: D's test predictions use the Polyak (exponential) average of its parameters


# the paper's MNIST settings (train_mnist_feature_matching.py), as options: ema_rate is set per budget
# (the paper's 1e-4 over its 180k steps; ema_rate x steps = 18 keeps the same share of training averaged)
PAPER_MNIST = {"arch": "mlp", "batch_size": 100, "labelled_batch": 100, "lr": 3e-3, "schedule": "constant",
               "warmup": 0.0, "z_dim": 100, "unsup_weight": 0.5}
MLP_D_UNITS = (1000, 500, 250, 250, 250)
MLP_G_UNITS = (500, 500)


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


class WNLinear(nn.Module):
    """A weight-normalised dense layer, W = g v / ||v|| per output unit, as the
    paper's MNIST code: the scale g is set by ``data_init`` and trained only
    where ``train_scale``."""

    def __init__(self, n_in: int, n_out: int, train_scale: bool):
        super().__init__()
        self.v = nn.Parameter(torch.randn(n_out, n_in) * 0.1)
        self.g = nn.Parameter(torch.ones(n_out), requires_grad=train_scale)
        self.b = nn.Parameter(torch.zeros(n_out))

    def weight(self) -> torch.Tensor:
        return self.v * (self.g / self.v.norm(dim=1).clamp(min=1e-6))[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.b)

    @torch.no_grad()
    def data_init(self, x: torch.Tensor) -> torch.Tensor:
        """Scale and shift so the pre-activations of ``x`` have zero mean and unit std; returns them."""
        t = F.linear(x, self.weight())
        m, s = t.mean(0), t.std(0, unbiased=False).clamp(min=1e-6)
        self.g.div_(s)
        self.b.copy_(-m / s)
        return (t - m) / s


class MLPTrunk(nn.Module):
    """The paper's MNIST D body: noise 0.3 on the [0, 1] input, then
    noise 0.5 before every further layer; weight-normalised ReLU layers."""

    def __init__(self, n_in: int, units=MLP_D_UNITS, input_noise: float = 0.3, noise: float = 0.5):
        super().__init__()
        self.channels = list(units)
        self.noise = nn.ModuleList([GaussianNoise(input_noise if i == 0 else noise) for i in range(len(units))])
        self.layers = nn.ModuleList([WNLinear(a, b, train_scale=False) for a, b in zip((n_in, *units[:-1]), units)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x in [-1, 1] (B, C, H, W) -> every hidden layer's activations (B, units)."""
        x = from_tanh(x).flatten(1)
        outs = []
        for noise, layer in zip(self.noise, self.layers):
            x = F.relu(layer(noise(x)))
            outs.append(x)
        return outs

    @torch.no_grad()
    def data_init(self, x: torch.Tensor) -> torch.Tensor:
        x = from_tanh(x).flatten(1)
        for noise, layer in zip(self.noise, self.layers):
            x = F.relu(layer.data_init(noise(x)))
        return x


class MLPDiscriminator(nn.Module):
    def __init__(self, n_in: int, out: int):
        super().__init__()
        self.trunk = MLPTrunk(n_in)
        self.head_noise = GaussianNoise(0.5)
        self.head = WNLinear(self.trunk.channels[-1], out, train_scale=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = self.trunk(x)
        return self.head(self.head_noise(feats[-1])), feats

    @torch.no_grad()
    def data_init(self, x: torch.Tensor) -> None:
        was = self.training
        self.train()  # the paper initialises with the noise on
        self.head.data_init(self.head_noise(self.trunk.data_init(x)))
        self.train(was)


class MLPGenerator(nn.Module):
    """z -> [dense, batch norm (no scale), softplus] x 2 -> weight-normalised dense, sigmoid; output in [-1, 1]."""

    def __init__(self, z_dim: int, channels: int, size: int, units=MLP_G_UNITS):
        super().__init__()
        self.shape = (channels, size, size)
        layers: list[nn.Module] = []
        for a, b in zip((z_dim, *units[:-1]), units):
            layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b, affine=False), _Bias(b), nn.Softplus()]
        self.hidden = nn.Sequential(*layers)
        self.out = WNLinear(units[-1], channels * size * size, train_scale=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return to_tanh(torch.sigmoid(self.out(self.hidden(z)))).view(len(z), *self.shape)


class _Bias(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return x + self.b


class MLPFeatures(nn.Module):
    """Encoder from the MLP trunk: [0, 1] images -> every hidden layer, concatenated."""

    def __init__(self, trunk: MLPTrunk, in_channels: int, image_size: int):
        super().__init__()
        self.trunk, self.in_channels, self.image_size = trunk, in_channels, image_size
        self.out_dim = sum(trunk.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, self.image_size, self.image_size):
            raise UnsupError(f"encoder expects images (B, {self.in_channels}, {self.image_size}, {self.image_size}), "
                             f"got {tuple(x.shape)}")
        return torch.cat(self.trunk(to_tanh(x)), 1)


@register
class ImprovedGAN(GanMethod):
    name = "improved-gan"
    paper = "Salimans et al. 2016, Improved Techniques for Training GANs"
    Config = ImprovedGanConfig
    uses_labels = True

    def __init__(self, cfg: ImprovedGanConfig, shape):
        super().__init__(cfg, shape)
        c, s, _ = self.shape
        if cfg.arch not in ("conv", "mlp"):
            raise UnsupError(f"improved-gan: arch must be 'conv' or 'mlp' (the paper's MNIST model), got {cfg.arch!r}")
        if not 0 <= cfg.ema_rate < 1:
            raise UnsupError(f"improved-gan: ema_rate must be in [0, 1), got {cfg.ema_rate}")
        if cfg.arch == "mlp":
            self.uniform_latent = True  # the paper's MNIST G: uniform noise
            self.gen = MLPGenerator(cfg.z_dim, c, s)
            self.disc = MLPDiscriminator(c * s * s, cfg.num_classes)
            self.encoder = MLPFeatures(self.disc.trunk, c, s)
        else:
            self._conv_nets(cfg, c, s)
        self._lab_x = self._lab_y = None
        # the MLP D is initialised from data before its first step (a buffer: a resumed run keeps its weights)
        self.register_buffer("initialised", torch.tensor(cfg.arch != "mlp"))
        if cfg.ema_rate > 0:
            self.disc_avg = copy.deepcopy(self.disc).requires_grad_(False)
            for p in self.disc_avg.parameters():
                p.zero_()
            self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))

    def _conv_nets(self, cfg, c, s):
        self.gen = Generator(cfg.z_dim, c, s, cfg.g_width)
        if cfg.d_norm == "weight":
            self.disc = WeightNormDiscriminator(c, s, cfg.d_width, cfg.num_classes, cfg.dropout, cfg.input_dropout, cfg.noise)
        elif cfg.d_norm == "batch":
            self.disc = Discriminator(c, s, cfg.d_width, out=cfg.num_classes, dropout=cfg.dropout)
        else:
            raise UnsupError(f"improved-gan: d_norm must be 'batch' or 'weight', got {cfg.d_norm!r}")
        self.encoder = PooledFeatures(self.disc.trunk, c, s)

    def check_training_set(self, data) -> None:
        if data.labels is None:
            raise UnsupError(f"improved-gan is semi-supervised: {data.name} has no labels; pretrain on a labelled dataset")
        if data.num_classes != self.cfg.num_classes:
            raise UnsupError(f"improved-gan: {data.name} has {data.num_classes} classes but num_classes={self.cfg.num_classes}; "
                             f"pass -o num_classes={data.num_classes}")
        few_label_indices(data.labels, self.cfg.labels_per_class, self.cfg.seed)  # too few labels per class fail here

    def on_epoch_start(self, data, epoch: int) -> None:
        if self._lab_x is not None:
            return
        self.check_training_set(data)
        idx = few_label_indices(data.labels, self.cfg.labels_per_class, self.cfg.seed).to(data.images.device)
        self._lab_x, self._lab_y = data.images[idx], data.labels[idx]
        if not bool(self.initialised):  # the paper: data-dependent init of D's weight norm on 500 training images
            g = torch.Generator().manual_seed(self.cfg.seed)
            pick = torch.randperm(len(data), generator=g)[:500].to(data.images.device)
            self.disc.data_init(to_tanh(data.images[pick].float() / 255))
            self.initialised.fill_(True)

    def after_step(self, progress: float) -> None:
        # the paper's averaging: a <- a + rate (p - a), from a = 0; a batch-norm D's running statistics are the live D's
        if self.cfg.ema_rate > 0:
            self.ema_steps += 1
            ema_update(self.disc_avg, self.disc, 1 - self.cfg.ema_rate)

    def test_disc(self) -> nn.Module:
        """The D that predicts: the live one, or a copy holding its bias-corrected parameter average."""
        if self.cfg.ema_rate <= 0 or int(self.ema_steps) == 0:
            return self.disc
        out = copy.deepcopy(self.disc_avg)
        corr = 1 - (1 - self.cfg.ema_rate) ** int(self.ema_steps)  # the paper's steps make this 1; short runs need it
        with torch.no_grad():
            for p in out.parameters():
                p.div_(corr)
        return out

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
        fr, ff = (f[k].float().mean((2, 3)) if f[k].ndim == 4 else f[k].float() for f in (feats_r, feats_f))
        return ((fr.mean(0) - ff.mean(0)) ** 2).mean(), {}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """D's class for uint8 images."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        disc = self.test_disc().eval()
        out = torch.cat([disc(to_tanh(images[i : i + 1000].to(dev).float() / 255))[0].argmax(1).cpu()
                         for i in range(0, len(images), 1000)])
        self.train(was)
        return out

    def test_error(self, test) -> float:
        return float((self.predict(test.images) != test.labels.cpu()).float().mean())

    def family_metrics(self, data: str, device) -> dict[str, float]:
        """``test_accuracy``: the accuracy of D's K-class argmax (its Polyak average when ``ema_rate`` > 0) on
        the whole probe test split of ``data``: the semi-supervised classifier itself, trained with
        ``labels_per_class`` labels. No sample FCD: feature matching trains G for D's sake, and the paper
        reports its samples as worse than minibatch discrimination's."""
        _train, test = self.probe_datasets(data)
        self.to(device)
        return {"test_accuracy": 1.0 - self.test_error(test)}

    def figures(self, data, out_dir: Path) -> list[Path]:
        return self.base_figures(out_dir, f"Improved GAN ({self.cfg.labels_per_class} labels/class)")
