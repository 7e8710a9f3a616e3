"""Text-to-image GAN (GAN-CLS): Reed, Akata, Yan, Logeswaran, Schiele & Lee,
"Generative Adversarial Text to Image Synthesis", ICML 2016.

The generator takes noise z and a compressed embedding of a description
phi(t); the *matching-aware* discriminator scores (image, text) pairs and
learns three cases: real image + its text (real), real image + mismatched
text (fake) and generated image + its text (fake), so it judges both realism
and whether the image fits the words. Descriptions are built from the label
and two attributes measured on each image against its class median:
size (share of object pixels) and brightness (mean object intensity), e.g.
"a small dark ankle boot". Instead of the paper's pre-trained char-CNN-RNN,
a small word-level GRU text encoder (hashed word embeddings) is trained with
the discriminator; the generator sees its output without gradient. Scaled:
DCGAN nets of ``gan_nets`` for 28x28; text code of 32, compressed to 32 (the
paper: 1024 -> 128); the paper's GAN-INT interpolation term is left out.
"""

from __future__ import annotations

import zlib
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
    from_tanh,
    g_loss_nonsaturating,
    real_bn_stats,
    trunk_out_size,
)
from .pictures import ink_brightness

SIZES, SHADES = ("small", "large"), ("dark", "light")


@dataclass
class TextGanConfig(GanConfig):
    num_classes: int = 10
    max_words: int = 6
    vocab: int = 512  # hashed word buckets
    text_dim: int = 32
    text_hidden: int = 64
    cond_dim: int = 32  # the compressed text code both nets see


def ink_area(images01: torch.Tensor, thresh: float = 0.1) -> torch.Tensor:
    return (images01.float().flatten(1) > thresh).float().mean(1)


def tokenize(text: str, max_words: int, vocab: int) -> list[int]:
    """Hashed word ids (0 = padding), padded on the left so the GRU ends on the last word."""
    words = text.lower().replace("/", " ").replace("-", " ").split()[:max_words]
    ids = [zlib.crc32(w.encode()) % (vocab - 1) + 1 for w in words]
    return [0] * (max_words - len(ids)) + ids


class TextEncoder(nn.Module):
    def __init__(self, vocab: int, hidden: int, out_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden, padding_idx=0)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(self.embed(tokens))
        return self.out(h[-1])


class MatchingDiscriminator(nn.Module):
    """DCGAN trunk; the text code tiled over its last grid, a 1x1 conv, a logit."""

    def __init__(self, channels: int, size: int, width: int, cond_dim: int):
        super().__init__()
        self.trunk = ConvTrunk(channels, width)
        self.s = trunk_out_size(size)
        self.join = nn.Sequential(nn.Conv2d(4 * width + cond_dim, 4 * width, 1), nn.BatchNorm2d(4 * width), nn.LeakyReLU(0.2, True))
        self.head = nn.Linear(4 * width * self.s * self.s, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        f = self.trunk(x)[-1]
        c = cond[:, :, None, None].expand(-1, -1, self.s, self.s)
        return self.head(self.join(torch.cat([f, c], 1)).flatten(1))


@register
class TextToImageGAN(GanMethod):
    name = "text-to-image-gan"
    paper = "Reed et al. 2016, Generative Adversarial Text to Image Synthesis (GAN-CLS)"
    Config = TextGanConfig
    uses_labels = True  # the descriptions name the class

    def __init__(self, cfg: TextGanConfig, shape):
        super().__init__(cfg, shape)
        c, s, _ = self.shape
        k = cfg.num_classes
        self.text = TextEncoder(cfg.vocab, cfg.text_hidden, cfg.text_dim)
        self.g_cond = nn.Sequential(nn.Linear(cfg.text_dim, cfg.cond_dim), nn.LeakyReLU(0.2, True))
        self.d_cond = nn.Sequential(nn.Linear(cfg.text_dim, cfg.cond_dim), nn.LeakyReLU(0.2, True))
        self.gen = Generator(cfg.z_dim + cfg.cond_dim, c, s, cfg.g_width)
        self.disc = MatchingDiscriminator(c, s, cfg.d_width, cfg.cond_dim)
        self.encoder = PooledFeatures(self.disc.trunk, c, s)
        # per-class medians of the attributes and the token table of the 4K descriptions, set from the data
        self.register_buffer("size_median", torch.zeros(k))
        self.register_buffer("shade_median", torch.zeros(k))
        self.register_buffer("desc_tokens", torch.zeros(4 * k, cfg.max_words, dtype=torch.long))
        self.class_names: list[str] = [str(i) for i in range(k)]

    # --- descriptions -------------------------------------------------------
    @staticmethod
    def description(name: str, small: bool, dark: bool) -> str:
        return f"a {SIZES[0] if small else SIZES[1]} {SHADES[0] if dark else SHADES[1]} {name.lower()}"

    def description_index(self, cls: torch.Tensor, small: torch.Tensor, dark: torch.Tensor) -> torch.Tensor:
        return cls * 4 + (~small).long() * 2 + (~dark).long()

    def set_descriptions(self, classes: list[str]) -> None:
        cfg = self.cfg
        self.class_names = list(classes) or [str(i) for i in range(cfg.num_classes)]
        rows = [tokenize(self.description(name, small, dark), cfg.max_words, cfg.vocab)
                for name in self.class_names for small in (True, False) for dark in (True, False)]
        self.desc_tokens.copy_(torch.tensor(rows))

    def attributes(self, images01: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(small, dark) booleans against the medians of each image's class."""
        return ink_area(images01) < self.size_median[cls], ink_brightness(images01) < self.shade_median[cls]

    def check_training_set(self, data) -> None:
        k = self.cfg.num_classes
        if data.labels is None:
            raise UnsupError(f"text-to-image-gan builds descriptions from labels: {data.name} has none; use a labelled dataset")
        if data.num_classes != k:
            raise UnsupError(f"text-to-image-gan: {data.name} has {data.num_classes} classes but num_classes={k}; "
                             f"pass -o num_classes={data.num_classes}")

    def on_epoch_start(self, data, epoch: int) -> None:
        if epoch > 0 and bool(self.desc_tokens.any()):
            return
        k = self.cfg.num_classes
        self.check_training_set(data)
        with torch.no_grad():
            area = torch.cat([ink_area(data.images[i : i + 5000].float() / 255) for i in range(0, len(data), 5000)])
            shade = torch.cat([ink_brightness(data.images[i : i + 5000].float() / 255) for i in range(0, len(data), 5000)])
            for c in range(k):
                m = data.labels == c
                self.size_median[c], self.shade_median[c] = area[m].median(), shade[m].median()
        self.set_descriptions(data.classes)

    # --- the latent: z and the text code ------------------------------------
    def latent_dim(self) -> int:
        return self.cfg.z_dim + self.cfg.text_dim

    def latent_for(self, desc: torch.Tensor, generator=None) -> torch.Tensor:
        z = torch.randn(len(desc), self.cfg.z_dim, generator=generator).to(desc.device)
        return torch.cat([z, self.text(self.desc_tokens[desc])], 1)

    def sample_latent(self, n, device, generator=None):
        desc = torch.randint(len(self.desc_tokens), (n,), generator=generator).to(device)
        return self.latent_for(desc, generator)

    def generate(self, latent):
        z, t = latent[:, : self.cfg.z_dim], latent[:, self.cfg.z_dim :]
        return self.gen(torch.cat([z, self.g_cond(t)], 1))

    # --- training -----------------------------------------------------------
    def d_parameters(self):
        return list(self.disc.parameters()) + list(self.d_cond.parameters()) + list(self.text.parameters())

    def g_parameters(self):
        return list(self.gen.parameters()) + list(self.g_cond.parameters())

    def d_step_loss(self, real, labels):
        if labels is None:
            raise UnsupError("text-to-image-gan needs (images, labels) batches")
        small, dark = self.attributes(from_tanh(real), labels)
        desc = self.description_index(labels, small, dark)
        wrong = (desc + torch.randint(1, len(self.desc_tokens), desc.shape, device=desc.device)) % len(self.desc_tokens)
        h = self.text(self.desc_tokens[torch.cat([desc, wrong])])
        h_right, h_wrong = h[: len(desc)], h[len(desc) :]
        z = torch.randn(len(real), self.cfg.z_dim, device=real.device)
        self._h = h_right.detach()
        self._fake = self.generate(torch.cat([z, self._h], 1))
        s_real = self.disc(real, self.d_cond(h_right))
        with real_bn_stats(self.disc):
            s_wrong = self.disc(real, self.d_cond(h_wrong))
            s_fake = self.disc(self._fake.detach(), self.d_cond(h_right))
        bce = F.binary_cross_entropy_with_logits
        loss = bce(s_real, torch.ones_like(s_real)) + 0.5 * (bce(s_wrong, torch.zeros_like(s_wrong)) + bce(s_fake, torch.zeros_like(s_fake)))
        return loss, {"d_real": float(torch.sigmoid(s_real.detach()).mean()), "d_wrong": float(torch.sigmoid(s_wrong.detach()).mean())}

    def g_step_loss(self, real, labels):
        with real_bn_stats(self.disc):
            s_fake = self.disc(self._fake, self.d_cond(self._h))
        return g_loss_nonsaturating(s_fake), {}

    # --- samples for descriptions -------------------------------------------
    @torch.no_grad()
    def sample_descriptions(self, desc: torch.Tensor, seed: int = 0) -> torch.Tensor:
        was = self.training
        self.eval()
        g = torch.Generator().manual_seed(seed)
        dev = self.desc_tokens.device
        out = torch.cat([from_tanh(self.generate(self.latent_for(d.to(dev), g))) for d in desc.split(1000)])
        self.train(was)
        return out

    def conditional_report(self, clf, train, device, per_description: int = 100) -> dict:
        """Share of samples classified as the named class, and share whose size/brightness words hold."""
        from ...evaluate.generative import classify

        k = self.cfg.num_classes
        desc = torch.arange(4 * k).repeat_interleave(per_description)
        imgs = self.sample_descriptions(desc).cpu()
        cls, small_want, dark_want = desc // 4, (desc % 4) < 2, desc % 2 == 0
        pred = classify(clf, imgs)
        small, dark = (t.cpu() for t in self.attributes(imgs.to(self.size_median.device), cls.to(self.size_median.device)))
        return {"named_class_accuracy": float((pred == cls).float().mean()),
                "size_word_holds": float((small == small_want).float().mean()),
                "brightness_word_holds": float((dark == dark_want).float().mean()),
                "n_descriptions": 4 * k, "samples_per_description": per_description}

    def sample_metrics(self, clf, train, test, device) -> dict[str, float]:
        """``fcd`` and GAN-CLS's numbers (``conditional_report``): ``named_class_accuracy``, the share of samples
        the reference classifier assigns to the class their description names (100 per description), and
        ``size_word_holds`` / ``brightness_word_holds`` (0.5 = chance)."""
        rep = self.conditional_report(clf, train, device)
        return {**super().sample_metrics(clf, train, test, device),
                **{k: rep[k] for k in ("named_class_accuracy", "size_word_holds", "brightness_word_holds")}}

    @torch.no_grad()
    def figures(self, data, out_dir: Path) -> list[Path]:
        from ...report.figures import save_image_grid

        if data.classes:
            self.set_descriptions(data.classes)
        paths = self.base_figures(out_dir, "GAN-CLS")
        k, cols = self.cfg.num_classes, 8
        # rows: "a small dark X" and "a large light X" for every class; columns: noise
        desc = torch.tensor([d for c in range(k) for d in (4 * c, 4 * c + 3)]).repeat_interleave(cols)
        imgs = self.sample_descriptions(desc, seed=5)
        paths.append(save_image_grid(imgs.cpu(), Path(out_dir) / "descriptions.png", nrow=cols,
                                     title="GAN-CLS: rows alternate 'a small dark <class>' / 'a large light <class>'"))
        # a walk in text space, noise fixed: "a small dark <A>" -> "a large light <B>"
        was = self.training
        self.eval()
        dev = self.desc_tokens.device
        steps = 10
        t = torch.linspace(0, 1, steps, device=dev)[:, None]
        rows = []
        g = torch.Generator().manual_seed(6)
        for a, b in [(0 % k, 1 % k), (5 % k, 7 % k), (2 % k, 8 % k), (9 % k, 3 % k)]:
            ha, hb = self.text(self.desc_tokens[torch.tensor([4 * a, 4 * b + 3], device=dev)])
            z = torch.randn(1, self.cfg.z_dim, generator=g).to(dev).expand(steps, -1)
            rows.append(from_tanh(self.generate(torch.cat([z, ha * (1 - t) + hb * t], 1))))
        self.train(was)
        paths.append(save_image_grid(torch.cat(rows).cpu(), Path(out_dir) / "text_walk.png", nrow=steps,
                                     title="GAN-CLS: text-embedding walks 'a small dark A' -> 'a large light B', noise fixed"))
        return paths
