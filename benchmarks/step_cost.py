"""Each method's training cost per image relative to SimCLR's, measured side by side in one process.

    .venv/bin/python benchmarks/step_cost.py --methods simclr,moco,byol --steps 6

Every method runs ``--steps`` training steps at its default batch size (after
two warm-up steps), in rounds that alternate the methods, so a busy machine
slows them alike; the result is seconds per image and the ratio to SimCLR's.
An image budget that equals a time budget on an idle machine is then
``images_simclr(time) / ratio``: what ``benchmarks/plans/modern.yaml`` uses to
give each method the work of 10 minutes on the idle CPU whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from unsup.data import load
from unsup.registry import get_method
from unsup.train.optim import make_optimizer


def build(name: str, options: dict, shape):
    cls = get_method(name)
    cfg = cls.Config(**options) if options else cls.Config()
    torch.manual_seed(0)
    method = cls(cfg, shape).to(memory_format=torch.channels_last)
    method.train()

    def make(params, lr=None, weight_decay=None, betas=(0.9, 0.999)):
        return make_optimizer(cfg.optimizer, params, cfg.lr if lr is None else lr,
                              cfg.weight_decay if weight_decay is None else weight_decay, cfg.momentum, betas)

    return method, method.configure_optimizers(make)


def backward(loss, opt):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="simclr,moco,moco:version=3,byol,simsiam,barlow-twins,vicreg,swav,dino")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    data = load("fashion-mnist", "train")
    specs = []
    for item in args.methods.split(","):
        name, _, opt = item.partition(":")
        options = dict(kv.split("=") for kv in opt.split(";")) if opt else {}
        options = {k: int(v) if v.isdigit() else v for k, v in options.items()}
        specs.append((item, name, options))
    built = {item: build(name, options, data.images.shape[1:]) for item, name, options in specs}
    seconds = {item: 0.0 for item in built}
    images = {item: 0 for item in built}
    g = torch.Generator().manual_seed(0)
    for r in range(args.rounds):
        for item, (method, opts) in built.items():
            bs = method.cfg.batch_size
            for s in range(args.steps + (2 if r == 0 else 0)):
                batch = data.images[torch.randint(len(data), (bs,), generator=g)]
                t = time.perf_counter()
                logs = method.training_step(batch, opts, backward)
                float(logs["loss"])
                method.after_step(0.5)
                if r > 0 or s >= 2:
                    seconds[item] += time.perf_counter() - t
                    images[item] += bs
    base = seconds[specs[0][0]] / images[specs[0][0]]
    out = {item: {"seconds_per_image": seconds[item] / images[item], "ratio_to_first": seconds[item] / images[item] / base}
           for item in built}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
