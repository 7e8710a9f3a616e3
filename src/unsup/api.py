"""The Python API behind the CLI: ``pretrain``, ``probe_run`` and ``bench``.

    import unsup
    run = unsup.pretrain("simclr", data="fashion-mnist", budget="2m", out="runs/simclr")
    encoder = unsup.load_encoder(run)          # float (B, C, H, W) in [0, 1] -> (B, D)
    result = unsup.probe_run(run)              # the protocol, with references
"""

from __future__ import annotations

import json
import statistics
import sys
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
             figures: bool = True, tensorboard: bool = True) -> Path:
    """Pretrain ``method`` without labels; returns the run directory (TensorBoard
    event files in ``RUN/tensorboard/`` when the package is installed and
    ``tensorboard`` is on)."""
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
    ctx = TrainContext(device=dev, run=run, quiet=quiet, resume=resume, compile=compile, seed=seed, monitor=mon, tensorboard=tensorboard,
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


def validation_split(train, share: float = 1 / 6, seed: int = 0):
    """A fixed hold-out of a labelled training split, to choose settings on
    (``split: validation`` in a plan): the test split stays untouched."""
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    cut = int(len(train) * share)
    return train.subset(perm[cut:]), train.subset(perm[:cut])


def probe_run(run_dir: str | Path, budgets=(1, 10, 100, "all"), seeds: int = 3, device: str = "auto",
              references: bool = True, supervised: bool = True, quiet: bool = True, split: str = "test",
              family_metrics: bool = True) -> dict:
    """The protocol on a run's encoder, with references and 95% intervals to
    them, and the method's family metrics; writes ``probe.json``."""
    from .evaluate.protocol import PROTOCOL_VERSION, add_intervals

    run = RunDir(run_dir)
    config = run.read_config()
    dev = resolve_device(device)
    method = load_method(run_dir).to(dev)
    train, test = method.probe_datasets(config["data"])
    if split == "validation":
        train, test = validation_split(train)
    # status on stderr: stdout may carry the JSON result (`unsup probe --json`)
    say = (lambda text: None) if quiet else (lambda text: print(f"   {config['method']}: {text}", file=sys.stderr, flush=True))

    def label(stage: str | None = None) -> str | None:  # progress bars' label; none when quiet
        return None if quiet else f"   {config['method']}" + (f" {stage}" if stage else "")

    say("features and probes")
    result = {
        "method": config["method"],
        "family": type(method).family,
        "dataset": train.name,
        "split": split,
        "protocol": PROTOCOL_VERSION,
        "budget": config.get("budget"),
        "pretrain_seeds": [config.get("seed", 0)],
        "encoder_dim": int(getattr(method.encoder, "out_dim", 0)),
        "all_labels_per_class": round(len(train) / max(1, train.num_classes)),
        "test_size": len(test),
        "results": probe(method.encoder, train, test, budgets, seeds, dev, label()),
        "references": {},
        "figures": sorted(str(p.relative_to(run.path)) for p in run.figures_dir.glob("*.png")) if run.figures_dir.exists() else [],
        "run_dir": str(run.path.resolve()),
    }
    if references:
        say("raw-pixel reference")
        result["references"]["raw_pixels"] = raw_pixel_rows(train, test, budgets, seeds, label("raw pixels"))
        say("random-encoder reference (3 initialisations)")
        result["references"]["random_encoder"] = random_encoder_rows(method, train, test, budgets, seeds, dev,
                                                                     progress=label("random init"))
        if supervised:
            backbone = getattr(method.cfg, "backbone", "small-convnet")
            say(f"supervised reference ({backbone}; cached after its first run)")
            sup = supervised_rows(train, test, budgets, seeds, backbone, dev, quiet)
            result["references"]["supervised"] = sup
            if any(r.get("source") == "shipped" for r in sup):
                result["references"]["supervised_note"] = (
                    "shipped with the package (made by `python benchmarks/references.py`, with `--method NAME` for a "
                    "method's own probe sets); delete src/unsup/evaluate/shipped/ to recompute it on this machine")
        add_intervals(result, len(test))
    metrics = method.family_metrics(config["data"], dev) if family_metrics else {}
    if metrics:
        result["metrics"] = metrics
    atomic_write(run.file(PROBE), json.dumps(result, indent=2))
    return result


def machine() -> str:
    """The CPU model (or GPU name) and thread count, for result headers."""
    import platform

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def _merge_seeds(results: list[dict]) -> dict:
    """One result for several pretraining seeds of one entry: rows merged with the
    per-seed accuracies kept (``accuracies_by_run``) for the intervals."""
    from .evaluate.protocol import merge_rows

    merged = dict(results[0])
    if len(results) > 1:
        merged["results"] = merge_rows([r["results"] for r in results], "run")
        merged["pretrain_seeds"] = [s for r in results for s in r["pretrain_seeds"]]
        merged["runs"] = [r["run_dir"] for r in results]
        keys = {k for r in results for k in r.get("metrics", {})}
        merged["metrics"] = {k: statistics.fmean(r["metrics"][k] for r in results if k in r.get("metrics", {})) for k in sorted(keys)}
    return merged


def bench(data: str = "fashion-mnist", methods: list[str] | None = None, budget: str = "60s", out: str | Path = "bench-out",
          budgets=(1, 10, 100, "all"), seeds: int = 3, device: str = "auto", quiet: bool = False,
          command: str | None = None, plan=None, fresh: bool = False, family_metrics: bool = False) -> list[dict]:
    """Pretrain and probe every entry of a plan (default: ``methods`` with the
    same ``budget`` each); write the leaderboard and the report to ``out``.
    ``family_metrics`` applies to the methods list (a plan says it itself): off
    by default, since a GAN's first FCD trains its reference classifier.

    Each entry's result is kept in ``out/results/NAME.json``; a later bench on
    the same ``out`` reuses results whose entry is unchanged (``fresh`` redoes all).
    """
    from .evaluate.protocol import PROTOCOL_VERSION, add_intervals
    from .plan import check_floors, load_plan, parse_plan
    from .report import format_rows, write_report

    if plan is None:
        plan = parse_plan({"entries": list(methods or DEFAULT_BENCH), "labels": list(budgets), "label_seeds": seeds,
                           "family_metrics": family_metrics}, "bench", data, budget)
    elif not hasattr(plan, "entries"):
        plan = load_plan(plan, data, budget) if isinstance(plan, (str, Path)) else parse_plan(plan, "plan", data, budget)
    out = Path(out)
    t_start = time.perf_counter()
    if not quiet:
        total = sum(parse_budget(e.budget).value * len(e.seeds) for e in plan.entries if parse_budget(e.budget).kind == "seconds")
        print(f"bench: {len(plan.entries)} entries ({', '.join(e.name for e in plan.entries)}) on {machine()}; "
              f"pretraining budgets {', '.join(sorted({e.budget for e in plan.entries}))} each"
              + (f" (timed budgets {total / 60:.0f} min in all, probing and references on top)" if total else ""), flush=True)
    results = []
    for k, entry in enumerate(plan.entries, 1):
        path = out / "results" / f"{entry.name}.json"
        spec = {**entry.spec(), "labels": [str(b) for b in plan.labels], "label_seeds": plan.label_seeds,
                "split": plan.split, "family_metrics": plan.family_metrics, "protocol": PROTOCOL_VERSION}
        old = json.loads(path.read_text()) if path.is_file() and not fresh else None
        if old is not None and old.get("spec") == spec:
            if not quiet:
                print(f"== [{k}/{len(plan.entries)}] {entry.name}: reusing {path}", flush=True)
            results.append(old)
            continue
        per_seed = []
        for seed in entry.seeds:
            run_dir = out / "runs" / (entry.name if len(entry.seeds) == 1 else f"{entry.name}-seed{seed}")
            if not quiet:
                print(f"== [{k}/{len(plan.entries)}] {entry.name} (seed {seed}): pretraining on {entry.data}, budget {entry.budget}",
                      flush=True)
            t0 = time.perf_counter()
            run = pretrain(entry.method, data=entry.data, budget=entry.budget, out=run_dir, device=device, seed=seed,
                           options=entry.options, overwrite=True, quiet=quiet)
            t1 = time.perf_counter()
            if not quiet:
                print(f"== [{k}/{len(plan.entries)}] {entry.name}: probing ({t1 - t0:.0f} s pretraining)", flush=True)
            res = probe_run(run, plan.labels, plan.label_seeds, device, quiet=quiet, split=plan.split,
                            family_metrics=plan.family_metrics)
            res["pretrain_seconds"] = round(t1 - t0, 1)
            res["probe_seconds"] = round(time.perf_counter() - t1, 1)
            per_seed.append(res)
        result = _merge_seeds(per_seed)
        result.update(method=entry.name, method_class=entry.method, spec=spec,
                      pretrain_seconds=round(sum(r["pretrain_seconds"] for r in per_seed), 1),
                      probe_seconds=round(sum(r["probe_seconds"] for r in per_seed), 1))
        if len(per_seed) > 1 and result["references"]:
            add_intervals(result, result["test_size"])
        if entry.floors:
            result["floors"] = check_floors(result, entry.floors)
        atomic_write(path, json.dumps(result, indent=2))
        results.append(result)
        if not quiet:
            print(format_rows(result), flush=True)
        meta = {"machine": machine(), "device": str(resolve_device(device)), "budget": ", ".join(sorted({e.budget for e in plan.entries})),
                "wall_clock_seconds": round(time.perf_counter() - t_start, 1), "date": time.strftime("%Y-%m-%d"),
                "protocol": PROTOCOL_VERSION, "title": plan.title, "split": plan.split}
        if not quiet:
            print(f"== writing the report to {out}", flush=True)
        write_report(results, out, command, meta)  # after each entry, so a long bench shows its progress
    return results


# one method of each family; rotation stands for the pretext tasks, future-features for video
DEFAULT_BENCH = ("kmeans", "denoising-autoencoder", "dcgan", "rotation", "future-features", "simclr")
