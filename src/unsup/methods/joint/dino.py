"""DINO: Caron, Touvron, Misra, Jégou, Mairal, Bojanowski & Joulin, "Emerging
Properties in Self-Supervised Vision Transformers", ICCV 2021.

Self-distillation without labels: a student and a teacher of the same
architecture (backbone + DINO head ending in K weight-normalised prototypes);
the teacher is an exponential moving average of the student. The teacher sees
only the two global crops, the student every crop (multi-crop: 2 global + small
local crops at a lower resolution, an option here, off by default: see
``DINOConfig``), and each student view predicts the teacher's output
distribution of every other view (cross-entropy). What keeps
it from collapsing, per the paper: the teacher's outputs are centred (minus a
running mean of its outputs, an EMA over batches, averaged across processes)
and sharpened (a low teacher temperature, 0.04, against the student's 0.1),
which pull in opposite directions. The teacher is the encoder exported here,
as the paper evaluates it (it is better than the student during training).

Choices kept from the paper: momentum cosine-raised to 1, centre momentum
0.9, temperatures 0.1 / 0.04 (the teacher temperature can warm up, e.g.
0.04 -> 0.07, over a share of the budget), the head's 3-layer MLP with a
256-wide bottleneck and the norm of its last layer fixed at 1, the last layer
frozen at the start, AdamW at 5e-4 x batch/256 with weight decay 0.04, the
asymmetric augmentation of the global views (blur 1.0 / 0.1, solarisation
0 / 0.2; locals blur 0.5), the crop scales (0.4, 1) and (0.05, 0.4).
Scaled for 28x28 images and a CPU budget: see ``DINOConfig``. Not done: the
weight decay's cosine rise to 0.4 and gradient clipping (the shared loop has
neither).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch

from ...data.augment import AugmentConfig, multi_crop, view_configs
from ...errors import UnsupError
from ...losses import dino_center, dino_loss
from ...nets.heads import DINOHead
from ...registry import register
from ...train.ema import cosine_momentum, ema_update, momentum_copy
from ..base import MethodConfig
from .common import JointMethod, spread
from .multicrop import accept_local_crops


def _dino_augment() -> AugmentConfig:
    # the paper's global views: crop (0.4, 1), flip, jitter 0.8 x (0.4, 0.4, 0.2, 0.1), grayscale 0.2 (the
    # saturation, hue and grayscale are no-ops on gray images); blur and solarisation are set per view below;
    # blur sigma is the library's 28-px range (the paper's 0.1-2.0 px is for 224-px images)
    return AugmentConfig(crop_scale=(0.4, 1.0), brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
                         jitter_prob=0.8, grayscale=0.2, blur_prob=0.5, blur_sigma=(0.1, 1.5))


@dataclass
class DINOConfig(MethodConfig):
    lr: float = 5e-4  # the paper's 0.0005 x batch/256 (AdamW), not rescaled for batch 64
    weight_decay: float = 0.04  # the paper's starting value (it rises to 0.4 there)
    warmup: float = 0.1  # 10 of the paper's 100 epochs
    out_dim: int = 4096  # K prototypes: 65,536 in the paper for ImageNet; 4,096 for 60k images of 10 classes
    hidden_dim: int = 512  # 2,048 in the paper; the small convnet's features are 256-wide
    bottleneck_dim: int = 256  # as in the paper
    head_layers: int = 3
    student_temp: float = 0.1
    teacher_temp: float = 0.04  # the paper's default; 0.07 after a warm-up for long runs
    warmup_teacher_temp: float = 0.04  # the teacher temperature at the start of its warm-up
    teacher_temp_warmup: float = 0.0  # share of the budget over which it rises to teacher_temp (paper: 30 of 100 epochs)
    center_momentum: float = 0.9
    momentum_base: float = 0.99  # 0.996 in the paper over 100+ epochs; a 10-minute CPU run has about 1,000 steps
    freeze_last_layer: float = 0.01  # share of the budget with the prototypes frozen (paper: 1 epoch of 100)
    # local crops: the paper's 6 to 10 (``n_local=6`` at 12 px) are off by default here, and the batch is 64 (the
    # paper's 1,024; its lr scaling is not applied: the rate stays 5e-4). In a CPU budget of minutes on 28-px images,
    # the two global views at batch 64 scored above the paper's multi-crop at batch 256 at all four probes of the
    # validation split (linear 66.2 / 79.1 vs 59.7 / 76.8 at 10 / 100 labels per class, k-NN 55.0 / 70.1 vs
    # 44.4 / 67.2), above batch 64 with 2 or 6 local crops or 1,024 prototypes at all four, and above lr 2.5e-4 at
    # three (k-NN@100: 70.1 vs 70.5); benchmarks/plans/dino_screens.yaml, results/modern_validation.md
    n_local: int = 0
    batch_size: int = 64
    local_size: int = 12  # the paper's 96/224 of the input size, for 28-px images
    local_scale: tuple[float, float] = (0.05, 0.4)
    global_blur: tuple[float, ...] = (1.0, 0.1)  # blur probability of the first and second global view
    global_solarize: tuple[float, ...] = (0.0, 0.2)
    local_blur: float = 0.5
    augment: AugmentConfig = dataclasses.field(default_factory=_dino_augment)

    def validate(self) -> None:
        """The ranges the shared option table (``unsup.methods.base.RANGES``) does not hold."""
        for key in ("center_momentum", "freeze_last_layer", "teacher_temp_warmup", "local_blur"):
            if not 0 <= getattr(self, key) <= 1:
                raise UnsupError(f"option {key} of dino must be in [0, 1]; got {getattr(self, key)!r}")
        if any(not 0 <= p <= 1 for p in self.global_blur + self.global_solarize):
            raise UnsupError("options global_blur and global_solarize of dino are probabilities in [0, 1]")
        if len(self.global_blur) != 2 or len(self.global_solarize) != 2:
            raise UnsupError("options global_blur and global_solarize of dino take one value per global view, e.g. [1.0, 0.1]")
        if self.warmup_teacher_temp <= 0:
            raise UnsupError(f"option warmup_teacher_temp of dino must be positive; got {self.warmup_teacher_temp!r}")


@register
class DINO(JointMethod):
    name = "dino"
    paper = "Caron et al. 2021, Emerging Properties in Self-Supervised Vision Transformers"
    Config = DINOConfig

    def __init__(self, cfg: DINOConfig, shape):
        cfg = accept_local_crops(cfg)
        super().__init__(cfg, shape)
        self.student = self.make_encoder()
        self.student_head = DINOHead(self.student.out_dim, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.head_layers)
        # the teacher backbone, what is evaluated and exported: it learns only by EMA (it is outside the optimiser
        # and runs without gradients) but keeps requires_grad, so a loaded encoder fine-tunes like any other
        self.encoder = copy.deepcopy(self.student)
        self.teacher_head = momentum_copy(self.student_head)
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        self.progress = 0.0  # share of the budget spent: a plain attribute (no device read), checkpointed for resume
        self.global_cfgs = view_configs(cfg.augment, 2, blur_prob=cfg.global_blur, solarize=cfg.global_solarize)
        self.local_cfg = dataclasses.replace(cfg.augment, crop_scale=cfg.local_scale, blur_prob=cfg.local_blur, solarize=0.0)

    def configure_optimizers(self, make):
        # every student parameter, the last layer too while it is frozen (it then has no gradient, so no update)
        return [make(list(self.student.parameters()) + list(self.student_head.parameters()))]

    def teacher_temperature(self, progress: float) -> float:
        cfg = self.cfg
        if progress >= cfg.teacher_temp_warmup:
            return cfg.teacher_temp
        return cfg.warmup_teacher_temp + (cfg.teacher_temp - cfg.warmup_teacher_temp) * progress / cfg.teacher_temp_warmup

    def training_loss(self, images):
        cfg = self.cfg
        progress = self.progress
        self.student_head.last_layer.weight.requires_grad_(progress >= cfg.freeze_last_layer)
        crops = multi_crop(images, self.global_cfgs, self.local_cfg, n_local=cfg.n_local, local_size=cfg.local_size)
        globals_ = torch.cat(crops[:2])
        with torch.no_grad():
            teacher = self.teacher_head(self.encoder(globals_)).float()
        # locals first, so the batch-norm running statistics the teacher copies end on the global views
        student = list(self.student_head(self.student(torch.cat(crops[2:]))).chunk(cfg.n_local)) if cfg.n_local else []
        features = self.student(globals_)
        student = list(self.student_head(features).chunk(2)) + student
        temp = self.teacher_temperature(progress)
        loss = dino_loss(student, list(teacher.chunk(2)), self.center, cfg.student_temp, temp)
        with torch.no_grad():
            p = torch.softmax((teacher - self.center) / temp, dim=1)
            entropy = -(p * p.clamp(min=1e-12).log()).sum(1).mean()
            self.center.copy_(dino_center(self.center, teacher, cfg.center_momentum))
        # the paper's collapse diagnostics (figure 7): the loss is the targets' entropy plus the KL to them
        return loss, {"teacher_entropy": entropy, "kl": loss.detach() - entropy, "spread": spread(features)}

    def after_step(self, progress: float) -> None:
        m = cosine_momentum(self.cfg.momentum_base, progress)
        ema_update(self.encoder, self.student, m)
        ema_update(self.teacher_head, self.student_head, m)
        self.progress = progress
