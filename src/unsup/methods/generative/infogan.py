"""InfoGAN: Chen, Duan, Houthooft, Schulman, Sutskever & Abbeel, "InfoGAN:
Interpretable Representation Learning by Information Maximizing Generative
Adversarial Nets", NeurIPS 2016.

The generator's input is noise z (62-d, uniform in [-1, 1] as in the official
code, openai/InfoGAN ``run_mnist_exp.py``) plus a structured code c: a 10-way
categorical code and 2 continuous codes uniform in [-1, 1] (the paper's MNIST
setting). A head Q shares the discriminator's trunk and predicts c from an
image; maximising the variational lower bound of the mutual information
I(c; G(z, c)) adds lambda * (cross-entropy of the categorical code +
``continuous_weight`` * the Gaussian negative log-likelihood of the
continuous codes, summed over the codes; unit variance or, with
``continuous_nll="factored"``, a variance predicted by Q) to both the
generator's and the D/Q loss (lambda = 1 and continuous_weight = 1: the
official code's ``info_reg_coeff`` on the summed log-likelihoods). Adam with
lr 2e-4 for D/Q and 1e-3 for G, beta1 0.5, batch 64, batch norm in G, D and Q
(the paper's MNIST choices). The categorical code, read back by Q (argmax) on
real test images, is an unsupervised classifier (scored after Hungarian
matching).

Nets (``regularized_gan.py``, network "mnist", of the official code): G = a
1024-wide fully connected BN-ReLU layer on (z, c) (``g_hidden``), then the
DCGAN generator of ``gan_nets``. D = the DCGAN conv trunk of ``gan_nets``
(three strided convolutions; the official code has two, 64 and 128 wide),
then a 1024-wide fully connected BN-LeakyReLU layer (``d_hidden``) shared by
D's real/fake logit and Q; Q = fully connected 128 BN-LeakyReLU, then the
code outputs. The official LeakyReLU slope 0.01 is used on the layers added
here (``fc_leak``); the shared conv trunk keeps DCGAN's 0.2. The pooled-
feature encoder (``unsup probe``) reads the conv trunk.

Batch norm and real images: the batch norms of D (trunk and shared layer)
keep running statistics of real batches only (``real_bn_stats``). Q's batch
norm only ever sees generated batches in its loss; each D step also passes
the real batch through Q's first layer without gradient, so that its running
statistics, used when Q reads the code of real images in eval mode, describe
real images as well (the official TF code has no separate evaluation path).

The model before these official-code choices (Gaussian z, Q without batch norm
on the last conv layer, continuous codes weighted 10 times less) is ``z_prior="gaussian",
d_hidden=0, q_bn=False, fc_leak=0.2, continuous_weight=0.1``.
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
    ConvTrunk,
    GanConfig,
    GanMethod,
    Generator,
    PooledFeatures,
    d_loss_bce,
    from_tanh,
    g_loss_nonsaturating,
    real_bn_stats,
    to_tanh,
    trunk_out_size,
)


@dataclass
class InfoGanConfig(GanConfig):
    z_dim: int = 62
    z_prior: str = "uniform"  # "uniform": z ~ U[-1, 1] (the official code); "gaussian": N(0, I)
    batch_size: int = 64  # the paper's batch (64 / 100); 32 left the code on style more often (see generative.md)
    g_lr: float = 1e-3  # the paper's MNIST code: 2e-4 for D/Q, 1e-3 for G
    categories: int = 10
    continuous: int = 2
    info_weight: float = 1.0  # lambda (the official code: info_reg_coeff 1)
    continuous_weight: float = 1.0  # weight on the continuous codes' negative log-likelihood, summed over codes (official: 1)
    continuous_nll: str = "fixed"  # "fixed": unit-variance Gaussian; "factored": Q also predicts each code's log-std
    d_hidden: int = 1024  # > 0: D's shared fully connected BN-LeakyReLU layer (official: 1024); 0: logit and Q on the last conv layer
    q_hidden: int = 128
    q_bn: bool = True  # batch norm in Q's hidden layer (official)
    fc_leak: float = 0.01  # LeakyReLU slope of D's shared layer and Q (the official leaky_rectify: 0.01)
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


class InfoDiscriminator(nn.Module):
    """The DCGAN conv trunk, a shared fully connected layer (``hidden`` > 0)
    and the real/fake logit; returns the logit and the shared features Q reads."""

    def __init__(self, channels: int, size: int, width: int, hidden: int, leak: float):
        super().__init__()
        self.trunk = ConvTrunk(channels, width)
        flat = 4 * width * trunk_out_size(size) ** 2
        if hidden:
            self.shared = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden, bias=False), nn.BatchNorm1d(hidden),
                                        nn.LeakyReLU(leak, True))
        else:
            self.shared = nn.Flatten()
        self.out_features = hidden or flat
        self.head = nn.Linear(self.out_features, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.trunk(x)[-1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.head(h), h


@register
class InfoGAN(GanMethod):
    name = "infogan"
    paper = "Chen et al. 2016, InfoGAN: Interpretable Representation Learning by Information Maximizing GANs"
    Config = InfoGanConfig

    def __init__(self, cfg: InfoGanConfig, shape):
        super().__init__(cfg, shape)
        if cfg.continuous_nll not in ("fixed", "factored"):
            raise UnsupError(f"infogan: continuous_nll must be 'fixed' or 'factored', got {cfg.continuous_nll!r}")
        if cfg.z_prior not in ("uniform", "gaussian"):
            raise UnsupError(f"infogan: z_prior must be 'uniform' or 'gaussian', got {cfg.z_prior!r}")
        c, s, _ = self.shape
        if cfg.g_hidden:  # the paper's MNIST generator: a fully connected layer before the projection to 7x7
            self.gen = nn.Sequential(nn.Linear(self.latent_dim(), cfg.g_hidden, bias=False), nn.BatchNorm1d(cfg.g_hidden),
                                     nn.ReLU(True), Generator(cfg.g_hidden, c, s, cfg.g_width))
        else:
            self.gen = Generator(self.latent_dim(), c, s, cfg.g_width)
        self.disc = InfoDiscriminator(c, s, cfg.d_width, cfg.d_hidden, cfg.fc_leak)
        cont_out = cfg.continuous * (2 if cfg.continuous_nll == "factored" else 1)  # factored: a mean and a log-std per code
        hidden: list[nn.Module] = [nn.Linear(self.disc.out_features, cfg.q_hidden, bias=not cfg.q_bn)]
        if cfg.q_bn:
            hidden.append(nn.BatchNorm1d(cfg.q_hidden))
        self.q = nn.Sequential(*hidden, nn.LeakyReLU(cfg.fc_leak, True), nn.Linear(cfg.q_hidden, cfg.categories + cont_out))
        self.encoder = PooledFeatures(self.disc.trunk, c, s)

    def latent_dim(self) -> int:
        return self.cfg.z_dim + self.cfg.categories + self.cfg.continuous

    def make_latent(self, z: torch.Tensor, cat: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, F.one_hot(cat, self.cfg.categories).to(z.dtype), cont], 1)

    def draw_z(self, n: int, generator=None, device="cpu") -> torch.Tensor:
        if self.cfg.z_prior == "uniform":
            return torch.rand(n, self.cfg.z_dim, generator=generator, device=device) * 2 - 1
        return torch.randn(n, self.cfg.z_dim, generator=generator, device=device)

    def sample_latent(self, n, device, generator=None):
        # a seeded draw (figures, samples) uses its CPU generator; a training step draws on the device, no copy
        cfg = self.cfg
        dev = "cpu" if generator is not None else device
        z = self.draw_z(n, generator, dev)
        cat = torch.randint(cfg.categories, (n,), generator=generator, device=dev)
        cont = torch.rand(n, cfg.continuous, generator=generator, device=dev) * 2 - 1
        return self.make_latent(z, cat, cont).to(device)

    def split_latent(self, latent):
        cfg = self.cfg
        return latent[:, cfg.z_dim : cfg.z_dim + cfg.categories].argmax(1), latent[:, cfg.z_dim + cfg.categories :]

    def info_loss(self, shared_feats, latent) -> tuple[torch.Tensor, float]:
        cfg = self.cfg
        out = self.q(shared_feats).float()
        cat, cont = self.split_latent(latent)
        ce = F.cross_entropy(out[:, : cfg.categories], cat)
        mu = out[:, cfg.categories : cfg.categories + cfg.continuous]
        err = (mu - cont.float()) ** 2
        if cfg.continuous_nll == "factored":  # -log N(c; mu, sigma^2) up to a constant, sigma predicted by Q
            log_std = out[:, cfg.categories + cfg.continuous :].clamp(-5, 5)
            nll = (log_std + 0.5 * err * torch.exp(-2 * log_std)).sum(1).mean()
        else:  # unit variance
            nll = 0.5 * err.sum(1).mean()
        acc = float((out[:, : cfg.categories].argmax(1) == cat).float().mean())
        return cfg.info_weight * (ce + cfg.continuous_weight * nll), acc

    def d_parameters(self):
        return list(self.disc.parameters()) + list(self.q.parameters())

    def g_parameters(self):
        return list(self.gen.parameters())

    def d_step_loss(self, real, extra):
        self._latent = self.sample_latent(len(real), real.device)
        self._fake = self.gen(self._latent)
        real_logit, real_h = self.disc(real)
        if self.cfg.q_bn:  # Q's running statistics follow real batches (its loss sees generated ones only)
            with torch.no_grad():
                self.q[:2](real_h.detach())
        with real_bn_stats(self):
            fake_logit, h = self.disc(self._fake.detach())
            info, acc = self.info_loss(h, self._latent)
        return d_loss_bce(real_logit, fake_logit) + info, {"q_code_acc": acc}

    def g_step_loss(self, real, extra):
        with real_bn_stats(self):
            fake_logit, h = self.disc(self._fake)
            info, _ = self.info_loss(h, self._latent)
        return g_loss_nonsaturating(fake_logit) + info, {"info_loss": float(info.detach())}

    @torch.no_grad()
    def predict_code(self, images01: torch.Tensor) -> torch.Tensor:
        """Q's categorical code for real images in [0, 1] (eval mode: running statistics of real batches)."""
        return self.q(self.disc.features(to_tanh(images01)))[:, : self.cfg.categories].argmax(1)

    def code_accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Unsupervised accuracy of the categorical code (Hungarian matching)."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        pred = torch.cat([self.predict_code(images[i : i + 1000].to(dev).float() / 255).cpu()
                          for i in range(0, len(images), 1000)])
        self.train(was)
        return hungarian_accuracy(pred, labels, max(self.cfg.categories, int(labels.max()) + 1))

    def sample_metrics(self, clf, train, test, device) -> dict[str, float]:
        """``fcd`` and ``code_accuracy``: the categorical code's accuracy on the whole test split (Hungarian)."""
        return {**super().sample_metrics(clf, train, test, device), "code_accuracy": self.code_accuracy(test.images, test.labels)}

    @torch.no_grad()
    def code_grid(self, code: int = 0, steps: int = 10, seed: int = 3) -> torch.Tensor:
        """Rows = categorical value, columns = continuous code ``code`` from -2 to 2 (one z per row)."""
        cfg = self.cfg
        dev = next(self.parameters()).device
        g = torch.Generator().manual_seed(seed)
        z = self.draw_z(1, g).repeat(cfg.categories * steps, 1)
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
