"""Patch co-occurrence: Isola, Zoran, Krishnan & Adelson, "Learning visual
groups from co-occurrences in space and time", ICLR workshop 2016 (arXiv 2015).

A siamese network judges whether two patches co-occur: a positive pair is two
nearby patches of one image, a negative pair is a patch of one image and a
patch of another image; binary classification over the concatenated features
of the shared patch encoder (which approximates the paper's pointwise mutual
information of the two patches). The choice that matters: negatives come from
the same positions of another image, so only content, not position, separates
the classes, and the two patches never overlap (a gap between them and a
jitter), so pixels cannot simply be matched; patches are mean/std normalised so
overall brightness is not the cue.

Geometry: "nearby" is one of the 8 neighbouring cells of a 3x3 layout, as in
``context``: patch_frac 0.23 of the working side, a gap of half a patch, a
small jitter. Unlike ``context`` the default keeps the whole 3x3 layout inside
the image (``free_layout=False``; on 48x48 the first patch is then the image
centre): the pair anywhere (``free_layout=True``) probed worse on
Fashion-MNIST at 80k and 320k pairs, as did patches without normalisation
(their shared brightness solves the task) and a nearer neighbour (gap a
quarter patch). A 28x28 image is resized to 48x48 (``size``; 0 = auto: max(48,
native)), giving 11-pixel patches; on STL-10 (96x96) the same fractions give
22-pixel patches. The patch encoder is the shared backbone with global pooling,
so at probe time it takes whole images.
Its batch-norm statistics are recorded on whole images (``task.py``), and
``probe_at_working_scale=True`` makes it resize whole images to ``size`` first
(the scale its filters were trained at; off by default: 3x the probe cost).

Each siamese branch ends in a fully connected layer on the patch's unpooled
feature map (``patch_fc``, 128 units; 2x2 map on 11-pixel patches) instead of
globally pooled features, so where things lie inside a patch need not be
carried by zero-padding borders; only the convolutional encoder is probed
(``patch_fc=0``: pooled features). Training uses the era's SGD with momentum
0.9 and weight decay 5e-4 (lr 0.05, cosine), not the library's AdamW, whose
decoupled decay (1e-4 x lr per step) did nothing here. With both, the probe
beat the random encoder on all four numbers with each of 3 pretraining seeds
at 80k pairs; with AdamW and pooled features it did not (one seed of three
with the fc alone; benchmarks/results/pretext.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data.augment import to_float
from ...registry import register
from .patches import (
    PairGeometry,
    crop_resize,
    gather_patches,
    normalise_patches,
    optional_patch_fc,
    patch_encoder,
    patch_features,
    require_fit,
    working_size,
)
from .task import PretextTask, mlp_head


@dataclass
class CooccurrenceConfig(PretextTask.Config):
    size: int = 0  # working image side; 0 = auto (max(48, native))
    crop_frac: float = 1.0
    patch_frac: float = 0.23
    gap_frac: float = 0.5
    jitter_frac: float = 7 / 96
    normalise_patches: bool = True
    free_layout: bool = False  # True: the pair anywhere in the image, not a 3x3 layout pinned to it (patches.PairGeometry)
    probe_at_working_scale: bool = False  # True: the encoder resizes whole images to `size` first
    patch_fc: int = 128  # >0: a per-patch fully connected layer (this many units) on each patch's unpooled map; 0: pooled features
    hidden: int = 512
    optimizer: str = "sgd"  # the papers' SGD, momentum 0.9, with weight decay (AdamW's 1e-4 x lr decay was none)
    lr: float = 0.05
    weight_decay: float = 5e-4
    batch_size: int = 256


@register
class Cooccurrence(PretextTask):
    name = "cooccurrence"
    paper = "Isola, Zoran, Krishnan & Adelson 2015, Learning visual groups from co-occurrences in space and time"
    whole_image_stats = True
    Config = CooccurrenceConfig
    classes = 2

    def __init__(self, cfg: CooccurrenceConfig, shape):
        super().__init__(cfg, shape)
        self.size = working_size(cfg.size, self.shape[1])
        self.geo = PairGeometry(self.name, self.size, cfg.patch_frac, cfg.gap_frac, cfg.jitter_frac, cfg.free_layout)
        require_fit(self.name, 8, self.geo.patch, "the patch encoder", "raise size or patch_frac")
        self.encoder = patch_encoder(self)
        self.patch_fc = optional_patch_fc(self, cfg.patch_fc, self.geo.patch, "patch_fc")
        self.head = mlp_head(2 * (cfg.patch_fc or self.encoder.out_dim), cfg.hidden, 2)

    def make_task(self, images):
        x = crop_resize(to_float(images), self.size, self.cfg.crop_frac)
        b, dev = len(x), x.device
        if b < 2:
            other = torch.zeros(b, dtype=torch.long, device=dev)
        else:  # another image for every sample: a random non-zero cyclic shift of the batch
            other = (torch.arange(b, device=dev) + torch.randint(1, b, (1,), device=dev)) % b
        a, n, _ = self.geo.sample(b, dev)
        target = torch.randint(0, 2, (b,), device=dev)  # 1 = co-occurring (same image)
        pa = gather_patches(x, a[:, :1], a[:, 1:], self.geo.patch)[:, 0]
        pb_same = gather_patches(x, n[:, :1], n[:, 1:], self.geo.patch)[:, 0]
        pb_other = gather_patches(x[other], n[:, :1], n[:, 1:], self.geo.patch)[:, 0]
        pb = torch.where(target.view(b, 1, 1, 1).bool(), pb_same, pb_other)
        p = torch.stack([pa, pb], 1)
        return (normalise_patches(p) if self.cfg.normalise_patches else p), target

    def logits(self, inputs):
        b = inputs.shape[0]
        return self.head(patch_features(self.encoder, self.patch_fc, inputs.flatten(0, 1)).reshape(b, -1))

    def task_picture(self, images):
        p, _ = self.make_task(images[:8])
        return p.flatten(0, 1)
