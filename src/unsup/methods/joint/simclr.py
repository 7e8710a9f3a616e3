"""SimCLR: Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for
Contrastive Learning of Visual Representations", ICML 2020.

Two random views of each image (crop + flip + jitter + blur); encoder, then a
2-layer MLP projection head; the NT-Xent loss: each view must pick its
partner among the 2N-1 other views of the batch, with cosine similarity over
a temperature. The choices that matter per the paper: strong crop + colour
augmentation, the projection head (features are taken before it), a large
batch of negatives (gathered across processes here under torchrun).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ...data import augment
from ...nets import projection_mlp
from ...registry import register
from ...train import distributed as dist
from ..base import Method, MethodConfig


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over local queries against the views of every process."""
    b = len(z1)
    q = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    k1, k2 = dist.gather_with_grad(F.normalize(z1.float(), dim=1)), dist.gather_with_grad(F.normalize(z2.float(), dim=1))
    keys = torch.cat([k1, k2])
    big_b = len(k1)
    offset = dist.rank() * b
    logits = q @ keys.T / temperature
    local = torch.arange(b, device=q.device) + offset
    self_idx = torch.cat([local, local + big_b])
    pos_idx = torch.cat([local + big_b, local])
    logits[torch.arange(2 * b, device=q.device), self_idx] = float("-inf")
    return F.cross_entropy(logits, pos_idx)


@dataclass
class SimCLRConfig(MethodConfig):
    temperature: float = 0.5  # the paper's CIFAR-10 setting
    proj_hidden: int = 512
    proj_dim: int = 128


@register
class SimCLR(Method):
    name = "simclr"
    family = "joint embedding"
    paper = "Chen et al. 2020, A Simple Framework for Contrastive Learning of Visual Representations"
    Config = SimCLRConfig

    def __init__(self, cfg: SimCLRConfig, shape):
        super().__init__(cfg, shape)
        self.encoder = self.make_encoder()
        self.projector = projection_mlp(self.encoder.out_dim, cfg.proj_hidden, cfg.proj_dim)

    def training_loss(self, images):
        b = len(images)
        views = augment(torch.cat([images, images]), self.cfg.augment)
        z = self.projector(self.encoder(views))
        loss = nt_xent(z[:b], z[b:], self.cfg.temperature)
        return loss, {}

    def figures(self, data, out_dir: Path) -> list[Path]:
        from ...evaluate.features import extract_features
        from ...report.figures import save_embedding_plot

        test = data.subset(torch.arange(min(2000, len(data))))
        if test.labels is None:
            return []
        feats = extract_features(self.encoder, test.images, next(self.parameters()).device)
        path = Path(out_dir) / "embedding.png"
        save_embedding_plot(feats, test.labels.cpu(), data.classes, path, title="SimCLR features, t-SNE")
        return [path]
