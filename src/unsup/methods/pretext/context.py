"""Relative patch position: Doersch, Gupta & Efros, "Unsupervised Visual
Representation Learning by Context Prediction", ICCV 2015.

A centre patch and one of its 8 neighbours go through the shared patch
encoder (the paper's late-fusion pair network with shared weights); the two
feature vectors are concatenated and an MLP (fc7/fc8, scaled down) classifies
which of the 8 positions the second patch came from. The guards against
trivial solutions that matter: a gap between the patches (half a patch side)
and a random jitter of each patch (up to 7/96 of its side), so edges and
textures cannot simply be continued; patches are mean/std normalised.

Geometry, as fractions so any image size gets the paper's proportions: the
paper uses 96-pixel patches with 48-pixel gaps and up to 7 pixels of jitter.
A 28x28 image is resized to 48x48 (``size``; 0 = auto: max(48, native)) and
patches are 11 pixels (patch_frac 0.23) with a 6-pixel gap and 1 pixel of
jitter. As in the paper, the first patch is sampled anywhere and the second
at one of its 8 neighbouring positions (``free_layout``, the default). With
``free_layout=False`` the whole 3x3 layout must fit; on a 48-pixel canvas it
spans the image (1 pixel of slack), so the first patch was always the image
centre: the encoder saw patches from 9 fixed places of centred objects only
and probed at or below the random encoder on Fashion-MNIST. The patch encoder
is the shared backbone with global pooling, so at probe time it takes whole
images.
Its batch-norm statistics are recorded on whole images (``task.py``), and
``probe_at_working_scale=True`` makes it resize whole images to ``size`` first
(the scale its filters were trained at; off by default: 3x the probe cost).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data.augment import to_float
from ...registry import register
from .patches import PairGeometry, crop_resize, gather_patches, normalise_patches, patch_encoder, require_fit, working_size
from .task import PretextTask, mlp_head


@dataclass
class ContextConfig(PretextTask.Config):
    size: int = 0  # working image side; 0 = auto (max(48, native))
    crop_frac: float = 1.0  # a random crop of this fraction of the image, before resizing
    patch_frac: float = 0.23  # patch side / working side
    gap_frac: float = 0.5  # gap / patch side (48/96 in the paper)
    jitter_frac: float = 7 / 96  # jitter / patch side
    normalise_patches: bool = True
    free_layout: bool = True  # the paper's sampling: the pair anywhere in the image; False: a 3x3 layout that must fit (pinned on 48x48)
    probe_at_working_scale: bool = False  # True: the encoder resizes whole images to `size` first
    hidden: int = 512
    lr: float = 2e-3
    batch_size: int = 256


@register
class Context(PretextTask):
    name = "context"
    paper = "Doersch, Gupta & Efros 2015, Unsupervised Visual Representation Learning by Context Prediction"
    whole_image_stats = True
    Config = ContextConfig
    classes = 8

    def __init__(self, cfg: ContextConfig, shape):
        super().__init__(cfg, shape)
        self.size = working_size(cfg.size, self.shape[1])
        self.geo = PairGeometry(self.name, self.size, cfg.patch_frac, cfg.gap_frac, cfg.jitter_frac, cfg.free_layout)
        require_fit(self.name, 8, self.geo.patch, "the patch encoder", "raise size or patch_frac")
        self.encoder = patch_encoder(self)
        self.head = mlp_head(2 * self.encoder.out_dim, cfg.hidden, 8)

    def pairs(self, images: torch.Tensor, which: torch.Tensor | None = None):
        x = crop_resize(to_float(images), self.size, self.cfg.crop_frac)
        a, b, which = self.geo.sample(len(x), x.device, which)
        p = gather_patches(x, torch.stack([a[:, 0], b[:, 0]], 1), torch.stack([a[:, 1], b[:, 1]], 1), self.geo.patch)
        return (normalise_patches(p) if self.cfg.normalise_patches else p), which

    def make_task(self, images):
        return self.pairs(images)

    def logits(self, inputs):
        b = inputs.shape[0]
        return self.head(self.encoder(inputs.flatten(0, 1)).reshape(b, -1))

    def task_picture(self, images):
        p, _ = self.pairs(images[:8])
        return p.flatten(0, 1)
