"""Which layers of a moco v3 small convnet to read out (validation screen).

    .venv/bin/python benchmarks/readout_screen.py [--out bench-out/readout_screen] [--budget 5m] [--threads 2]

Coates k-means is probed on many features from one shallow layer at high
resolution; the deep methods here are read from the small convnet's last map
only (over a 3x3 grid: 2,304 features). This screen pretrains one moco v3
(batch 64, 3x3 grid) on the validation split (50k training images; the test
split is not read), then probes the same weights through several read-outs:
each is a set of the small convnet's layers, each layer's map averaged over a
3x3 grid, the results concatenated. The same read-outs of the same network
with random weights (3 initialisations, the protocol's seeds) are the
reference. Linear probe and k-NN at 10 and 100 labels per class, 3 label draws.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from unsup.nets import GridMeans

# the small convnet's ``features``: 0-1 stage 1 (28 px), 3-4 stage 2 (14 px), 6-7 stage 3 (7 px)
READ_OUTS = {
    "last (the default)": (7,),
    "stage 3": (6, 7),
    "stages 2-3": (4, 7),
    "stages 1-3": (1, 4, 7),
    "stages 1-3, every conv": (0, 1, 3, 4, 6, 7),
}


class LayerGrid(nn.Module):
    """An encoder's backbone read out at several layers, each map averaged over a grid."""

    def __init__(self, encoder: nn.Module, layers: tuple[int, ...], grid: int = 3):
        super().__init__()
        self.encoder, self.layers, self.pool = encoder, set(layers), GridMeans(grid)  # the library's grid read-out

    def forward(self, x):
        x, out = self.encoder.normalise(x), []
        for i, layer in enumerate(self.encoder.net.features):
            x = layer(x)
            if i in self.layers:
                out.append(self.pool(x).flatten(1))
        return torch.cat(out, 1)


def rows_for(encoder, train, test) -> dict:
    return probe_read_outs({name: LayerGrid(encoder.eval(), layers) for name, layers in READ_OUTS.items()}, train, test)


def probe_read_outs(nets: dict, train, test) -> dict:
    """Linear probe and k-NN at 10 and 100 labels (3 draws) of each named read-out, printed as they finish."""
    from unsup.evaluate.features import extract_features
    from unsup.evaluate.protocol import evaluate_features

    result = {}
    for name, net in nets.items():
        tf, sf = extract_features(net, train.images), extract_features(net, test.images)
        rows = evaluate_features(tf, train.labels, sf, test.labels, train.num_classes, budgets=[10, 100], seeds=3)
        result[name] = {"features": tf.shape[1],
                        **{f"{r['classifier']}@{r['labels_per_class']}": r["accuracies"] for r in rows}}
        print(name, {k: round(100 * sum(v) / len(v), 1) for k, v in result[name].items() if k != "features"}, flush=True)
    return result


def trained_and_random(run, rows_for, train, test) -> dict:
    """``rows_for`` of a run's trained encoder and of its random encoders (the protocol's 3 initialisations)."""
    from unsup.evaluate.protocol import random_encoders
    from unsup.run import load_encoder, load_method

    report = {"run": str(run), "trained": rows_for(load_encoder(run), train, test)}
    for i, enc in enumerate(random_encoders(load_method(run))):
        report[f"random {i}"] = rows_for(enc, train, test)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-out/readout_screen")
    p.add_argument("--budget", default="5m")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from unsup import api
    from unsup.data import load

    out = Path(args.out)
    train, test = api.validation_split(load("fashion-mnist", "train"))
    run = out / "moco-v3-grid3"
    if not (run / "encoder.safetensors").exists():
        api.pretrain("moco", train, budget=args.budget, out=run, quiet=True, figures=False, tensorboard=False,
                     options={"version": 3, "batch_size": 64, "backbone_options": {"pool_grid": 3}}, overwrite=True)
    (out / "readout_screen.json").write_text(json.dumps(trained_and_random(run, rows_for, train, test), indent=1))


if __name__ == "__main__":
    main()
