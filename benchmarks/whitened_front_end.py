"""moco v3 on whitened patches: Coates k-means's front end before the small convnet (validation screen).

    .venv/bin/python benchmarks/whitened_front_end.py [--out bench-out/whitened_front_end] [--budget 4m]

k-means's features start with a fixed, data-derived front end: every 7x7 patch
normalised for brightness and contrast, then ZCA-whitened (Coates, Lee & Ng
2011; ``unsup.methods.clustering.kmeans``). Here that front end, fitted on the
pretraining images, feeds the small convnet (3x3 grid read-out) as a 49-channel
map of whitened patches (one per pixel, the image zero-padded by 3), and moco v3
(batch 64) trains the convnet behind it. Its random-encoder reference keeps the
fitted front end and draws the convnet. The control, the same entry without the
front end, runs beside it: two processes, one thread each, ``split: validation``
(50k training images to pretrain on and draw labels from, 10k to score; the test
split is not read). The backbone is registered in this script's processes only:
the library has no data-fitted backbone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 7
ZCA_FILE = "zca.pt"


def fit_front_end(path: Path) -> None:
    """k-means's own patch sampling and ZCA, on the pretraining part of the validation split."""
    from unsup.api import validation_split
    from unsup.data import load
    from unsup.methods.base import config_from_dict
    from unsup.methods.clustering.kmeans import KMeans

    train, _ = validation_split(load("fashion-mnist", "train"))
    km = KMeans(config_from_dict(KMeans.Config, {"patch_size": PATCH}), train.shape)
    km.fit_whitening(km.random_patches(train.images, km.cfg.num_patches, seed=0))
    torch.save({"mean": km.encoder.mean, "whiten": km.encoder.whiten}, path)


class WhitenedPatches(nn.Module):
    """(B, 1, H, W) images in the Encoder's normalisation -> (B, 49, H, W) whitened 7x7 patches."""

    def __init__(self, zca: dict):
        super().__init__()
        from unsup.methods.clustering.kmeans import PatchTriangleEncoder

        self.patches = PatchTriangleEncoder(1, PATCH, 1, norm_eps=10.0, pool_grid=1)
        self.patches.mean.copy_(zca["mean"])
        self.patches.whiten.copy_(zca["whiten"])

    def forward(self, x):
        b, _, h, w = x.shape
        pixels = F.pad(x * 0.25 + 0.5, [PATCH // 2] * 4)  # undo the Encoder's (x - 0.5) / 0.25; 0 = background
        rows, _, _ = self.patches.whitened_patches(pixels)
        return rows.view(b, h, w, -1).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def register_backbone(zca_path: Path) -> None:
    import unsup.nets as nets

    zca = torch.load(zca_path)

    class Whitened(nets.GridPooled):
        def __init__(self, pool_grid: int):
            super().__init__()
            convnet = nets.SmallConvNet(PATCH * PATCH, pool_grid=pool_grid)
            self.features = nn.Sequential(WhitenedPatches(zca), *convnet.features)
            self.read_out(convnet.out_dim // pool_grid**2, pool_grid)

    def whitened_convnet(in_channels: int, image_size: int, pool_grid: int = 3):
        return Whitened(pool_grid)

    nets.BACKBONES["whitened-convnet"] = whitened_convnet
    nets.MIN_SIZE["whitened-convnet"] = 8


def run(name: str, options: dict, out: str, budget: str) -> str:
    from unsup import api

    if options.get("backbone") == "whitened-convnet":
        register_backbone(Path(out) / ZCA_FILE)
        # its random reference depends on the fitted front end, which the reference cache's key does not hold
        os.environ["UNSUP_CACHE"] = str(Path(out) / "cache")
    plan = {"title": "moco v3 on whitened patches (validation screen)", "labels": [10, 100], "label_seeds": 3,
            "split": "validation", "supervised": False,
            "entries": [{"method": "moco", "name": name, "options": options}]}
    api.bench(plan=plan, out=Path(out) / name, budget=budget, jobs=1, threads=1, quiet=True)
    return (Path(out) / name / "leaderboard.md").read_text()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-out/whitened_front_end")
    p.add_argument("--budget", default="4m")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    fit_front_end(Path(args.out) / ZCA_FILE)
    base = {"version": 3, "batch_size": 64}
    entries = {"moco-v3-grid3": {**base, "backbone_options": {"pool_grid": 3}},
               "moco-v3-grid3-whitened": {**base, "backbone": "whitened-convnet"}}
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        boards = pool.map(run, entries, entries.values(), [args.out] * 2, [args.budget] * 2)
        for board in boards:
            print(board)


if __name__ == "__main__":
    main()
