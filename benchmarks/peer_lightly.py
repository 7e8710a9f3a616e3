"""Side by side with a peer on the same work: unsup against lightly 1.6's own
example pipeline (PIL transforms, a torch DataLoader, lightly's heads and
losses) on the same backbone class, batch size, Fashion-MNIST images and
wall-clock budget, in one run on this machine (issue 17, item 6).

    nice -n 10 .venv/bin/python benchmarks/peer_lightly.py --seconds 120
    .venv/bin/python benchmarks/peer_lightly.py --smoke          # a few seconds per run, to check the script

lightly is a comparison-time dependency only: it lives in its own directory
(``--lightly-path``, default /tmp/lightly-pkgs, made with
``pip install --target /tmp/lightly-pkgs 'lightly==1.6.*' lightning-utilities --no-deps``)
and is put on ``PYTHONPATH`` only for the peer's subprocess; this process,
and the library, never import it. The runs alternate (unsup, lightly, unsup,
lightly, ...) so that contention from other jobs hits both alike; each
trained encoder is then probed with the library's own protocol
(``unsup.evaluate.protocol.probe``) on the full test split.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
METHODS = ("simclr", "byol", "barlow-twins")
LOADER_WORKERS = min(8, os.cpu_count() or 1)  # lightly's examples use 8 workers; capped at this machine's cores


# --------------------------------------------------------------------------------------------
# the peer: lightly's example pipeline, run in a subprocess with lightly on PYTHONPATH
# --------------------------------------------------------------------------------------------
def peer_main(method: str, seconds: float, out: str, seed: int, batch_size: int | None = None) -> None:
    import lightly
    from lightly.loss import BarlowTwinsLoss, NegativeCosineSimilarity, NTXentLoss
    from lightly.models.modules import BarlowTwinsProjectionHead, BYOLPredictionHead, BYOLProjectionHead, SimCLRProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms import SimCLRTransform
    from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform
    from lightly.utils.scheduler import cosine_schedule
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from unsup.data import load
    from unsup.methods.base import config_from_dict
    from unsup.nets import build_encoder
    from unsup.registry import get_method

    torch.manual_seed(seed)
    # unsup's defaults for this method (and the batch both sides were given): what is matched
    cfg = config_from_dict(get_method(method).Config, {"batch_size": batch_size} if batch_size else None)
    aug = cfg.augment
    train = load("fashion-mnist", "train")
    images = train.images[:, 0].numpy()  # uint8 (N, 28, 28)
    size = images.shape[-1]

    # lightly's transforms with unsup's augmentation settings (crop scale, jitter, blur, flip) and normalisation
    # (the unsup Encoder's (x - 0.5) / 0.25, so the saved net loads behind it); grayscale, saturation and hue off:
    # unsup's defaults, and no-ops on one-channel images anyway
    common = dict(input_size=size, cj_prob=aug.jitter_prob, cj_strength=1.0, cj_bright=aug.brightness,
                  cj_contrast=aug.contrast, cj_sat=0.0, cj_hue=0.0, min_scale=aug.crop_scale[0], random_gray_scale=0.0,
                  sigmas=tuple(aug.blur_sigma), hf_prob=aug.flip, normalize={"mean": [0.5], "std": [0.25]})
    if method == "simclr":
        transform = SimCLRTransform(gaussian_blur=aug.blur_prob, **common)
    elif method == "byol":  # lightly's BYOL views with unsup's per-view blur and solarisation (its defaults)
        transform = BYOLTransform(
            view_1_transform=BYOLView1Transform(gaussian_blur=cfg.blur_prob[0], solarization_prob=cfg.solarize[0], **common),
            view_2_transform=BYOLView2Transform(gaussian_blur=cfg.blur_prob[1], solarization_prob=cfg.solarize[1], **common))
    elif method == "barlow-twins":  # lightly's Barlow Twins example uses BYOLTransform; unsup's views are symmetric
        transform = BYOLTransform(
            view_1_transform=BYOLView1Transform(gaussian_blur=aug.blur_prob, solarization_prob=0.0, **common),
            view_2_transform=BYOLView2Transform(gaussian_blur=aug.blur_prob, solarization_prob=0.0, **common))
    else:
        raise SystemExit(f"no lightly pipeline for {method}")

    class FashionPIL(Dataset):  # the images as PIL, lightly's way (LightlyDataset / torchvision datasets do the same)
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return transform(Image.fromarray(images[i], mode="L")), 0

    loader = DataLoader(FashionPIL(), batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        num_workers=LOADER_WORKERS)

    encoder = build_encoder(cfg.backbone, 1, size, cfg.backbone_options)  # the same module class as unsup's runs
    backbone = encoder.net  # inputs are normalised by the transform
    d = backbone.out_dim

    class Model(nn.Module):  # the structure of lightly's examples/pytorch/<method>.py
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            if method == "simclr":
                self.projection_head = SimCLRProjectionHead(d, cfg.proj_hidden, cfg.proj_dim)
            elif method == "byol":
                self.projection_head = BYOLProjectionHead(d, cfg.proj_hidden, cfg.proj_dim)
                self.prediction_head = BYOLPredictionHead(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim)
                import copy
                self.backbone_momentum = copy.deepcopy(self.backbone)
                self.projection_head_momentum = copy.deepcopy(self.projection_head)
                deactivate_requires_grad(self.backbone_momentum)
                deactivate_requires_grad(self.projection_head_momentum)
            else:
                self.projection_head = BarlowTwinsProjectionHead(d, cfg.proj_dim, cfg.proj_dim)

        def forward(self, x):
            z = self.projection_head(self.backbone(x).flatten(start_dim=1))
            return self.prediction_head(z) if method == "byol" else z

        def forward_momentum(self, x):
            return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()

    model = Model()
    if method == "simclr":
        criterion = NTXentLoss(temperature=cfg.temperature)
    elif method == "byol":
        criterion = NegativeCosineSimilarity()
    else:
        criterion = BarlowTwinsLoss(lambda_param=cfg.lambd)

    # unsup's optimiser settings: AdamW, lr and weight decay of the config, no decay on biases and norm weights,
    # linear warm-up over the first cfg.warmup of the budget then cosine to 0, both on the wall clock
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    assert cfg.optimizer == "adamw", cfg.optimizer
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)

    def lr_factor(p):
        if p < cfg.warmup:
            return p / cfg.warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (p - cfg.warmup) / (1 - cfg.warmup))))

    steps = images_seen = epochs = 0
    startup = 0.0  # seconds waiting for each epoch's first batch (the DataLoader's workers starting)
    losses = []
    t0 = time.perf_counter()
    done = False
    while not done:
        t_epoch = time.perf_counter()
        first = True
        for batch in loader:
            if first:
                startup += time.perf_counter() - t_epoch
                first = False
            progress = min(1.0, (time.perf_counter() - t0) / seconds)
            for g in optimizer.param_groups:
                g["lr"] = cfg.lr * lr_factor(progress)
            x0, x1 = batch[0]
            if method == "byol":
                momentum = cosine_schedule(int(progress * 10_000), 10_000, cfg.momentum_base, 1.0)
                update_momentum(model.backbone, model.backbone_momentum, m=momentum)
                update_momentum(model.projection_head, model.projection_head_momentum, m=momentum)
                p0, p1 = model(x0), model(x1)
                z0, z1 = model.forward_momentum(x0), model.forward_momentum(x1)
                loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
            else:
                loss = criterion(model(x0), model(x1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            steps += 1
            images_seen += x0.shape[0]
            if steps % 20 == 0:
                losses.append(loss.item())
            if time.perf_counter() - t0 >= seconds:
                done = True
                break
        epochs += 1
    total = time.perf_counter() - t0
    encoder.eval()
    torch.save(encoder.state_dict(), out)
    stats = {"steps": steps, "images_seen": images_seen, "seconds": total, "startup_seconds": startup,
             "epochs_started": epochs, "last_loss": loss.item(), "loss_every_20_steps": losses,
             "lightly_version": lightly.__version__, "lightly_file": lightly.__file__, "workers": LOADER_WORKERS,
             "torch_threads": torch.get_num_threads()}
    Path(out).with_suffix(".json").write_text(json.dumps(stats))


# --------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------
def run_unsup(method: str, seconds: float, workdir: Path, seed: int, batch_size: int):
    import unsup
    from unsup.run import RunDir

    out = workdir / f"unsup-{method}"
    t0 = time.perf_counter()
    run = unsup.pretrain(method, data="fashion-mnist", budget=f"{seconds:g}s", out=out, device="cpu", seed=seed,
                         options={"batch_size": batch_size}, quiet=True, monitor=False, figures=False, tensorboard=False, overwrite=True)
    wall = time.perf_counter() - t0
    # pretrain returns only the run directory: the loop's images and seconds are in its metrics.jsonl "done" record
    done = [r for r in RunDir(run).metrics() if r.get("event") == "done"][-1]
    encoder = unsup.load_encoder(run)
    return encoder, {"steps": done.get("step"), "images_seen": done["images_seen"], "seconds": done["seconds"],
                     "pretrain_call_seconds": wall, "run_dir": str(run)}


def run_lightly(method: str, seconds: float, workdir: Path, seed: int, lightly_path: str, batch_size: int):
    from unsup.nets import build_encoder

    out = workdir / f"lightly-{method}.pt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (lightly_path, os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, __file__, "--peer-worker", method, "--seconds", str(seconds), "--peer-out", str(out),
           "--seed", str(seed), "--batch-size", str(batch_size)]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    wall = time.perf_counter() - t0
    stats = json.loads(out.with_suffix(".json").read_text())
    stats["subprocess_seconds"] = wall
    encoder = build_encoder("small-convnet", 1, 28, {})
    encoder.load_state_dict(torch.load(out, map_location="cpu"))
    return encoder.eval(), stats


def summarise(rows):
    """{classifier: {labels_per_class: (mean, std, n)}} from the protocol's rows."""
    out = {}
    for r in rows:
        out.setdefault(r["classifier"], {})[str(r["labels_per_class"])] = {  # the protocol's mean and (population) std
            "mean": r["accuracy_mean"], "std": r["accuracy_std"], "accuracies": r["accuracies"]}
    return out


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="wall-clock training budget per run (default 120)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    ap.add_argument("--smoke", action="store_true", help="a tiny budget and a small probe, to check the script")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, help="one batch size for every method, both sides (default: each "
                    "method's own default in unsup, given to lightly too)")
    ap.add_argument("--lightly-path", default="/tmp/lightly-pkgs", help="a pip --target directory holding lightly 1.6")
    ap.add_argument("--out", default=str(RESULTS / "peer_lightly"), help="results stem (.md and .json are written)")
    ap.add_argument("--render", metavar="JSON", help="only write the Markdown page of a results JSON written earlier")
    ap.add_argument("--peer-worker", help=argparse.SUPPRESS)
    ap.add_argument("--peer-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer_worker:
        return peer_main(args.peer_worker, args.seconds, args.peer_out, args.seed, args.batch_size)
    if args.render:
        record = json.loads(Path(args.render).read_text())
        for libs in record["methods"].values():  # the summaries again from the protocol's rows
            for lib in ("unsup", "lightly"):
                libs[lib]["probe"] = summarise(libs[lib]["probe_rows"])
        Path(args.render).write_text(json.dumps(record, indent=1, default=str) + "\n")
        Path(args.render).with_suffix(".md").write_text(render_md(record))
        print(f"wrote {Path(args.render).with_suffix('.md')}")
        return
    if "lightly" in sys.modules:
        raise SystemExit("lightly must not be imported in the driver")

    from unsup.data import load
    from unsup.evaluate.protocol import probe
    from unsup.registry import get_method

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {METHODS}")
    seconds = 8.0 if args.smoke else args.seconds
    budgets, seeds = (10, 100), 3
    train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    if args.smoke:  # a small probe: 5k train / 2k test images
        train, test = train.subset(torch.arange(5000)), test.subset(torch.arange(2000))
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    started = datetime.datetime.now(datetime.UTC)
    record = {"command": command, "date": started.isoformat(timespec="seconds"), "seconds_budget": seconds,
              "backbone": "small-convnet", "probe": {"budgets": list(budgets), "seeds": seeds,
                                                                           "train": len(train), "test": len(test)},
              "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                          "loadavg_start": load_avg(), "nice": os.nice(0)},
              "loader_workers": LOADER_WORKERS, "smoke": args.smoke, "methods": {}}
    encoders = {}
    with tempfile.TemporaryDirectory(prefix="peer_lightly-") as tmp:
        work = Path(tmp)
        for method in methods:  # alternate: unsup, lightly, unsup, lightly, ...
            batch = args.batch_size or get_method(method).Config().batch_size
            record["methods"][method] = {"batch_size": batch}
            for lib in ("unsup", "lightly"):
                la = load_avg()
                print(f"[{time.strftime('%H:%M:%S')}] {method}: {lib} training {seconds:g}s (load {la})", flush=True)
                if lib == "unsup":
                    enc, stats = run_unsup(method, seconds, work, args.seed, batch)
                else:
                    enc, stats = run_lightly(method, seconds, work, args.seed, args.lightly_path, batch)
                stats["loadavg_before"] = la
                stats["loadavg_after"] = load_avg()
                stats["images_per_s"] = stats["images_seen"] / stats["seconds"]
                if "startup_seconds" in stats:
                    stats["images_per_s_excl_startup"] = stats["images_seen"] / (stats["seconds"] - stats["startup_seconds"])
                print(f"    {stats['images_seen']} images in {stats['seconds']:.1f}s: {stats['images_per_s']:.0f} img/s",
                      flush=True)
                record["methods"][method][lib] = stats
                encoders[(method, lib)] = enc
        record["machine"]["loadavg_after_training"] = load_avg()
        for (method, lib), enc in encoders.items():
            print(f"[{time.strftime('%H:%M:%S')}] probing {method} / {lib}", flush=True)
            rows = probe(enc, train, test, budgets=budgets, seeds=seeds)
            record["methods"][method][lib]["probe"] = summarise(rows)
            record["methods"][method][lib]["probe_rows"] = rows
    record["machine"]["loadavg_end"] = load_avg()
    for libs in record["methods"].values():
        u, p = libs["unsup"], libs["lightly"]
        libs["ratio_images_per_s"] = u["images_per_s"] / p["images_per_s_excl_startup"]
        libs["ratio_images_per_s_incl_startup"] = u["images_per_s"] / p["images_per_s"]
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(render_md(record))
    print(table(record))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")


MATCHED = [
    "backbone: the same module class, `unsup.nets.build_encoder(\"small-convnet\", 1, 28, {})` (a 256-d VGG-style "
    "convnet), trained as `encoder.net`; the saved state_dict loads behind unsup's Encoder for the probe",
    "batch size: the method's default in unsup (or `--batch-size`), the same on both sides (lightly's examples use "
    "256), `shuffle=True, drop_last=True` as in the examples",
    "image size: `input_size=28` (the examples' 32 for CIFAR-10, 224 by default)",
    "normalisation: `normalize={mean: [0.5], std: [0.25]}`, the unsup Encoder's own (lightly's default is ImageNet's "
    "3-channel statistics, which does not apply to one-channel images)",
    "augmentation, set to unsup's defaults (`AugmentConfig`): `min_scale=0.2` (lightly 0.08), `cj_bright=0.4, "
    "cj_contrast=0.4` (SimCLRTransform 0.8/0.8; BYOL views already 0.4/0.4), `cj_sat=0, cj_hue=0, random_gray_scale=0` "
    "(lightly 0.8/0.2/0.2 for SimCLR, 0.2/0.1/0.2 for BYOL; all no-ops or off for gray images in unsup), "
    "`sigmas=(0.1, 1.5)` (lightly (0.1, 2)); kept equal to lightly: `cj_prob=0.8`, `hf_prob=0.5`, crop ratio 3/4-4/3",
    "blur probability: SimCLR 0.5 (= lightly's default); BYOL: lightly's BYOLView1/2Transform set to unsup's "
    "`blur_prob` and `solarize` per view (its defaults: symmetric views, blur 0.5 on both, no solarisation; lightly's "
    "defaults are the paper's 1.0 / 0.1 and solarisation 0 / 0.2); Barlow Twins: lightly has no Barlow Twins "
    "transform (its examples have used SimCLR-style views or BYOLTransform's asymmetric ones over versions); here "
    "lightly's BYOLView1/2Transform set to unsup's symmetric views (blur 0.5 on both, no solarisation)",
    "heads, lightly's classes with unsup's widths: `SimCLRProjectionHead(256, 512, 128)` (example: 512, 512, 128 for "
    "a ResNet-18); `BYOLProjectionHead(256, 4096, 256)` and `BYOLPredictionHead(256, 4096, 256)` (example: hidden "
    "1024); `BarlowTwinsProjectionHead(256, 2048, 2048)` (example: 512, 2048, 2048)",
    "loss settings: `NTXentLoss(temperature=0.5)` (= lightly's default and unsup's), `BarlowTwinsLoss(lambda_param=5e-3)` "
    "(= both defaults), `NegativeCosineSimilarity` with the example's symmetric 0.5 (p0·z1 + p1·z0) "
    "(unsup's BYOL loss is 4 + 2 x the same sum: a constant and a scale, which AdamW almost ignores)",
    "optimiser: unsup's defaults instead of the examples' `SGD(lr=0.06)`: AdamW, lr 1e-3, weight decay 1e-4 on "
    "weights only (none on biases and norm parameters, as unsup's `decay_groups`), linear warm-up over the first 5% "
    "of the budget then cosine to 0, both on the wall clock as unsup's time budget does",
    "BYOL target momentum: unsup's 0.99 -> 1 on a cosine of budget progress (lightly's `cosine_schedule` and "
    "`update_momentum`, example: 0.996 -> 1 per epoch), updated before each step as in the example",
    "budget: the same wall-clock seconds, counted from the start of the training loop (the DataLoader's worker "
    "start-up included, as unsup's loop counts everything after its start)",
]
KEPT = [
    "lightly's pipeline shape: PIL images through lightly's transforms in a `torch.utils.data.DataLoader` "
    "(`num_workers` = min(8, cores) = the examples' 8 capped at this machine's cores; no persistent workers, as in "
    "the examples), one forward per view (`model(x0)`, `model(x1)`), lightly's heads and losses, "
    "`loss.backward(); optimizer.step(); optimizer.zero_grad()`",
    "no channels_last, no compile, no other speed settings on either side (unsup's loop sets channels_last itself: "
    "that is part of unsup's default path)",
    "unsup: `unsup.pretrain(method, data=\"fashion-mnist\", budget=\"<s>s\", device=\"cpu\", seed=0, monitor=False, "
    "figures=False, tensorboard=False)` with every method option at its default; checkpoints at the default interval (60 s) "
    "count in its time, as in any run",
]


def render_md(record) -> str:
    m = record["machine"]
    smoke = " (SMOKE: a tiny budget and a 5k/2k probe; not a result)" if record.get("smoke") else ""
    loads = [v for libs in record["methods"].values() for lib in ("unsup", "lightly")
             for v in (libs[lib]["loadavg_before"][0], libs[lib]["loadavg_after"][0])]
    cores = m["cpus"]
    own = m["threads"] + record["loader_workers"]  # this job's own threads and loader workers make up to this load
    contended = max(loads) > own + 0.5
    lines = [f"# unsup side by side with lightly 1.6{smoke}", "",
             "Issue 17, item 6. The same backbone class, batch size, Fashion-MNIST training images and wall-clock "
             "budget for unsup's pretraining and lightly's own example pipeline (PIL transforms, a DataLoader, "
             "lightly's heads and losses); the runs alternate (unsup, lightly, per method) in one invocation, and "
             "every trained encoder is probed with the library's protocol (`unsup.evaluate.protocol.probe`, "
             f"{record['probe']['train']} training / {record['probe']['test']} test images, "
             f"{record['probe']['seeds']} label draws per budget).", "",
             f"- command: `{record['command']}`",
             f"- date: {record['date']}",
             f"- budget: {record['seconds_budget']:g} s of training per run; batch size in the table; "
             f"backbone {record['backbone']}",
             f"- machine: {cores}-core CPU ({m['processor']}), torch {m['torch']} with {m['threads']} threads, "
             f"Python {m['python']}, run at nice {m['nice']}; lightly {next(iter(record['methods'].values()))['lightly']['lightly_version']} "
             f"from its own directory on the subprocess's PYTHONPATH, DataLoader workers: {record['loader_workers']}",
             f"- load average (1 min) over the runs: {min(loads):.1f} to {max(loads):.1f} on {cores} cores: "
             + ("**contended**: other jobs shared the CPU, so absolute images/s are low and noisy; alternating the "
                "runs spreads the contention over both libraries, and the ratio is the figure to read."
                if contended else f"not contended (this job's {m['threads']} threads and {record['loader_workers']} "
                "loader workers account for a load of up to " f"{own})."),
             "", "## Results", "",
             "images/s: images (not views) trained on per second of the training loop. unsup: `images_seen / seconds` "
             "of its own loop record (the `done` event). lightly: images over loop seconds *excluding* each epoch's wait "
             "for its first batch (the DataLoader's workers starting), the figure the ratio uses; in brackets the same "
             "including that wait. Probes: accuracy in % on the full test split, mean ± std over the label draws (the protocol's own `accuracy_mean` and population `accuracy_std`).", "",
             table(record), "",
             "Per run:", "",
             "| method | library | steps | images | loop s | loader start-up s | load before -> after |",
             "|---|---|---:|---:|---:|---:|---|"]
    for method, libs in record["methods"].items():
        for lib in ("unsup", "lightly"):
            s = libs[lib]
            lines.append(f"| {method} | {lib} | {s['steps']} | {s['images_seen']} | {s['seconds']:.1f} | "
                         f"{s.get('startup_seconds', 0):.1f} | {s['loadavg_before'][0]} -> {s['loadavg_after'][0]} |")
    lines += ["", "## Settings matched to unsup (lightly's example defaults otherwise)", ""]
    lines += [f"- {x}" for x in MATCHED]
    lines += ["", "## Kept as lightly's example / unsup's default", ""]
    lines += [f"- {x}" for x in KEPT]
    if record.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {x}" for x in record["notes"]]
    return "\n".join(lines) + "\n"


def fmt(cell) -> str:
    return f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}" if cell else "-"


def table(record) -> str:
    lines = ["| method | batch | library | images/s | unsup / lightly | linear@10 | linear@100 | k-NN@10 | k-NN@100 |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for method, libs in record["methods"].items():
        batch = libs.get("batch_size", record.get("batch_size"))  # a record made before the batch was per method
        for lib in ("unsup", "lightly"):
            s = libs[lib]
            pr = s.get("probe", {})
            ips = f"{s['images_per_s']:.0f}"
            if lib == "lightly":
                ips = f"{s['images_per_s_excl_startup']:.0f} ({s['images_per_s']:.0f} incl. startup)"
            ratio = f"{libs['ratio_images_per_s']:.2f}x" if lib == "unsup" else ""
            lin, knn = pr.get("linear", {}), pr.get("knn", {})
            lines.append(f"| {method} | {batch} | {lib} | {ips} | {ratio} | {fmt(lin.get('10'))} | {fmt(lin.get('100'))} | "
                         f"{fmt(knn.get('10'))} | {fmt(knn.get('100'))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
