"""InfoGAN: Chen, Duan, Houthooft, Schulman, Sutskever & Abbeel, "InfoGAN:
Interpretable Representation Learning by Information Maximizing Generative
Adversarial Nets", NeurIPS 2016.

The generator's input is noise z (62-d, as the paper) plus a structured code
c: a 10-way categorical code and continuous codes uniform in [-1, 1] (the
paper's MNIST setting). A head Q on the discriminator's last layer (sharing
its trunk, with its own fully connected layers) predicts c from an image;
maximising the variational lower bound of the mutual information
I(c; G(z, c)) adds lambda * (cross-entropy of the categorical code +
``continuous_weight`` * the Gaussian negative log-likelihood of the
continuous codes, unit variance or, with ``continuous_nll="factored"``, a
variance predicted by Q) to both the generator's and the D/Q loss
(lambda = 1, the paper's value for a categorical code). Adam with lr 2e-4
for D/Q and 1e-3 for G, beta1 0.5, batch 64, batch norm in G and D (the
paper's MNIST choices). The categorical code, read back by Q (argmax) on
real test images, is an unsupervised classifier (scored after Hungarian
matching).

Scaled: the DCGAN nets of ``gan_nets`` for 28x28 (D: three strided
convolutions instead of the paper's two and a 1024-wide fully connected
layer); the generator keeps the paper's 1024-wide fully connected layer on
(z, c) before the projection to 7x7 (``g_hidden``): without it the code
settled on style more often (accuracy 0.457 vs 0.515 at 300k images, one
run each; benchmarks/results/generative.md). No batch norm in Q (it sees
generated batches only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UnsupError
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
    to_tanh,
)


@dataclass
class InfoGanConfig(GanConfig):
    z_dim: int = 62
    batch_size: int = 64  # the paper's batch (64 / 100); 32 left the code on style more often (see generative.md)
    g_lr: float = 1e-3  # the paper's MNIST code: 2e-4 for D/Q, 1e-3 for G
    categories: int = 10
    continuous: int = 2
    info_weight: float = 1.0  # lambda for the categorical code (the paper: 1)
    continuous_weight: float = 0.2  # extra weight on the continuous codes' negative log-likelihood (mean over codes)
    continuous_nll: str = "fixed"  # "fixed": unit-variance Gaussian; "factored": Q also predicts each code's log-std
    q_hidden: int = 128
    g_hidden: int = 1024  # > 0: a BN-ReLU fully connected layer of this width on (z, c) first (the paper's MNIST G: 1024)


def hungarian_accuracy(pred: torch.Tensor, labels: torch.Tensor, k: int | None = None) -> float:
    """Accuracy after the best one-to-one matching of predicted codes to classes."""
    from scipy.optimize import linear_sum_assignment

    pred, labels = pred.cpu().long(), labels.cpu().long()
    k = k or int(max(pred.max(), labels.max())) + 1
    confusion = torch.zeros(k, k, dtype=torch.long)
    confusion.index_put_((pred, labels), torch.ones_like(pred), accumulate=True)
    rows, cols = linear_sum_assignment(-confusion.numpy())
    return float(confusion[rows, cols].sum()) / len(pred)


@register
class InfoGAN(GanMethod):
    name = "infogan"
    paper = "Chen et al. 2016, InfoGAN: Interpretable Representation Learning by Information Maximizing GANs"
    Config = InfoGanConfig

    def __init__(self, cfg: InfoGanConfig, shape):
        super().__init__(cfg, shape)
        if cfg.continuous_nll not in ("fixed", "factored"):
            raise UnsupError(f"infogan: continuous_nll must be 'fixed' or 'factored', got {cfg.continuous_nll!r}")
        c, s, _ = self.shape
        if cfg.g_hidden:  # the paper's MNIST generator: a fully connected layer before the projection to 7x7
            self.gen = nn.Sequential(nn.Linear(self.latent_dim(), cfg.g_hidden, bias=False), nn.BatchNorm1d(cfg.g_hidden),
                                     nn.ReLU(True), Generator(cfg.g_hidden, c, s, cfg.g_width))
        else:
            self.gen = Generator(self.latent_dim(), c, s, cfg.g_width)
        self.disc = Discriminator(c, s, cfg.d_width)
        cont_out = cfg.continuous * (2 if cfg.continuous_nll == "factored" else 1)  # factored: a mean and a log-std per code
        # no batch norm in Q: it only ever sees generated batches, its running statistics would not fit real images
        self.q = nn.Sequential(nn.Linear(self.disc.head.in_features, cfg.q_hidden), nn.LeakyReLU(0.2, True), nn.Linear(cfg.q_hidden, cfg.categories + cont_out))
        self.encoder = PooledFeatures(self.disc.trunk, c, s)

    def latent_dim(self) -> int:
        return self.cfg.z_dim + self.cfg.categories + self.cfg.continuous

    def make_latent(self, z: torch.Tensor, cat: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, F.one_hot(cat, self.cfg.categories).to(z.dtype), cont], 1)

    def sample_latent(self, n, device, generator=None):
        cfg = self.cfg
        z = torch.randn(n, cfg.z_dim, generator=generator)
        cat = torch.randint(cfg.categories, (n,), generator=generator)
        cont = torch.rand(n, cfg.continuous, generator=generator) * 2 - 1
        return self.make_latent(z, cat, cont).to(device)

    def split_latent(self, latent):
        cfg = self.cfg
        return latent[:, cfg.z_dim : cfg.z_dim + cfg.categories].argmax(1), latent[:, cfg.z_dim + cfg.categories :]

    def info_loss(self, last_feats, latent) -> tuple[torch.Tensor, float]:
        cfg = self.cfg
        out = self.q(last_feats.flatten(1)).float()
        cat, cont = self.split_latent(latent)
        ce = F.cross_entropy(out[:, : cfg.categories], cat)
        mu = out[:, cfg.categories : cfg.categories + cfg.continuous]
        err = (mu - cont.float()) ** 2
        if cfg.continuous_nll == "factored":  # -log N(c; mu, sigma^2) up to a constant, sigma predicted by Q
            log_std = out[:, cfg.categories + cfg.continuous :].clamp(-5, 5)
            nll = (log_std + 0.5 * err * torch.exp(-2 * log_std)).mean()
        else:  # unit variance
            nll = 0.5 * err.mean()
        acc = float((out[:, : cfg.categories].argmax(1) == cat).float().mean())
        return cfg.info_weight * (ce + cfg.continuous_weight * nll), acc

    def d_parameters(self):
        return list(self.disc.parameters()) + list(self.q.parameters())

    def g_parameters(self):
        return list(self.gen.parameters())

    def d_step_loss(self, real, extra):
        self._latent = self.sample_latent(len(real), real.device)
        self._fake = self.gen(self._latent)
        real_logit, _ = self.disc(real)
        with real_bn_stats(self):
            fake_logit, feats = self.disc(self._fake.detach())
            info, acc = self.info_loss(feats[-1], self._latent)
        return d_loss_bce(real_logit, fake_logit) + info, {"q_code_acc": acc}

    def g_step_loss(self, real, extra):
        with real_bn_stats(self):
            fake_logit, feats = self.disc(self._fake)
            info, _ = self.info_loss(feats[-1], self._latent)
        return g_loss_nonsaturating(fake_logit) + info, {"info_loss": float(info.detach())}

    @torch.no_grad()
    def predict_code(self, images01: torch.Tensor) -> torch.Tensor:
        """Q's categorical code for real images in [0, 1]."""
        feats = self.disc.trunk(to_tanh(images01))
        return self.q(feats[-1].flatten(1))[:, : self.cfg.categories].argmax(1)

    def code_accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Unsupervised accuracy of the categorical code (Hungarian matching)."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        pred = torch.cat([self.predict_code(images[i : i + 1000].to(dev).float() / 255).cpu()
                          for i in range(0, len(images), 1000)])
        self.train(was)
        return hungarian_accuracy(pred, labels, max(self.cfg.categories, int(labels.max()) + 1))

    @torch.no_grad()
    def code_grid(self, code: int = 0, steps: int = 10, seed: int = 3) -> torch.Tensor:
        """Rows = categorical value, columns = continuous code ``code`` from -2 to 2 (one z per row)."""
        cfg = self.cfg
        dev = next(self.parameters()).device
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(1, cfg.z_dim, generator=g).repeat(cfg.categories * steps, 1)
        cat = torch.arange(cfg.categories).repeat_interleave(steps)
        cont = torch.zeros(cfg.categories * steps, cfg.continuous)
        cont[:, code] = torch.linspace(-2, 2, steps).repeat(cfg.categories)
        return from_tanh(self.gen(self.make_latent(z, cat, cont).to(dev)))

    @torch.no_grad()
    def figures(self, data, out_dir: Path) -> list[Path]:
        from ...report.figures import save_image_grid

        paths = self.base_figures(out_dir, "InfoGAN")
        was = self.training
        self.eval()
        for j in range(self.cfg.continuous):
            paths.append(save_image_grid(self.code_grid(j).cpu(), Path(out_dir) / f"codes_c{j + 1}.png", nrow=10,
                                         title=f"InfoGAN: rows = categorical code, columns = continuous code {j + 1} from -2 to 2"))
        self.train(was)
        return paths

    def conditional_report(self, clf, train, device) -> dict:
        return {}
