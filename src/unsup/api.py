"""The Python API behind the CLI: ``pretrain``, ``probe_run`` and ``bench``.

    import unsup
    run = unsup.pretrain("simclr", data="fashion-mnist", budget="2m", out="runs/simclr")
    encoder = unsup.load_encoder(run)          # float (B, C, H, W) in [0, 1] -> (B, D)
    result = unsup.probe_run(run)              # the protocol, with references
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

from . import data as datasets
from .errors import UnsupError
from .evaluate import probe, random_encoder_rows, raw_pixel_rows, supervised_rows
from .lock import RunLock
from .methods.base import Method, config_from_dict
from .progress import bar as progress_bar
from .registry import get_method
from .run import PROBE, RunDir, atomic_write, load_method
from .train import distributed as dist
from .train.budget import parse_budget
from .train.loop import TrainContext, parse_interval, train_loop
from .train.monitor import KnnMonitor
from .user import as_dataset, describe, user_backbone


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


def _check_out(out: Path) -> None:
    """``out`` is, or can become, a run directory: refused before any data is loaded."""
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise UnsupError(f"--out {out}: {p} is a file, not a directory; choose another --out")
            if not os.access(p, os.W_OK | os.X_OK):
                raise UnsupError(f"--out {out}: {p} is not writable; choose another --out")
            return


def pretrain(method: str, data="fashion-mnist", budget: str = "2m", out: str | Path | None = None,
             device: str = "auto", seed: int = 0, options: dict | None = None, resume: bool = False,
             overwrite: bool = False, quiet: bool = False, compile: bool = False, monitor: bool = True,
             figures: bool = True, tensorboard: bool = True, backbone: torch.nn.Module | None = None,
             checkpoint_every: str | float = "60s") -> Path:
    """Pretrain ``method`` without labels; returns the run directory (TensorBoard
    event files in ``RUN/tensorboard/`` when the package is installed and
    ``tensorboard`` is on).

    ``data``: a dataset name or path, or the user's own images as a tensor or
    array ``(N, C, H, W)`` (uint8, or floats in [0, 1]), an ``(images, labels)``
    pair, or a map-style ``torch.utils.data.Dataset`` (labels, when given, feed
    only the k-NN monitor). ``backbone``: the user's own ``nn.Module`` with an
    integer ``out_dim``, used as the encoder network of methods whose encoder
    is a backbone; load the result with ``load_encoder(run, backbone=...)``.

    ``checkpoint_every``: the checkpoint interval, seconds (``"60s"``, a number)
    or images (``"5000img"``, ``"20k"``). ``resume`` continues from the last
    checkpoint exactly (bit-identical on one process); without one it says so
    and starts from the beginning. The run directory is locked (``RUN/.lock``)
    while this runs: a second writer is refused in one line."""
    cls = get_method(method)
    cfg = config_from_dict(cls.Config, options)
    budget_ = parse_budget(budget)
    parse_interval(checkpoint_every)  # refused before any data is loaded
    if out is not None:
        _check_out(Path(out))
    dev = resolve_device(device)
    dist.init_from_env(dev)
    train = _load_train(cls, data) if isinstance(data, (str, Path)) else as_dataset(data)
    torch.manual_seed(seed + dist.rank())
    with user_backbone(backbone):
        m = cls(cfg, train.shape)
    dist.broadcast_module(m)  # under torchrun every replica starts from rank 0's weights
    start_digests = dist.replica_digests(m) if dist.world_size() > 1 else None
    if backbone is not None and not isinstance(getattr(m.encoder, "net", None), type(backbone)):
        raise UnsupError(f"{method} builds its own encoder (not a backbone), so backbone= does not apply; "
                         "use a method whose encoder is a backbone, e.g. simclr or rotation")
    m.check_training_set(train)  # a set too small (or unlabelled where labels are used) fails here, before the run directory
    data_name = str(data) if isinstance(data, (str, Path)) else describe(train)
    run = RunDir(out or Path("runs") / f"{method}-{Path(str(data)).name if isinstance(data, (str, Path)) else train.name}-seed{seed}")
    config = {"method": method, "data": data_name, "budget": str(budget_), "seed": seed, "device": str(dev),
              "shape": list(train.shape), "world_size": dist.world_size(), "options": asdict(cfg),
              **({"backbone": f"user: {type(backbone).__name__}"} if backbone is not None else {})}
    # one writer per run directory: a second pretrain, resume, overwrite or probe on it is refused
    with RunLock(run.path, f"unsup pretrain {method}") if dist.is_main() else contextlib.nullcontext():
        if dist.is_main():
            run.prepare(config, resume=resume, overwrite=overwrite)
        dist.barrier()
        mon_data = train.monitor_data() if hasattr(train, "monitor_data") else train  # video: labelled stills
        mon = KnnMonitor(mon_data, seed=seed) if (monitor and mon_data is not None and mon_data.labels is not None) else None
        ctx = TrainContext(device=dev, run=run, quiet=quiet, resume=resume, compile=compile, seed=seed, monitor=mon, tensorboard=tensorboard,
                           desc=f"{method}", checkpoint_every=checkpoint_every, monitor_every=monitor_interval(budget_))
        if resume:
            ctx.resume_state(m)  # refuses another model's checkpoint; says so when there is none; cuts metrics.jsonl back
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
        if start_digests is not None:  # the replicas' weights at start and end, one digest per process
            ends = dist.replica_digests(m)
            if dist.is_main():
                run.log({"event": "replicas", "start_digests": start_digests, "end_digests": ends,
                         "identical": len(set(start_digests)) == 1 and len(set(ends)) == 1})
        if dist.is_main():
            run.save_encoder(m)
            run.log({"event": "done", "pretrain_seconds": round(seconds, 2), **{k: v for k, v in summary.items() if k != "loss"}})
            if figures:
                try:
                    fig_data = datasets.load(data, "test") if isinstance(data, (str, Path)) else train
                except UnsupError:
                    fig_data = train
                m.eval()
                run.figures_dir.mkdir(exist_ok=True)
                with progress_bar(None if quiet else f"{method}: figures", 1, "run") as b:  # a t-SNE takes seconds
                    m.figures(fig_data.to(dev), run.figures_dir)
                    b.update(1)
        dist.barrier()
    return run.path


def features(encoder: torch.nn.Module, images, device: str = "auto", batch_size: int | None = None):
    """Frozen features of the user's images as a numpy array ``(N, D)``, for
    scikit-learn or any other classifier; ``images`` as ``pretrain`` takes them."""
    from .evaluate.features import extract_features

    return extract_features(encoder.eval(), as_dataset(images).images, resolve_device(device), batch_size).numpy()


def monitor_interval(budget) -> float:
    """Seconds between k-NN monitor runs: every minute, or a quarter of a shorter time budget (at least
    10 s), so the time-to-accuracy curve of a short run has points between its start and its end. The
    monitor's own time is not counted in the budget."""
    return max(10.0, min(60.0, budget.value / 4)) if budget.kind == "seconds" else 60.0


def validation_split(train, share: float = 1 / 6, seed: int = 0):
    """A fixed hold-out of a labelled training split, to choose settings on
    (``split: validation`` in a plan): the test split stays untouched."""
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    cut = int(len(train) * share)
    return train.subset(perm[cut:]), train.subset(perm[:cut])


def probe_run(run_dir: str | Path, budgets=(1, 10, 100, "all"), seeds: int = 3, device: str = "auto",
              references: bool = True, supervised: bool = True, quiet: bool = True, split: str = "test",
              family_metrics: bool = True, train=None, test=None, backbone: torch.nn.Module | None = None) -> dict:
    """The protocol on a run's encoder, with references and 95% intervals to
    them, and the method's family metrics; writes ``probe.json``.

    ``train`` and ``test``: labelled sets of the user's own, each an
    ``(images, labels)`` pair, a ``torch.utils.data.Dataset`` of pairs or a
    dataset name (default: the probe sets of the run's data). ``backbone``:
    the module the run was pretrained with (``pretrain(..., backbone=)``); its
    random reference redraws that module's parameters, and the supervised
    reference, which needs a named backbone, is left out."""
    with user_backbone(backbone):
        return _probe_run(run_dir, budgets, seeds, device, references, supervised and backbone is None, quiet, split,
                          family_metrics, train, test, backbone)


def _labelled(data, role: str):
    ds = datasets.load(str(data), role) if isinstance(data, (str, Path)) else as_dataset(data, name=role)
    if ds.labels is None:
        raise UnsupError(f"the {role} set has no labels; give (images, labels) or a Dataset of (image, label) pairs")
    return ds


def _probe_run(run_dir, budgets, seeds, device, references, supervised, quiet, split, family_metrics, train, test, backbone) -> dict:
    from .evaluate.protocol import PROTOCOL_VERSION, add_intervals

    t_start = time.perf_counter()
    own_sets = train is None and test is None and backbone is None
    run = RunDir(run_dir)
    config = run.read_config()
    dev = resolve_device(device)
    method = load_method(run_dir, backbone=backbone).to(dev)
    in_memory = str(config["data"]).startswith("<in-memory")
    if (train is None or test is None) and in_memory:
        raise UnsupError(f"{run_dir} was pretrained on in-memory images; pass train= and test= (labelled sets) to probe it")
    if train is None or test is None:
        train, test = method.probe_datasets(config["data"])
    else:
        train, test = _labelled(train, "train"), _labelled(test, "test")
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
                                                                     progress=label("random init"), run_config=config)
        if supervised:
            named = getattr(method.cfg, "backbone", "small-convnet")
            say(f"supervised reference ({named}; cached after its first run)")
            sup = supervised_rows(train, test, budgets, seeds, named, dev, quiet,
                                  backbone_options=getattr(method.cfg, "backbone_options", None))
            result["references"]["supervised"] = sup
        shipped = [name.replace("_", " ") for name, rows in result["references"].items()
                   if any(r.get("source") == "shipped" for r in rows)]
        if shipped:
            result["references"]["shipped_note"] = (
                f"{', '.join(shipped)}: shipped with the package (made by `python benchmarks/references.py`: `--bench` "
                "for raw pixels and the random encoders, `--method NAME` for a method's own probe sets); delete "
                "src/unsup/evaluate/shipped/ to recompute them on this machine")
        add_intervals(result, len(test))
    from .curves import time_to_accuracy

    tta = time_to_accuracy(run.metrics())
    if tta is not None:
        result["time_to_accuracy"] = tta
    metrics = {}
    if family_metrics and not in_memory and type(method).family_metrics is not Method.family_metrics:
        # they read heads and generators: the whole trained method, not only its encoder
        metrics = load_method(run_dir, backbone=backbone, whole=True).eval().family_metrics(config["data"], dev)
    if metrics:
        result["metrics"] = metrics
    # what the probe ran with, so that a bench can reuse it for the same settings (None: sets the caller gave)
    result["settings"] = probe_settings(budgets, seeds, split, references, supervised, family_metrics) if own_sets else None
    result["probe_seconds"] = round(time.perf_counter() - t_start, 1)
    with RunLock(run.path, "unsup probe"):  # not while a pretrain rewrites this run
        atomic_write(run.file(PROBE), json.dumps(result, indent=2))
    return result


def probe_settings(budgets, seeds: int, split: str, references: bool, supervised: bool, family_metrics: bool) -> dict:
    """The settings a probe of a run's own probe sets depends on (kept in ``probe.json``)."""
    return {"labels": [str(b) for b in budgets], "label_seeds": seeds, "split": split, "references": references,
            "supervised": supervised, "family_metrics": family_metrics}


def machine(threads: int | None = None) -> str:
    """The CPU model (or GPU name) and thread count (``threads``, default torch's), for result headers."""
    import platform

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {threads or torch.get_num_threads()} threads"


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


def _earlier_result(path: Path) -> dict | None:
    """A bench entry's kept result, or None (with one warning) when the file is damaged: the entry is redone."""
    try:
        old = json.loads(path.read_bytes())
    except (ValueError, RecursionError):
        old = None
    if not isinstance(old, dict):
        print(f"warning: {path}: not a result file, the entry is redone", file=sys.stderr)
        return None
    return old


def _resolved_config(entry) -> dict:
    """Every option the entry's method runs with, its defaults included (as JSON
    holds them), so that a kept result is not reused after a default changed."""
    from .methods.base import config_from_dict
    from .registry import get_method

    cfg = config_from_dict(get_method(entry.method).Config, entry.options)
    return json.loads(json.dumps(asdict(cfg), default=str))


# spec keys added after results were kept, with the value those results were made with
_EARLIER_SPEC = {"supervised": True}


def _same_entry(old_spec, spec: dict) -> bool:
    """Whether a kept result was made by this entry. A key added to specs since
    the result was written takes its value from ``_EARLIER_SPEC``; a result
    written before specs held the resolved options is compared on the rest."""
    if not isinstance(old_spec, dict):
        return False
    old_spec = {**_EARLIER_SPEC, **old_spec}
    if "config" not in old_spec:
        spec = {k: v for k, v in spec.items() if k != "config"}
    return old_spec == spec


def bench(data: str = "fashion-mnist", methods: list[str] | None = None, budget: str = "60s", out: str | Path = "bench-out",
          budgets=(1, 10, 100, "all"), seeds: int = 3, device: str = "auto", quiet: bool = False,
          command: str | None = None, plan=None, fresh: bool = False, family_metrics: bool = False,
          report_only: bool = False, jobs: int = 1, threads: int | None = None, supervised: bool = True) -> list[dict]:
    """Pretrain and probe every entry of a plan (default: ``methods`` with the
    same ``budget`` each); write the leaderboard and the report to ``out``.
    ``family_metrics`` and ``supervised`` apply to the methods list (a plan says
    them itself): the family metrics are off by default, since a GAN's first FCD
    trains its reference classifier; ``supervised=False`` leaves out the
    supervised reference (a ViT-tiny's takes hours on a CPU).

    Each entry's result is kept in ``out/results/NAME.json``; a later bench on
    the same ``out`` reuses results whose entry is unchanged (``fresh`` redoes all).
    ``report_only``: write the report from the kept results and train nothing;
    the header names the entries that have none yet. ``jobs``: entries run in
    that many processes side by side, each with ``threads`` torch threads
    (default: the cores shared out; with ``jobs`` 1, the default is torch's).
    """
    from .evaluate.protocol import PROTOCOL_VERSION
    from .plan import check_floors, load_plan, parse_plan
    from .report import format_rows, write_report

    if plan is None:
        plan = parse_plan({"entries": list(methods or DEFAULT_BENCH), "labels": list(budgets), "label_seeds": seeds,
                           "family_metrics": family_metrics, "supervised": supervised}, "bench", data, budget)
    elif not hasattr(plan, "entries"):
        plan = load_plan(plan, data, budget) if isinstance(plan, (str, Path)) else parse_plan(plan, "plan", data, budget)
    out = Path(out)
    t_start = time.perf_counter()
    done: dict[int, dict] = {}  # plan position -> result, kept or new
    reused = []
    failed: list[tuple[str, str]] = []  # (entry, why): reported at the end, retried by the next run
    not_run: list[str] = []  # report_only: entries without a kept result

    def report(rows: list[dict]) -> None:
        # the threads each entry ran with: with --jobs, the parent's own count says nothing of the entries'
        per_entry = threads or (max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None)
        where = machine(per_entry) + (f" each, {jobs} entries side by side" if jobs > 1 else "")
        meta = {"machine": where, "device": str(resolve_device(device)), "budget": ", ".join(sorted({e.budget for e in plan.entries})),
                "date": time.strftime("%Y-%m-%d"), "protocol": PROTOCOL_VERSION, "title": plan.title, "split": plan.split}
        if not reused:  # with reused entries this command's time is not the bench's: the header sums the entries' own
            meta["wall_clock_seconds"] = round(time.perf_counter() - t_start, 1)
        if not_run:
            meta["note"] = f"not run yet ({len(not_run)} of {len(plan.entries)} entries): {', '.join(not_run)}"
        if not quiet:
            print(f"== writing the report to {out}", flush=True)
        write_report(rows, out, command, meta)

    todo = []  # (k, entry, spec, path) of the entries to pretrain and probe
    for k, entry in enumerate(plan.entries, 1):
        path = out / "results" / f"{entry.name}.json"
        spec = {**entry.spec(), "labels": [str(b) for b in plan.labels], "label_seeds": plan.label_seeds,
                "split": plan.split, "family_metrics": plan.family_metrics, "supervised": entry.supervised,
                "protocol": PROTOCOL_VERSION, "config": _resolved_config(entry)}
        old = _earlier_result(path) if path.is_file() and not fresh else None
        if old is not None and _same_entry(old.get("spec"), spec):
            if not quiet:
                print(f"== [{k}/{len(plan.entries)}] {entry.name}: reusing {path}", flush=True)
            if entry.floors:  # this plan's floors, which may differ from those of the plan that made the result
                old["floors"] = check_floors(old, entry.floors)
            else:
                old.pop("floors", None)
            done[k] = old
            reused.append(entry.name)
        elif report_only:
            not_run.append(entry.name)
        else:
            todo.append((k, entry, spec, path))
    if not quiet and not report_only:
        print(_plan_summary(plan, out, resolve_device(device), jobs, kept=set(reused)), flush=True)

    def ordered() -> list[dict]:
        return [done[k] for k in sorted(done)]

    def finish(k: int, entry, path: Path, outcome) -> None:
        if isinstance(outcome, BaseException):  # one entry's failure must not cost a long bench the others
            failed.append((entry.name, _one_line(outcome)))
            if not isinstance(outcome, UnsupError):
                traceback.print_exception(outcome)
            print(f"== [{k}/{len(plan.entries)}] {entry.name} failed: {_one_line(outcome)}; the other entries go on "
                  f"(the same command retries it)", file=sys.stderr, flush=True)
            return
        atomic_write(path, json.dumps(outcome, indent=2))
        done[k] = outcome
        if not quiet:
            print(format_rows(outcome), flush=True)
        if len(done) + len(failed) < len(plan.entries):
            report(ordered())  # after each entry, so a long bench shows its progress

    if jobs > 1 and len(todo) > 1:
        _bench_side_by_side(todo, plan, out, device, quiet, fresh, jobs, threads, finish)
    else:
        with _threads(threads):
            for k, entry, spec, path in todo:
                try:
                    outcome = _bench_entry(entry, k, len(plan.entries), plan, spec, out, device, quiet, fresh)
                except Exception as e:  # noqa: BLE001 - reported by finish
                    outcome = e
                finish(k, entry, path, outcome)
    results = ordered()
    if report_only and not results:
        raise UnsupError(f"no result of this plan is kept in {out / 'results'}; run the bench without --report-only first")
    report(results)  # the whole plan, once, also when every entry was reused
    if failed:
        raise UnsupError(f"{len(failed)} of {len(plan.entries)} bench entries failed ({', '.join(n for n, _ in failed)}: "
                         f"{failed[0][1]}); the report in {out} has the others; fix and rerun the same command: "
                         "finished entries are reused")
    return results


@contextlib.contextmanager
def _threads(n: int | None):
    """torch's intra-op threads set to ``n`` for the block (None: unchanged)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _entry_in_worker(threads: int | None, entry, k: int, n: int, plan, spec: dict, out: Path, device, fresh: bool) -> dict:
    """One bench entry in a worker process of ``--jobs``: quiet (the parent reports), its own threads."""
    if threads:
        torch.set_num_threads(threads)
    return _bench_entry(entry, k, n, plan, spec, out, device, True, fresh)


def _bench_side_by_side(todo, plan, out: Path, device, quiet: bool, fresh: bool, jobs: int, threads: int | None, finish) -> None:
    """The entries of ``todo`` in ``jobs`` worker processes, each with ``threads`` threads (default: the
    machine's cores shared out), so that each time-budgeted entry has the same share of the machine;
    ``finish`` receives each result (or its exception) in the parent as it arrives."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    n = len(plan.entries)
    if not quiet:
        print(f"== {len(todo)} entries in {jobs} processes side by side, {threads} thread(s) each", flush=True)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool, \
            progress_bar(None if quiet else "bench", len(todo), "entry") as bar:
        futures = {}
        for k, entry, spec, path in todo:
            futures[pool.submit(_entry_in_worker, threads, entry, k, n, plan, spec, out, device, fresh)] = (k, entry, path)
        for future in as_completed(futures):
            k, entry, path = futures[future]
            try:
                outcome = future.result()
            except Exception as e:  # noqa: BLE001 - reported by finish
                outcome = e
            bar.update(1)
            finish(k, entry, path, outcome)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def _finished_pretraining(run_dir: Path, entry, seed: int) -> float | None:
    """The pretraining seconds of a finished run in ``run_dir`` that this entry and seed made (the same
    method, data, budget, resolved options and seed), or None: a bench whose probe was interrupted
    probes that run again instead of pretraining again."""
    from .run import CONFIG, ENCODER, comparable_config

    run = RunDir(run_dir)
    if not run.file(CONFIG).is_file() or not run.file(ENCODER).is_file():
        return None
    try:
        config = run.read_config()
        done = [r for r in run.metrics() if r.get("event") == "done"]
    except (UnsupError, OSError, ValueError):
        return None
    mine = json.loads(json.dumps({"method": entry.method, "data": entry.data, "options": _resolved_config(entry), "seed": seed},
                                 default=str))
    if not done or comparable_config(config) != mine or str(config.get("budget")) != str(parse_budget(entry.budget)):
        return None
    return float(done[-1].get("pretrain_seconds", 0.0))


def _seed_run_dir(out: Path, entry, seed: int) -> Path:
    """Where one pretraining seed of an entry runs: OUT/runs/NAME for a one-seed entry, NAME-seedS for several; an
    entry given more seeds keeps its finished one-seed run (NAME) for that seed."""
    runs = out / "runs"
    if len(entry.seeds) == 1:
        return runs / entry.name
    own = runs / f"{entry.name}-seed{seed}"
    if _finished_pretraining(own, entry, seed) is None and _finished_pretraining(runs / entry.name, entry, seed) is not None:
        return runs / entry.name
    return own


def _kept_probe(run_dir: Path, settings: dict) -> dict | None:
    """The probe of a finished run that an earlier bench wrote with these settings, after the run's encoder was
    written (so a seed that was probed is not probed again when the entry gains seeds), or None."""
    from .run import ENCODER

    run = RunDir(run_dir)
    try:
        if run.file(PROBE).stat().st_mtime < run.file(ENCODER).stat().st_mtime:
            return None
        old = json.loads(run.file(PROBE).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return old if isinstance(old, dict) and old.get("settings") == settings and "probe_seconds" in old else None


def _kept_seed(out: Path, plan, entry, seed: int, fresh: bool = False) -> tuple[Path, float | None, dict | None]:
    """One pretraining seed of an entry: its run directory, the seconds of its finished pretraining (None: to
    pretrain) and its probe with this plan's settings (None: to probe)."""
    run_dir = _seed_run_dir(out, entry, seed)
    kept = None if fresh else _finished_pretraining(run_dir, entry, seed)
    settings = probe_settings(plan.labels, plan.label_seeds, plan.split, True, entry.supervised, plan.family_metrics)
    return run_dir, kept, None if kept is None else _kept_probe(run_dir, settings)


def _bench_entry(entry, k: int, n: int, plan, spec: dict, out: Path, device, quiet: bool, fresh: bool = False) -> dict:
    """Pretrain and probe one bench entry (each of its pretraining seeds); its result, floors checked.
    A finished pretraining of the entry already in its run directory is not redone, and its probe with the
    same settings is not redone either (unless ``fresh``)."""
    from .evaluate.protocol import add_intervals
    from .plan import check_floors

    per_seed = []
    for seed in entry.seeds:
        if not quiet:
            print(f"== [{k}/{n}] {entry.name} (seed {seed}): pretraining on {entry.data}, budget {entry.budget}",
                  flush=True)
        t0 = time.perf_counter()
        run_dir, kept, res = _kept_seed(out, plan, entry, seed, fresh)
        if res is not None:
            if not quiet:
                print(f"== [{k}/{n}] {entry.name}: reusing the finished pretraining and probe in {run_dir}", flush=True)
        elif kept is not None:  # the probe of an earlier bench did not finish: probe again, do not pretrain again
            if not quiet:
                print(f"== [{k}/{n}] {entry.name}: reusing the finished pretraining in {run_dir}", flush=True)
        else:
            pretrain(entry.method, data=entry.data, budget=entry.budget, out=run_dir, device=device, seed=seed,
                     options=entry.options, overwrite=True, quiet=quiet)
        t1 = time.perf_counter()
        if res is None:
            if not quiet:
                print(f"== [{k}/{n}] {entry.name}: probing ({(t1 - t0) if kept is None else kept:.0f} s pretraining)", flush=True)
            res = probe_run(run_dir, plan.labels, plan.label_seeds, device, quiet=quiet, split=plan.split,
                            family_metrics=plan.family_metrics, supervised=entry.supervised)
        res["pretrain_seconds"] = round(t1 - t0 if kept is None else kept, 1)
        per_seed.append(res)
    result = _merge_seeds(per_seed)
    result.update(method=entry.name, method_class=entry.method, spec=spec,
                  pretrain_seconds=round(sum(r["pretrain_seconds"] for r in per_seed), 1),
                  probe_seconds=round(sum(r["probe_seconds"] for r in per_seed), 1))
    if len(per_seed) > 1 and result["references"]:
        add_intervals(result, result["test_size"])
    if entry.floors:
        result["floors"] = check_floors(result, entry.floors)
    return result


# rough probing time of one entry (features, probes, references when not cached), from the default bench's
# timings (benchmarks/results/bench-default.md); an entry's own earlier result in OUT/results replaces it
PROBE_SECONDS_GUESS = {"cpu": 240.0, "cuda": 30.0}


def _plan_summary(plan, out: Path, device: torch.device, jobs: int = 1, kept: set[str] = frozenset()) -> str:
    """The bench's plan before it starts: entries, budgets and an estimated wall-clock of what is left to
    run (entries in ``kept`` reuse their results and cost nothing)."""
    lines = [f"bench: {len(plan.entries)} entries on {machine()}"
             + (f", {len(kept)} of them with a kept result" if kept else "")]
    total = 0.0
    for e in plan.entries:
        if e.name in kept:
            lines.append(f"  {e.name:<24} kept result, reused")
            continue
        b = parse_budget(e.budget)
        old = out / "results" / f"{e.name}.json"
        try:
            kept_result = json.loads(old.read_text())  # its probing time per seed
            probe_s = float(kept_result["probe_seconds"]) / len(kept_result["pretrain_seeds"])
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            probe_s = PROBE_SECONDS_GUESS.get(device.type, PROBE_SECONDS_GUESS["cpu"])
        train_s = b.value if b.kind == "seconds" else None
        # seeds whose pretraining (and probe) an earlier bench finished cost nothing of theirs again
        states = [_kept_seed(out, plan, e, s) for s in e.seeds]
        pretrained = [st for st in states if st[1] is not None]
        probed = [st for st in states if st[2] is not None]
        to_train, to_probe = len(e.seeds) - len(pretrained), len(e.seeds) - len(probed)
        mine = (train_s or 0.0) * to_train + probe_s * to_probe
        total += mine
        kept_note = f" ({len(pretrained)} pretrained, {len(probed)} probed already)" if pretrained else ""
        lines.append(f"  {e.name:<24} budget {e.budget:<6} x {len(e.seeds)} seed(s){kept_note}: about "
                     + (f"{mine / 60:.0f} min" if train_s or not to_train else f"{mine / 60:.0f} min + pretraining"))
    side = f" ({jobs} processes side by side)" if jobs > 1 else ""
    left = [e for e in plan.entries if e.name not in kept]
    lines.append(f"  estimated wall-clock: about {total / jobs / 60:.0f} min{side}"
                 + ("" if all(parse_budget(e.budget).kind == "seconds" for e in left) else " plus the image-budget pretraining"))
    return "\n".join(lines)


# one method of each family; rotation stands for the pretext tasks, future-features for video. The masked family
# (ViT-tiny) is not in it: on a CPU its supervised reference alone (a ViT-tiny trained to convergence) takes hours
DEFAULT_BENCH = ("kmeans", "denoising-autoencoder", "dcgan", "rotation", "future-features", "simclr")
