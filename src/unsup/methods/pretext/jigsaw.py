"""Jigsaw puzzles: Noroozi & Favaro, "Unsupervised Learning of Visual
Representations by Solving Jigsaw Puzzles", ECCV 2016.

An image is cut into a 3x3 grid of tiles, the tiles are shuffled by one of a
fixed set of permutations, each tile goes through the shared-weight tile
encoder (the context-free network), the 9 feature vectors are concatenated in
shuffled order and an MLP classifies the permutation index. The choices that
matter: the permutation set is chosen greedily for maximal Hamming distance
(the paper's Algorithm 1; 100 permutations by default), and the guards
against shortcuts: a random gap between tiles and a random jitter of each tile
inside its cell (no edge continuation), and per-tile mean/std normalisation
(no brightness matching).

Geometry, as fractions so any image size gets the paper's proportions: the
paper crops 225x225 of a 256x256 image (crop_frac 0.88), cells of 75 pixels and
tiles of 64 pixels inside them (tile_frac 64/75). A 28x28 Fashion-MNIST image
is cropped, then resized to 72x72 (``size``; 0 = auto: max(72, native), so
STL-10 keeps 96): cells of 24 and tiles of 20 pixels, which leave a 5x5 map
after the backbone's two poolings. At 48x48 (14-pixel tiles, the former
default) the map was 3x3, mostly zero-padding border, and the probe tied the
random encoder at linear@10 (65.3 over 3 pretraining seeds, random 65.3); at
72, over the same 3 seeds, k-NN@10 / k-NN@100 rise by 6.4 / 4.6 points and
linear@10 to 66.5, above random with 2 of 3 seeds. At 120k puzzles (the
budget of benchmarks/plans/pretext.yaml; benchmarks/results/pretext.md) all 3
seeds beat random on all four numbers, but linear@10 only by +0.1 / +3.4 /
+0.3: read with 12 label draws it is a tie for two seeds (+0.3 / +3.3 / -0.3,
s.e. 0.8-1.0), while k-NN@10 is 11-17 points above random.
The gap and jitter keep the paper's proportions at any size. The tile encoder
is the shared backbone with global pooling, so at probe time it takes whole
images.
Its batch-norm statistics are recorded on whole images (``task.py``), and
``probe_at_working_scale=True`` makes it resize whole images to ``size`` first
(the scale its filters were trained at; off by default: 3x the probe cost).

``tile_fc > 0`` puts the paper's per-tile fc6 (this many units, scaled down)
on each tile's unpooled feature map instead of concatenating globally pooled
tile features: with pooling, where an edge lies inside a tile can only reach
the head through the zero-padding borders of the tile (with 14-pixel tiles the
trained encoder's features on a blank image sat 95% on the border ring of the
map);
only the convolutional encoder is probed. ``crop_min > 0`` draws each image's
crop side in ``[crop_min, crop_frac]`` (Fashion-MNIST objects are centred, so
with a fixed crop a single tile's content gives away its grid position; a
linear read-out of one tile's random-encoder features finds it 47% of the
time, chance 11%). Both are off by default: at 48x48 neither met the probe
floor with 3 seeds, and at 72x72 the fc6 probed worse than pooled features on
validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ...data.augment import to_float
from ...errors import UnsupError
from ...registry import register
from .patches import (
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

JIGSAW_AUTO_SIZE = 72  # 24-pixel cells: tiles big enough for the backbone's two poolings (module docstring)


@lru_cache(maxsize=1)
def _all_permutations(n: int = 9) -> torch.Tensor:
    """All n! permutations, built by inserting each new element at every position (vectorised)."""
    p = np.zeros((1, 0), dtype=np.int8)
    for k in range(n):
        p = np.concatenate([np.insert(p, j, k, axis=1) for j in range(k + 1)])
    return torch.from_numpy(p)


def hamming_permutations(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` permutations of 9 tiles chosen greedily (Noroozi & Favaro,
    Algorithm 1): start from a random one, then repeatedly add the candidate
    whose summed Hamming distance to the chosen ones is largest."""
    allp = _all_permutations()
    if not 1 <= n <= len(allp):
        raise UnsupError(f"permutations={n}: choose between 1 and {len(allp)}")
    g = torch.Generator().manual_seed(seed)
    first = int(torch.randint(len(allp), (1,), generator=g))
    chosen = [first]
    cols = allp.T.contiguous()  # (9, 9!): one position at a time is cache-friendly
    total = torch.zeros(len(allp), dtype=torch.int32)  # 1^T D: summed distance to the chosen set
    taken = torch.zeros(len(allp), dtype=torch.bool)
    taken[first] = True
    for _ in range(n - 1):
        last = allp[chosen[-1]]
        for pos in range(9):
            total += cols[pos] != last[pos]
        j = int(total.masked_fill(taken, -1).argmax())
        chosen.append(j)
        taken[j] = True
    return allp[chosen].long()


@dataclass
class JigsawConfig(PretextTask.Config):
    size: int = 0  # working image side before tiling; 0 = auto (max(72, native): 20-pixel tiles from 28x28 images)
    crop_frac: float = 225 / 256  # the paper's random crop of the resized image
    crop_min: float = 0.0  # >0: each image's crop side drawn uniformly in [crop_min, crop_frac] (the grid at a random scale)
    tile_frac: float = 64 / 75  # tile side / cell side; 1.0 = no gap, no jitter (the ablation)
    permutations: int = 100
    normalise_tiles: bool = True
    probe_at_working_scale: bool = False  # True: the encoder resizes whole images to `size` first
    tile_fc: int = 0  # >0: the paper's per-tile fc6 (this many units) on each tile's unpooled map; 0: pooled features
    hidden: int = 512  # fc7, scaled from 4096
    lr: float = 2e-3
    batch_size: int = 128


@register
class Jigsaw(PretextTask):
    name = "jigsaw"
    paper = "Noroozi & Favaro 2016, Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles"
    whole_image_stats = True
    Config = JigsawConfig

    def __init__(self, cfg: JigsawConfig, shape):
        super().__init__(cfg, shape)
        _c, h, _ = self.shape
        self.size = working_size(cfg.size, h, JIGSAW_AUTO_SIZE)
        self.cell = self.size // 3
        self.tile = max(1, round(cfg.tile_frac * self.cell))
        if not 0 <= cfg.crop_min <= cfg.crop_frac:
            raise UnsupError(f"jigsaw: crop_min={cfg.crop_min} must be in [0, crop_frac={cfg.crop_frac}] (0 = a fixed crop side)")
        if not 0 < cfg.tile_frac <= 1:
            raise UnsupError(f"jigsaw: tile_frac={cfg.tile_frac} must be in (0, 1] (tile side / cell side)")
        require_fit("jigsaw", 3 * self.cell, self.size, "a 3x3 grid of cells", "raise size")
        require_fit("jigsaw", 8, self.tile, f"the tile encoder ({self.tile}-pixel tiles from {self.cell}-pixel cells, size {self.size})",
                    "raise size or tile_frac")
        self.classes = cfg.permutations
        self.register_buffer("perms", hamming_permutations(cfg.permutations), persistent=False)
        self.encoder = patch_encoder(self)
        self.tile_fc = optional_patch_fc(self, cfg.tile_fc, self.tile, "tile_fc")
        per_tile = cfg.tile_fc or self.encoder.out_dim
        self.head = mlp_head(9 * per_tile, cfg.hidden, cfg.permutations)

    def tiles(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 9, C, t, t) tiles in reading order, each at a random offset inside its cell."""
        x = crop_resize(to_float(images), self.size, self.cfg.crop_frac, self.cfg.crop_min)
        b, dev = len(x), x.device
        grid = torch.arange(3, device=dev) * self.cell
        top = grid.repeat_interleave(3).expand(b, 9)
        left = grid.repeat(3).expand(b, 9)
        slack = self.cell - self.tile
        if slack > 0:  # jitter: each tile anywhere inside its cell, hence random gaps between tiles
            top = top + torch.randint(0, slack + 1, (b, 9), device=dev)
            left = left + torch.randint(0, slack + 1, (b, 9), device=dev)
        t = gather_patches(x, top, left, self.tile)
        return normalise_patches(t) if self.cfg.normalise_tiles else t

    def make_task(self, images):
        t = self.tiles(images)
        b = len(t)
        target = torch.randint(0, self.classes, (b,), device=t.device)
        order = self.perms[target]  # position i shows tile order[i]
        shuffled = t[torch.arange(b, device=t.device)[:, None], order]
        return shuffled, target

    def logits(self, inputs):
        b = inputs.shape[0]
        return self.head(patch_features(self.encoder, self.tile_fc, inputs.flatten(0, 1)).reshape(b, -1))

    def task_picture(self, images):
        shuffled, _ = self.make_task(images[:8])
        return shuffled.flatten(0, 1)
