"""The Python API behind the CLI: ``pretrain``, ``probe_run`` and ``bench``.

    import unsup
    run = unsup.pretrain("simclr", data="fashion-mnist", budget="2m", out="runs/simclr")
    encoder = unsup.load_encoder(run)          # float (B, C, H, W) in [0, 1] -> (B, D)
    result = unsup.probe_run(run)              # the protocol, with references
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from . import data as datasets
from .errors import UnsupError
from .evaluate import probe, random_encoder_rows, raw_pixel_rows, supervised_rows
from .methods.base import config_from_dict
from .registry import get_method
from .run import PROBE, RunDir, atomic_write, load_method
from .train import distributed as dist
from .train.budget import parse_budget
from .train.loop import TrainContext, train_loop
from .train.monitor import KnnMonitor


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UnsupError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UnsupError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
    return torch.device(device)


def _load_train(method_cls, data: str):
    """Pretraining images: the unlabelled split where a source has one (STL-10)."""
    source = method_cls.training_data(data)
    return datasets.load(source, "unlabeled" if datasets.has_unlabeled_split(source) else "train")


def pretrain(method: str, data: str = "fashion-mnist", budget: str = "2m", out: str | Path | None = None,
             device: str = "auto", seed: int = 0, options: dict | None = None, resume: bool = False,
             overwrite: bool = False, quiet: bool = False, compile: bool = False, monitor: bool = True,
             figures: bool = True) -> Path:
    """Pretrain ``method`` without labels; returns the run directory."""
    cls = get_method(method)
    cfg = config_from_dict(cls.Config, options)
    budget_ = parse_budget(budget)
    dev = resolve_device(device)
    dist.init_from_env(dev)
    train = _load_train(cls, data)
    torch.manual_seed(seed + dist.rank())
    m = cls(cfg, train.shape)
    run = RunDir(out or Path("runs") / f"{method}-{Path(str(data)).name}-seed{seed}")
    config = {"method": method, "data": str(data), "budget": str(budget_), "seed": seed, "device": str(dev),
              "shape": list(train.shape), "world_size": dist.world_size(), "options": asdict(cfg)}
    if dist.is_main():
        run.prepare(config, resume=resume, overwrite=overwrite)
    dist.barrier()
    mon_data = train.monitor_data() if hasattr(train, "monitor_data") else train  # video: labelled stills
    mon = KnnMonitor(mon_data, seed=seed) if (monitor and mon_data is not None and mon_data.labels is not None) else None
    ctx = TrainContext(device=dev, run=run, quiet=quiet, resume=resume, compile=compile, seed=seed, monitor=mon,
                       desc=f"{method}")
    shard = train
    if not cls.uses_gradients and dist.world_size() > 1:  # non-gradient fits see their shard only
        shard = train.subset(torch.arange(dist.rank(), len(train), dist.world_size()))
    t0 = time.perf_counter()
    on_device = shard.to(dev)
    if cls.uses_gradients:
        summary = train_loop(m, on_device, budget_, ctx)
    else:
        m.to(dev)
        m.fit(on_device, budget_, ctx)
        summary = {}
    seconds = time.perf_counter() - t0
    if dist.is_main():
        run.save_encoder(m)
        run.log({"event": "done", "pretrain_seconds": round(seconds, 2), **{k: v for k, v in summary.items() if k != "loss"}})
        if figures:
            try:
                fig_data = datasets.load(data, "test")
            except UnsupError:
                fig_data = train
            m.eval()
            run.figures_dir.mkdir(exist_ok=True)
            m.figures(fig_data.to(dev), run.figures_dir)
    dist.barrier()
    return run.path


def probe_run(run_dir: str | Path, budgets=(1, 10, 100, "all"), seeds: int = 3, device: str = "auto",
              references: bool = True, supervised: bool = True, quiet: bool = True) -> dict:
    """The protocol on a run's encoder, with references; writes ``probe.json``."""
    run = RunDir(run_dir)
    config = run.read_config()
    dev = resolve_device(device)
    method = load_method(run_dir).to(dev)
    train, test = method.probe_datasets(config["data"])
    result = {
        "method": config["method"],
        "family": type(method).family,
        "dataset": train.name,
        "budget": config.get("budget"),
        "encoder_dim": int(getattr(method.encoder, "out_dim", 0)),
        "results": probe(method.encoder, train, test, budgets, seeds, dev),
        "references": {},
        "figures": sorted(str(p.relative_to(run.path)) for p in run.figures_dir.glob("*.png")) if run.figures_dir.exists() else [],
        "run_dir": str(run.path.resolve()),
    }
    if references:
        torch.manual_seed(0)
        result["references"]["raw_pixels"] = raw_pixel_rows(train, test, budgets, seeds)
        result["references"]["random_encoder"] = random_encoder_rows(method.random_encoder().to(dev), train, test, budgets, seeds, dev)
        if supervised:
            backbone = getattr(method.cfg, "backbone", "small-convnet")
            result["references"]["supervised"] = supervised_rows(train, test, budgets, seeds, config["budget"], backbone, dev, quiet)
    atomic_write(run.file(PROBE), json.dumps(result, indent=2))
    return result


def bench(data: str = "fashion-mnist", methods: list[str] | None = None, budget: str = "20k", out: str | Path = "bench-out",
          budgets=(1, 10, 100, "all"), seeds: int = 3, device: str = "auto", quiet: bool = False,
          overwrite: bool = True, command: str | None = None) -> list[dict]:
    """Pretrain and probe each method with one budget; write the leaderboard and report."""
    from .report import format_rows, write_report

    methods = methods or list(DEFAULT_BENCH)
    for name in methods:
        get_method(name)  # fail early on an unknown name
    out = Path(out)
    results = []
    for name in methods:
        if not quiet:
            print(f"== {name}: pretraining on {data}, budget {budget}")
        t0 = time.perf_counter()
        run = pretrain(name, data=data, budget=budget, out=out / "runs" / name, device=device, overwrite=overwrite, quiet=quiet)
        t1 = time.perf_counter()
        if not quiet:
            print(f"== {name}: probing ({t1 - t0:.0f}s pretraining)")
        result = probe_run(run, budgets, seeds, device)
        result["pretrain_seconds"] = round(t1 - t0, 1)
        result["probe_seconds"] = round(time.perf_counter() - t1, 1)
        results.append(result)
        if not quiet:
            print(format_rows(result))
        write_report(results, out, command)  # after each method, so a long bench shows progress
    return results


DEFAULT_BENCH = ("kmeans", "denoising-autoencoder", "simclr")
