"""MoCo: He, Fan, Wu, Xie & Girshick, "Momentum Contrast for Unsupervised
Visual Representation Learning", CVPR 2020; v2: Chen, Fan, Girshick & He,
"Improved Baselines with Momentum Contrastive Learning", arXiv 2020; v3: Chen,
Xie & He, "An Empirical Study of Training Self-Supervised Vision
Transformers", ICCV 2021.

A query encoder and a key encoder that is its momentum (EMA) copy; InfoNCE
asks each query to pick its own image's key. v2 (the default): the negatives
are a queue of the keys of earlier batches, an MLP projection head, blur in
the augmentations, temperature 0.2, a constant momentum, and the key batch's
batch-norm statistics taken over shuffled groups so that a query cannot find
its key through them (the paper's shuffling BN across GPUs, done within one
process). v3 (``version=3``): no queue, the other keys of the (global) batch
are the negatives; a predictor on the query branch; the loss symmetrised over
the two views and scaled by 2 tau; the momentum rises to 1 on a cosine schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...data.augment import views
from ...errors import UnsupError
from ...losses import info_nce
from ...nets.heads import projection_mlp
from ...registry import register
from ...train import distributed as dist
from ...train.ema import cosine_momentum, ema_update, momentum_copy
from ..base import MethodConfig
from .common import JointMethod, spread


@dataclass
class MoCoConfig(MethodConfig):
    version: int = 2  # 2: queue of negatives; 3: in-batch negatives, predictor, symmetric loss
    temperature: float = 0.2  # v2's; v3 uses 0.2 for ViTs and 1.0 for ResNet-50 at batch 4096
    # v2's queue is 65,536 keys (5% of ImageNet, ~256 batches old); 4,096 here (7% of Fashion-MNIST): with ~1k
    # steps of training its oldest keys are 16 batches old, from a key encoder that has barely moved since
    queue_size: int = 4096
    # v2: a constant 0.999 over ~1M steps; ~1k steps here, so 0.99 (the key encoder averages ~100 steps).
    # v3: 0.99 rising to 1 on a cosine schedule (the paper's)
    key_momentum: float = 0.99
    proj_hidden: int = 2048  # v2: 2048 -> 128, no batch norm; v3: 4096 -> 256 with batch norm, predictor 4096
    proj_dim: int = 128
    shuffle_groups: int = 4  # v2: batch-norm groups of the key batch, shuffled (the paper's 8 GPUs); 1 = off
    # the paper: SGD, lr 0.03, weight decay 1e-4, batch 256, 200-800 epochs (v3: LARS/AdamW, batch 4096); for a few
    # epochs on a CPU the shared AdamW setting of SimCLR here (lr 1e-3, batch 256) is used. v3 at batch 64 (four
    # times the updates in a budget of minutes) scored above batch 256 at all four probes on the validation split
    # (4 minutes: linear 66.5 / 79.6 vs 63.8 / 78.5 at 10 / 100 labels per class, k-NN 62.3 / 73.0 vs 56.6 / 70.0;
    # benchmarks/plans/batch_screens.yaml), so the landscape runs it with batch_size 64; v2 (not screened) keeps 256
    lr: float = 1e-3


@register
class MoCo(JointMethod):
    name = "moco"
    paper = "He et al. 2020, Momentum Contrast for Unsupervised Visual Representation Learning (v2: Chen et al. 2020; v3: Chen, Xie & He 2021)"
    Config = MoCoConfig

    def __init__(self, cfg: MoCoConfig, shape):
        super().__init__(cfg, shape)
        if cfg.version not in (2, 3):
            raise UnsupError(f"moco: version must be 2 or 3, got {cfg.version!r}")
        self.encoder = self.make_encoder()
        d = self.encoder.out_dim
        if cfg.version == 2:
            self.projector = projection_mlp(d, cfg.proj_hidden, cfg.proj_dim, hidden_bn=False)
            # the queue starts as random unit vectors, as the paper's code; a buffer, so a resumed run keeps it
            self.register_buffer("queue", F.normalize(torch.randn(cfg.queue_size, cfg.proj_dim), dim=1))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        else:
            self.projector = projection_mlp(d, cfg.proj_hidden, cfg.proj_dim, last_bn=True)
            self.predictor = projection_mlp(cfg.proj_dim, cfg.proj_hidden, cfg.proj_dim)
        self.target_encoder = momentum_copy(self.encoder)
        self.target_projector = momentum_copy(self.projector)
        self.m = cfg.key_momentum

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """The key encoder's embeddings of ``x``; with ``shuffle_groups`` > 1 its
        batch norm sees random groups of the batch instead of the whole."""
        net = lambda v: self.target_projector(self.target_encoder(v))  # noqa: E731
        g = self.cfg.shuffle_groups
        if self.cfg.version == 3 or g <= 1 or len(x) < 2 * g:
            return net(x)
        perm = torch.randperm(len(x), device=x.device)
        k = torch.cat([net(x[idx]) for idx in perm.chunk(g)])
        return k[torch.argsort(perm)]

    @torch.no_grad()
    def _enqueue(self, k: torch.Tensor) -> None:
        k = F.normalize(dist.gather_with_grad(k.float()), dim=1)  # every process's keys, in rank order
        n, size = len(k), len(self.queue)
        idx = (self.queue_ptr + torch.arange(n, device=k.device)) % size
        self.queue[idx[-size:]] = k[-size:]
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    def training_loss(self, images):
        cfg = self.cfg
        v1, v2 = views(images, [cfg.augment] * 2)
        if cfg.version == 2:
            q = self.projector(self.encoder(v1))
            with torch.no_grad():
                k = self.keys(v2)
            loss = info_nce(q, k, cfg.temperature, queue=self.queue.clone())  # a copy: the enqueue below is in place
            self._enqueue(k)
            return loss, {"spread": spread(q)}
        q1, q2 = self.predictor(self.projector(self.encoder(torch.cat([v1, v2])))).chunk(2)
        with torch.no_grad():
            k1, k2 = self.keys(torch.cat([v1, v2])).chunk(2)
        loss = 2 * cfg.temperature * (info_nce(q1, k2, cfg.temperature) + info_nce(q2, k1, cfg.temperature))
        return loss, {"spread": spread(q1)}

    def after_step(self, progress: float) -> None:
        self.m = self.cfg.key_momentum if self.cfg.version == 2 else cosine_momentum(self.cfg.key_momentum, progress)
        ema_update((self.target_encoder, self.target_projector), (self.encoder, self.projector), self.m)
