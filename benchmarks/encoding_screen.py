"""How to encode the every-conv read-out of a moco v3 small convnet (validation screen).

    .venv/bin/python benchmarks/encoding_screen.py [--run RUN] [--out bench-out/encoding_screen] [--threads 2]
        [--only ENCODING ...]

Coates & Ng's k-means features owe much of their strength to the encoding
that follows the filters, not to the filters (its random-centroid encoder is
within half a point of the trained one; kmeans_floor_screens.md). This screen
keeps the weights of a trained moco v3 (3x3 grid, read out at every conv, 10
minutes alone on both cores, from benchmarks/plans/kmeans_floor_validation.yaml;
pretrained here with the same settings when ``--run`` is missing) and changes
only the encoding of each conv's map before the probe: the grid, the polarity
split of "The Importance of Encoding Versus Training with Sparse Coding and
Vector Quantization" (Coates & Ng 2011: relu(z) and relu(-z) of the
pre-activation, kept apart), a signed square root of the pooled features
(power normalisation), max pooling beside the mean, and a centring over
channels at each position before the ReLU (a soft competition between
features, as k-means's triangle activation is). The same encodings of the
same network with random weights (3 initialisations, the protocol's seeds)
are the reference. Validation split of the training set (50k / 10k; the test
split is not read); linear probe and k-NN at 10 and 100 labels per class, 3
label draws.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch
from readout_screen import probe_read_outs, trained_and_random  # benchmarks/ is the script's folder
from torch import nn

from unsup.nets import GridMaxes, GridMeans


class Encoding(nn.Module):
    """Every conv block of a small convnet encoder, each map encoded and pooled, concatenated."""

    def __init__(self, encoder: nn.Module, grid: int = 3, polarity: bool = False, sqrt: bool = False,
                 with_max: bool = False, centre: bool = False):
        super().__init__()
        self.encoder, self.pool, self.maxes = encoder, GridMeans(grid), GridMaxes(grid)
        self.polarity, self.sqrt, self.with_max, self.centre = polarity, sqrt, with_max, centre

    def encode(self, z: torch.Tensor) -> list[torch.Tensor]:
        if self.centre:
            z = z - z.mean(1, keepdim=True)
        maps = [z.relu()] + ([(-z).relu()] if self.polarity else [])
        out = []
        for m in maps:
            pooled = self.pool(m).flatten(1)
            out.append(pooled.sqrt() if self.sqrt else pooled)
            if self.with_max:
                out.append(self.maxes(m).flatten(1))
        return out

    def forward(self, x):
        x, out = self.encoder.normalise(x), []
        for layer in self.encoder.net.features:
            if isinstance(layer, nn.Sequential):  # conv, batch norm, ReLU: encode the pre-activation
                z = layer[1](layer[0](x))
                out += self.encode(z)
                x = layer[2](z)
            else:
                x = layer(x)
        return torch.cat(out, 1)


ENCODINGS = {
    "mean over the 3x3 grid (the read-out trained)": {},
    "mean over a 4x4 grid": {"grid": 4},
    "polarity split": {"polarity": True},
    "signed square root": {"sqrt": True},
    "mean and max": {"with_max": True},
    "centred over channels": {"centre": True},
    "polarity split, signed square root": {"polarity": True, "sqrt": True},
    "mean and max over a 4x4 grid": {"grid": 4, "with_max": True},
}


def rows_for(encoder, train, test, names=tuple(ENCODINGS)) -> dict:
    return probe_read_outs({name: Encoding(encoder.eval(), **ENCODINGS[name]) for name in names}, train, test)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="bench-out/kmeans_floor_validation/runs/moco-v3-grid3-every-conv")
    p.add_argument("--out", default="bench-out/encoding_screen")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="+", choices=list(ENCODINGS), help="these encodings only (default: all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from unsup import api
    from unsup.data import load

    out, run = Path(args.out), Path(args.run)
    out.mkdir(parents=True, exist_ok=True)
    train, test = api.validation_split(load("fashion-mnist", "train"))
    if not (run / "encoder.safetensors").exists():
        api.pretrain("moco", train, budget="10m", out=run, quiet=True, figures=False, tensorboard=False, overwrite=True,
                     options={"version": 3, "batch_size": 64,
                              "backbone_options": {"pool_grid": 3, "read_out": "every-conv"}})
    rows = functools.partial(rows_for, names=args.only or tuple(ENCODINGS))
    (out / "encoding_screen.json").write_text(json.dumps(trained_and_random(run, rows, train, test), indent=1))


if __name__ == "__main__":
    main()
