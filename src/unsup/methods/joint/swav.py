"""SwAV: Caron, Misra, Mairal, Goyal, Bojanowski & Joulin, "Unsupervised
Learning of Visual Features by Contrasting Cluster Assignments", NeurIPS 2020.

Online clustering with swapped prediction: every crop's L2-normalised
embedding is scored against K learnable prototypes (unit vectors,
renormalised after every step); the codes (soft cluster assignments) of the
global crops come from Sinkhorn-Knopp under an equipartition constraint over
the batch (which is what prevents collapse: every prototype gets the same
share of samples), and each crop must predict, by a softmax of its scores at
temperature 0.1, the code of every other global crop. Multi-crop (2 global +
small local crops at a lower resolution) is the paper's second contribution;
codes are computed on the global crops only. Here it is an option
(``n_local``), off by default: on 28-px images the small local crops made
the features worse in short runs (see ``SwAVConfig``).

Choices kept from the paper: Sinkhorn with 3 iterations and epsilon 0.05
(distributed: prototype sums over every process), temperature 0.1, a
2-layer MLP projector to 128 dimensions, prototypes frozen at the start of
training, the colour distortion of strength 1 (0.8, 0.8, 0.8, 0.2) with
grayscale 0.2 and blur 0.5 on every crop, crop scales (0.14, 1) and (0.05,
0.14), weight decay 1e-6. Scaled for 28x28 images and a CPU budget: see
``SwAVConfig``. The queue of past embeddings (the paper's remedy for batches
smaller than the number of prototypes, started after 15 epochs) is optional
and off by default: in a run of a few epochs the embeddings move too fast for
stale ones to help, and with 300 prototypes a batch of 256 already spreads
over them (``queue_length`` turns it on).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...data.augment import AugmentConfig, multi_crop
from ...errors import UnsupError
from ...losses import sinkhorn_knopp, swav_loss
from ...nets.heads import projection_mlp
from ...registry import register
from ..base import MethodConfig
from .common import JointMethod, spread
from .multicrop import accept_local_crops


def _swav_augment() -> AugmentConfig:
    # the paper's crops and colour distortion; saturation, hue and grayscale are no-ops on gray images; blur sigma
    # is the library's 28-px range (the paper's 0.1-2.0 px is for 224-px images)
    return AugmentConfig(crop_scale=(0.14, 1.0), brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2,
                         jitter_prob=0.8, grayscale=0.2, blur_prob=0.5, blur_sigma=(0.1, 1.5))


@dataclass
class SwAVConfig(MethodConfig):
    weight_decay: float = 1e-6  # the paper's (with LARS); AdamW at the library's 1e-3 for the small convnet on a CPU
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    prototypes: int = 300  # 3,000 in the paper for ImageNet; fewer for 60k images of 10 classes
    proj_hidden: int = 512  # 2,048 in the paper; the small convnet's features are 256-wide
    proj_dim: int = 128
    freeze_prototypes: float = 0.01  # share of the budget with the prototypes frozen (paper: the first epoch)
    queue_length: int = 0  # past embeddings per global view added to Sinkhorn's batch (paper: 3,840 at batch 256)
    queue_start: float = 0.15  # share of the budget after which the queue fills (paper: epoch 15 of 100)
    # local crops: the paper's 6 (``n_local=6``) are off by default here. On 28-px images a local crop of 5-14% of
    # the image (12 px) is mostly background, and the two global views alone scored higher on the validation split
    # at all four probes (+3 to +16 points; larger locals, 14-40% at 16 px, in between; results/modern_validation.md)
    n_local: int = 0
    local_size: int = 12  # the paper's 96/224 of the input size, for 28-px images
    local_scale: tuple[float, float] = (0.05, 0.14)
    augment: AugmentConfig = dataclasses.field(default_factory=_swav_augment)

    def validate(self) -> None:
        """The ranges the shared option table (``unsup.methods.base.RANGES``) does not hold."""
        if not 0 <= self.freeze_prototypes <= 1:
            raise UnsupError(f"option freeze_prototypes of swav must be in [0, 1]; got {self.freeze_prototypes!r}")
        if self.epsilon <= 0:
            raise UnsupError(f"option epsilon of swav must be positive; got {self.epsilon!r}")


@register
class SwAV(JointMethod):
    name = "swav"
    paper = "Caron et al. 2020, Unsupervised Learning of Visual Features by Contrasting Cluster Assignments"
    Config = SwAVConfig

    def __init__(self, cfg: SwAVConfig, shape):
        cfg = accept_local_crops(cfg)
        super().__init__(cfg, shape)
        self.encoder = self.make_encoder()
        self.projector = projection_mlp(self.encoder.out_dim, cfg.proj_hidden, cfg.proj_dim)
        self.prototypes = nn.Linear(cfg.proj_dim, cfg.prototypes, bias=False)
        self.normalize_prototypes()
        self.progress = 0.0  # share of the budget spent: a plain attribute (no device read), checkpointed for resume
        if cfg.queue_length:
            self.register_buffer("queue", torch.zeros(2, cfg.queue_length, cfg.proj_dim))
            self.register_buffer("queued", torch.zeros((), dtype=torch.long))  # embeddings in the queue so far
        self.local_cfg = dataclasses.replace(cfg.augment, crop_scale=cfg.local_scale)

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def configure_optimizers(self, make):
        # the prototypes too while they are frozen (they then have no gradient, so no update)
        return [make(list(self.parameters()))]

    def codes(self, scores: torch.Tensor, view: int) -> torch.Tensor:
        """Sinkhorn codes of one global view's scores, with the queued
        embeddings of that view joining the batch once the queue is full."""
        cfg = self.cfg
        if not cfg.queue_length:
            return sinkhorn_knopp(scores, cfg.epsilon, cfg.sinkhorn_iterations)
        with torch.no_grad():
            full = int(self.queued) >= cfg.queue_length
            if full:
                queued = self.prototypes(self.queue[view]).float()
                q = sinkhorn_knopp(torch.cat([scores, queued]), cfg.epsilon, cfg.sinkhorn_iterations)[: len(scores)]
            else:
                q = sinkhorn_knopp(scores, cfg.epsilon, cfg.sinkhorn_iterations)
        return q

    @torch.no_grad()
    def enqueue(self, z: torch.Tensor) -> None:
        """Push this batch's global embeddings ``(2, B, D)`` to the front of the queue."""
        b = min(z.shape[1], self.cfg.queue_length)
        self.queue.copy_(torch.cat([z[:, :b].float(), self.queue[:, : self.cfg.queue_length - b]], dim=1))
        self.queued += b

    def training_loss(self, images):
        cfg = self.cfg
        progress = self.progress
        self.prototypes.weight.requires_grad_(progress >= cfg.freeze_prototypes)
        crops = multi_crop(images, cfg.augment, self.local_cfg, n_local=cfg.n_local, local_size=cfg.local_size)
        # one backbone pass per resolution, locals first so the batch-norm running statistics end on the global
        # views the encoder is evaluated at; one projector pass over every crop (its batch norm sees them all)
        local = [self.encoder(torch.cat(crops[2:]))] if cfg.n_local else []
        features = self.encoder(torch.cat(crops[:2]))
        z = F.normalize(self.projector(torch.cat([features, *local])), dim=1)
        scores = list(self.prototypes(z).chunk(2 + cfg.n_local))
        codes = [self.codes(s.detach(), i) for i, s in enumerate(scores[:2])]
        if cfg.queue_length and progress >= cfg.queue_start:
            self.enqueue(z[: 2 * len(images)].detach().view(2, len(images), -1))
        loss = swav_loss(scores, codes, cfg.temperature)
        return loss, {"spread": spread(features)}

    def after_step(self, progress: float) -> None:
        self.normalize_prototypes()
        self.progress = progress
