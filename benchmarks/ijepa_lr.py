"""Choose I-JEPA's settings on held-in training images.

    .venv/bin/python benchmarks/ijepa_lr.py --lr 1e-3 2.5e-4 1.25e-4 [--steps 86] [--every 43] [--options '{}' ...]

For each rate and each ``--options`` set, one one-thread process (side by side, as many as the cores)
trains I-JEPA for ``--steps`` steps of its batch (86 steps of 256 is what a
10-minute budget of one core gives the 12-block ViT-tiny here), with the
trainer's warm-up, cosine rate and momentum schedules over those steps, and
reads the k-NN accuracy (k = 20) of the target encoder (the one evaluated)
and of the context encoder every ``--every`` steps, and of the untrained
network at step 0, with the trainer's k-NN monitor (``KnnMonitor``: a bank of
2,000 and 1,000 queries from the training split of Fashion-MNIST; the test
split is not read). Each
``--options`` (JSON) changes the method's config, e.g. a narrower ViT:
``'{"backbone_options": {"depth": 4, "embed_dim": 96}, "predictor_width": 48, "batch_size": 128}'``.

At each reading it also scores two predictors that see no context against the
current target encoder's layer-normalised tokens of 1,024 augmented training
images (the mean squared error the L2 loss would give them): each position's
mean token over the images (``position``), and that plus each image's mean
token less the overall mean (``position+image``). A loss above ``position``
means the predictor has not yet learnt more than where a target lies.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import torch


@torch.no_grad()
def no_context_errors(method, images: torch.Tensor) -> dict:
    """The mean squared error of the two context-free predictors (module docstring) on ``images``' target tokens."""
    from unsup.data.augment import augment

    h = method.target_tokens(augment(images, method.cfg.augment))
    position = h.mean(0, keepdim=True)
    both = position + h.mean(1, keepdim=True) - h.mean((0, 1), keepdim=True)
    return {"position": float((h - position).pow(2).mean()), "position+image": float((h - both).pow(2).mean())}


def run(lr: float, options: dict, steps: int, every: int) -> dict:
    from unsup.data import load
    from unsup.methods.base import config_from_dict
    from unsup.registry import get_method
    from unsup.train.monitor import KnnMonitor
    from unsup.train.optim import lr_factor, make_optimizer, set_lr

    torch.set_num_threads(1)
    torch.manual_seed(0)
    train = load("fashion-mnist", "train")
    knn = KnnMonitor(train)  # the trainer's k-NN monitor: 2,000 bank and 1,000 query images of the training split
    method_cls = get_method("ijepa")
    cfg = config_from_dict(method_cls.Config, {**options, "lr": lr})
    method = method_cls(cfg, train.shape)
    probe_images = train.images[torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[:1024]]
    readings = [{"step": 0, "target": knn.accuracy(method.encoder, "cpu"), "context": None, "loss": None,
                 **no_context_errors(method, probe_images)}]
    opt = make_optimizer(cfg.optimizer, [p for p in method.parameters() if p.requires_grad], cfg.lr, cfg.weight_decay)
    t0 = time.perf_counter()
    for step in range(steps):
        set_lr([opt], lr_factor(step / steps, cfg.warmup, cfg.schedule))
        loss, _ = method.training_loss(train.images[torch.randint(0, len(train), (cfg.batch_size,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(step / steps)
        if (step + 1) % every == 0:
            readings.append({"step": step + 1, "target": knn.accuracy(method.encoder, "cpu"),
                             "context": knn.accuracy(method.context_encoder, "cpu"), "loss": float(loss.detach()),
                             **no_context_errors(method, probe_images)})
            print(f"lr {lr:g} {json.dumps(options)} step {step + 1}: {readings[-1]}", flush=True)
    return {"lr": lr, "options": options, "seconds": round(time.perf_counter() - t0), "readings": readings}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr", type=float, nargs="+", required=True)
    p.add_argument("--steps", type=int, default=86)
    p.add_argument("--every", type=int, default=43)
    p.add_argument("--options", nargs="+", default=["{}"], help="one JSON config change per candidate")
    args = p.parse_args()
    runs = [(lr, json.loads(o)) for o in args.options for lr in args.lr]
    workers = min(len(runs), multiprocessing.cpu_count())
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(run, *zip(*runs), [args.steps] * len(runs), [args.every] * len(runs)))
    for r in results:
        marks = " ".join(f"{x['step']}: {100 * x['target']:.1f}" + (f"/{100 * x['context']:.1f}" if x["context"] else "")
                         + (f" (loss {x['loss']:.3f}" if x["loss"] else " (")
                         + f" no-context {x['position']:.3f} / {x['position+image']:.3f})" for x in r["readings"])
        print(f"lr {r['lr']:g} {json.dumps(r['options'])} ({r['seconds']} s): k-NN target/context {marks}")


if __name__ == "__main__":
    main()
