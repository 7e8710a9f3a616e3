"""Malformed inputs against the real command line: every case runs as its own
``unsup`` process with a timeout (by default forked from one that has imported
unsup and torch, then ``unsup.cli.main(argv)``: seconds a case instead of a
torch import each; ``--mode exec`` starts a fresh interpreter per case), and is
classified as

- ``one-line refusal``: exit status 2, one line on stderr, no traceback;
- ``multi-line refusal``: a non-zero exit and a clear message over several lines;
- ``traceback``: a Python traceback on stderr;
- ``hang``: still running at the timeout;
- ``silent acceptance``: exit 0 for input that should have been refused;
- ``clear conversion``: a documented conversion (16-bit, float, mixed channels,
  garbage metrics lines) accepted with exit 0, the warning where the rule has one.

Each refusal is also checked for naming the file or option, and the case's
folder is hashed before and after: a refused input leaves what is on disk as it
was. The cases are the tables of ``tests/test_bad_input.py`` (options, readers,
run-directory files) plus the ones that only a subprocess can run (plans,
conversions through a whole pretraining, probe pairs).

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bad_inputs.py [--workers 2] [--timeout 180] [--mode exec]

Writes benchmarks/results/bad_inputs.md and bad_inputs.json (with ``--only``:
bad_inputs-MODE-subset.md and .json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
UNSUP = [sys.executable, "-m", "unsup.cli"]
COMMAND = "OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bad_inputs.py"
MODES = {"fork": "forked from a process that imported unsup, then `unsup.cli.main(argv)` as `python -m unsup.cli` runs it",
         "exec": "a fresh `python -m unsup.cli` interpreter"}


def _tables():
    """The case tables of tests/test_bad_input.py, imported by path (tests/ is no package)."""
    spec = importlib.util.spec_from_file_location("bad_input_tables", ROOT / "tests" / "test_bad_input.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@dataclass
class Case:
    name: str
    kind: str  # options | readers | run directory | arguments | plans | conversions
    argv: list[str]
    fragment: str  # the refusal must contain it (the file or option); a conversion: its warning, or ""
    expect: str = "refusal"  # or "conversion"
    env: dict | None = None
    skip: tuple[str, ...] = ()  # files `unsup` may write even when it refuses (show's curves)


@dataclass
class Outcome:
    name: str
    kind: str
    outcome: str
    names_it: bool
    disk_unchanged: bool
    seconds: float
    stderr: str
    command: str


def build_cases(work: Path, t) -> list[Case]:
    tiny = t.npz(work / "tiny.npz", images=t.OK, labels=t.OK_Y, test_images=t.OK[:20], test_labels=t.OK_Y[:20])
    trained = work / "trained"
    subprocess.run([*UNSUP, "pretrain", "denoising-autoencoder", "--data", str(tiny), "--out", str(trained), *t.TRAIN],
                   check=True, capture_output=True)
    t.TINY[:] = [str(tiny)]
    cases: list[Case] = []

    def folder(name: str) -> Path:
        d = work / "cases" / name
        d.mkdir(parents=True)
        return d

    def run_copy(d: Path) -> Path:
        shutil.copytree(trained, d / "run")
        return d / "run"

    base = ["--budget", "64", "-q"]
    for extra, fragment in t.OPTION_CASES:
        d = folder(f"option {' '.join(extra)}".replace("/", "_"))
        cases.append(Case(d.name, "options", ["pretrain", "simclr", "--data", t.MISSING, "--out", str(d / "run"), *base, *extra], fragment))
    for method, option in t.METHOD_OPTION_CASES:
        d = folder(f"{method} -o {option}".replace("/", "_"))
        cases.append(Case(d.name, "options", ["pretrain", method, "--data", t.MISSING, "--out", str(d / "run"), *base, "-o", option],
                          option.split("=")[0]))
    for args, fragment in t.PROBE_BENCH_CASES:
        d = folder(" ".join(args).replace("/", "_") or "empty")
        run = run_copy(d)
        argv = [str(run) if a == "RUN" else str(d / "out.pt") if a == "OUT" else a for a in args]
        cases.append(Case(d.name, "arguments", argv + (["--out", str(d / "bench")] if argv[0] == "bench" else []), fragment))
    for i, sub in enumerate(("taken", "taken/below")):
        d = folder(f"--out is a file {i}")
        (d / "taken").write_text("mine")
        cases.append(Case(d.name, "arguments", ["pretrain", "simclr", "--data", str(tiny), "--out", str(d / sub), *base], "--out"))
    for name in sorted(t.READER_CASES):
        build, fragment = t.READER_CASES[name]
        d = folder(f"reader {name}")
        src = Path(build(d))
        env = {"UNSUP_DATA": str(src)} if name.startswith("idx") else None
        data = "fashion-mnist" if name.startswith("idx") else str(src)
        extra = ["--max-memory", "1M"] if "memory" in name else []
        cases.append(Case(d.name, "readers", ["pretrain", "rotation", "--data", data, "--out", str(d / "run"), *base, *extra], fragment, env=env))
    for name in sorted(t.PAIR_CASES):  # splits that load alone but cannot be probed together: a run whose data is them
        build, fragment = t.PAIR_CASES[name]
        d = folder(f"probe pair {name}")
        build(d)
        run = run_copy(d)
        config = yaml.safe_load((run / "config.yaml").read_text())
        (run / "config.yaml").write_text(yaml.safe_dump({**config, "data": str(d / "f"), "shape": [1, 16, 16]}, sort_keys=False))
        cases.append(Case(d.name, "readers", ["probe", str(run), "--labels", "1", "--seeds", "1", "--no-references", "-q"], fragment))
    for name, (file, tamper, commands, fragment) in sorted(t.RUN_FILE_CASES.items()):
        for command in commands:
            d = folder(f"run {name} {command}")
            run = run_copy(d)
            t.apply_tamper(run / file, tamper)
            skip = ("run/figures/curves.png",) if command == "show" else ()
            cases.append(Case(d.name, "run directory", [str(a) for a in t.COMMANDS[command](run)], fragment, skip=skip))
    for method, extra, fragment in t.SMALL_SET_CASES:
        d = folder(f"ten images for {method} {' '.join(extra)}")
        ten = t.npz(d / "ten.npz", images=t.OK[:10], labels=t.OK_Y[:10])
        cases.append(Case(d.name, "readers", ["pretrain", method, "--data", str(ten), "--out", str(d / "run"), *base, *extra], fragment))
    cases += _plan_cases(folder, tiny)
    cases += _more_cases(folder, run_copy, tiny, t)
    return cases


PLANS = {
    "not YAML": ("entries: [unclosed", "not valid YAML"),
    "a list": ("- simclr\n", "mapping"),
    "no entries": ("title: x\n", "entries"),
    "unknown key": ("entries: [simclr]\ncolour: red\n", "colour"),
    "entry option out of range": ("entries:\n  - {method: simclr, options: {lr: -1}}\n", "option lr"),
    "entry options a list": ("entries:\n  - {method: simclr, options: [1, 2]}\n", "mappings"),
    "label_seeds 0": ("entries: [simclr]\nlabel_seeds: 0\n", "label_seeds"),
    "labels bad": ("entries: [simclr]\nlabels: [1, ten]\n", "label budget"),
    "bad floor rule": ("entries:\n  - {method: simclr, floors: {knn@10: 'good'}}\n", "rule"),
    "seeds not a list": ("entries:\n  - {method: simclr, seeds: 3}\n", "seeds"),
    "entry budget 0": ("entries:\n  - {method: simclr, budget: 0}\n", "budget"),
    "split bad": ("entries: [simclr]\nsplit: train\n", "split"),
    "yaml tag": ("entries: !!python/object/apply:os.system [touch pwned]\n", "YAML"),
}


def _plan_cases(folder, tiny) -> list[Case]:
    out = []
    for name, (text, fragment) in PLANS.items():
        d = folder(f"plan {name}")
        (d / "plan.yaml").write_text(text)
        out.append(Case(d.name, "plans", ["bench", "--plan", str(d / "plan.yaml"), "--data", str(tiny), "--out", str(d / "bench"), "-q"],
                        fragment))
    return out


def _more_cases(folder, run_copy, tiny, t) -> list[Case]:
    """Cases only a subprocess runs: whole pretrainings that convert, and a few more commands."""
    from PIL import Image

    out = []
    ramp = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 256).astype(np.uint16)
    d = folder("convert 16-bit png folder")
    for i in range(12):
        Image.fromarray(ramp).save(d / f"{i}.png")
    out.append(Case(d.name, "conversions", ["pretrain", "rotation", "--data", str(d), "--out", str(d / "run"), *t.TRAIN], "",
                    expect="conversion"))
    d = folder("convert mixed channels folder")
    for i in range(12):
        Image.fromarray(t.GREY if i % 4 else np.zeros((16, 16, 3), np.uint8)).save(d / f"{i}.png")
    out.append(Case(d.name, "conversions", ["pretrain", "rotation", "--data", str(d), "--out", str(d / "run"), *t.TRAIN],
                    "9 greyscale and 3 colour", expect="conversion"))
    for name, images in (("uint16", t.OK.astype(np.uint16) * 257), ("float 0-1", t.OK / 255.0), ("float 0-255", t.OK.astype(np.float32))):
        d = folder(f"convert npz {name}")
        data = t.npz(d / "d.npz", images=images)
        out.append(Case(d.name, "conversions", ["pretrain", "rotation", "--data", str(data), "--out", str(d / "run"), *t.TRAIN], "",
                        expect="conversion"))
    d = folder("convert garbage metrics lines")
    run = run_copy(d)
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": 3, "loss": \n\xff\xfe\n')
    out.append(Case(d.name, "conversions", ["show", str(run)], "2 line(s)", expect="conversion", skip=("run/figures/curves.png",)))

    d = folder("export out is a directory")
    run = run_copy(d)
    (d / "dir").mkdir()
    out.append(Case(d.name, "arguments", ["export", str(run), "--format", "torchscript", "--out", str(d / "dir")], "directory"))
    d = folder("export out exists")
    run = run_copy(d)
    (d / "enc.pt").write_text("mine")
    out.append(Case(d.name, "arguments", ["export", str(run), "--format", "torchscript", "--out", str(d / "enc.pt")], "enc.pt"))
    d = folder("show a file")
    (d / "file").write_text("x")
    out.append(Case(d.name, "run directory", ["show", str(d / "file")], "file"))
    d = folder("probe missing run")
    out.append(Case(d.name, "run directory", ["probe", str(d / "nothing")], "nothing"))
    d = folder("resume other options")
    run = run_copy(d)
    out.append(Case(d.name, "run directory", ["pretrain", "denoising-autoencoder", "--data", str(tiny), "--out", str(run), "--resume",
                                              "--budget", "64", "-o", "batch_size=16", "-q", "--no-tensorboard"], "batch_size"))
    d = folder("pretrain over an existing run")
    run = run_copy(d)
    out.append(Case(d.name, "run directory", ["pretrain", "rotation", "--data", str(tiny), "--out", str(run), "-q"], "--overwrite"))
    d = folder("data get unknown")
    out.append(Case(d.name, "arguments", ["data", "get", "imagenet-99"], "imagenet-99"))
    d = folder("npz labels past 10000 classes")
    out.append(Case(d.name, "readers", ["pretrain", "rotation", "--data", str(t.npz(d / "d.npz", images=t.OK, labels=t.OK_Y + 10_000)),
                                        "--out", str(d / "run"), "--budget", "64", "-q"], "labels"))
    return out


def _hash(root: Path, skip: tuple[str, ...]) -> dict[str, int]:
    return {str(p.relative_to(root)): hash(p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file() and str(p.relative_to(root)) not in skip}


def _start(case: Case, work: Path, mode: str):
    """Start one case: ``exec`` a fresh interpreter, or ``fork`` this one (unsup and torch
    already imported) and call ``unsup.cli.main`` in the child, as ``python -m unsup.cli`` does."""
    d = work / "cases" / case.name
    env = {"OMP_NUM_THREADS": "1", "UNSUP_CACHE": str(work / "cache"), **(case.env or {})}
    err_path = d.parent / f".{case.name}.stderr"
    if mode == "exec":
        argv = ["nice", "-n", "19", *UNSUP, *case.argv]
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=d, env={**os.environ, **env})
        return proc.pid, err_path
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.chdir(d)
            os.environ.update(env)
            fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            from unsup.cli import main as cli_main

            try:
                code = cli_main(case.argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # what the interpreter would print for an uncaught exception
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid, err_path


def _finish(case: Case, code: int | None, err_path: Path, seconds: float, before: dict, work: Path) -> Outcome:
    d = work / "cases" / case.name
    err = err_path.read_bytes().decode(errors="replace")
    lines = [line for line in err.strip().splitlines() if line.strip()]
    if code is None:
        outcome = "hang"
    elif "Traceback" in err:
        outcome = "traceback"
    elif case.expect == "conversion":
        warned = not case.fragment or (case.fragment in err and len(lines) == 1)
        outcome = "clear conversion" if code == 0 and warned else ("multi-line refusal" if code else "silent acceptance")
    elif code == 0:
        outcome = "silent acceptance"
    else:
        outcome = "one-line refusal" if code == 2 and len(lines) == 1 else "multi-line refusal"
    unchanged = case.expect == "conversion" or (_hash(d, case.skip) == before and not (d / "pwned").exists())
    return Outcome(case.name, case.kind, outcome, case.fragment in err, unchanged, round(seconds, 1), err.strip()[-600:],
                   "unsup " + " ".join(case.argv))


def run_cases(cases: list[Case], work: Path, timeout: float, workers: int, mode: str) -> list[Outcome]:
    """Up to ``workers`` cases at once; one still running at ``timeout`` is killed and counted a hang."""
    pending, running, done = list(cases), {}, {}
    while pending or running:
        while pending and len(running) < workers:
            case = pending.pop(0)
            before = _hash(work / "cases" / case.name, case.skip)
            pid, err_path = _start(case, work, mode)
            running[pid] = (case, err_path, time.perf_counter(), before)
        time.sleep(0.05)
        for pid, (case, err_path, t0, before) in list(running.items()):
            waited, status = os.waitpid(pid, os.WNOHANG)
            elapsed = time.perf_counter() - t0
            if waited == 0 and elapsed < timeout:
                continue
            if waited == 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                code = None
            else:
                code = os.waitstatus_to_exitcode(status)
            del running[pid]
            o = done[case.name] = _finish(case, code, err_path, elapsed, before, work)
            print(f"{len(done):4d} {o.outcome:18s} {o.seconds:6.1f}s  {o.name}", flush=True)
    return [done[c.name] for c in cases]


def write_results(outcomes: list[Outcome], wall: float, out: Path, mode: str, suffix: str = "") -> None:
    """``bad_inputs{suffix}.md`` and ``.json`` in ``out``: counts by outcome and kind, then every case."""
    order = ["one-line refusal", "clear conversion", "multi-line refusal", "traceback", "hang", "silent acceptance"]
    counts = {k: sum(o.outcome == k for o in outcomes) for k in order}
    refusals = [o for o in outcomes if o.outcome == "one-line refusal"]
    kinds = sorted({o.kind for o in outcomes})
    lines = [
        "# Malformed inputs: refused in one line, or converted by a documented rule",
        "",
        f"{len(outcomes)} malformed inputs, each its own `unsup` process ({MODES[mode]}; still running at the timeout: "
        f"a hang), {time.strftime('%Y-%m-%d')}, {wall / 60:.1f} min wall-clock. Rerun: `{COMMAND}{' --mode exec' if mode == 'exec' else ''}`.",
        "",
        "| outcome | cases |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in counts.items()],
        "",
        f"One-line refusals that name the file or option: {sum(o.names_it for o in refusals)} of {len(refusals)}. "
        f"Cases whose folder changed on disk: {sum(not o.disk_unchanged for o in outcomes)}.",
        "",
        "| kind | cases | " + " | ".join(order) + " |",
        "|---|---:|" + "---:|" * len(order),
        *[f"| {k} | {sum(o.kind == k for o in outcomes)} | " + " | ".join(str(sum(o.kind == k and o.outcome == c for o in outcomes))
                                                                for c in order) + " |" for k in kinds],
        "",
        "## Cases",
        "",
        "| case | kind | outcome | names it | disk unchanged | s | stderr (last line) |",
        "|---|---|---|---|---|---:|---|",
    ]
    for o in outcomes:
        last = (o.stderr.splitlines() or [""])[-1].replace("|", "\\|")[:220]
        lines.append(f"| {o.name.replace('|', '/')} | {o.kind} | {o.outcome} | {'yes' if o.names_it else 'NO'} | "
                     f"{'yes' if o.disk_unchanged else 'NO'} | {o.seconds} | {last} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bad_inputs{suffix}.md").write_text("\n".join(lines) + "\n")
    (out / f"bad_inputs{suffix}.json").write_text(json.dumps({"counts": counts, "wall_seconds": round(wall, 1), "command": COMMAND, "mode": mode,
                                                     "cases": [asdict(o) for o in outcomes]}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--mode", choices=("fork", "exec"), default="fork",
                    help="fork: each case a child of this process with unsup imported (seconds a case); "
                         "exec: a fresh `python -m unsup.cli` per case (the torch import each time)")
    ap.add_argument("--only", default=None, help="run the cases whose name contains this text (results: bad_inputs-MODE-subset.md)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    t = _tables()
    import torch

    torch.set_num_threads(1)  # no thread pool in the process the cases fork from
    import unsup.cli  # noqa: F401 - imported once, before the forks
    from unsup.registry import all_methods

    all_methods()
    with tempfile.TemporaryDirectory(prefix="unsup-bad-inputs-") as tmp:
        work = Path(tmp)
        old = Path.cwd()
        os.chdir(work)  # the tables' payloads write relative to the current folder
        try:
            cases = build_cases(work, t)
        finally:
            os.chdir(old)
        if args.only:
            cases = [c for c in cases if args.only in c.name]
        print(f"{len(cases)} cases, {args.workers} workers, {args.mode}", flush=True)
        t0 = time.perf_counter()
        outcomes = run_cases(cases, work, args.timeout, args.workers, args.mode)
        wall = time.perf_counter() - t0
    write_results(outcomes, wall, Path(args.out), args.mode, f"-{args.mode}-subset" if args.only else "")
    bad = [o for o in outcomes if o.outcome not in ("one-line refusal", "clear conversion") or not o.disk_unchanged]
    for o in bad:
        print(f"\n== {o.name}: {o.outcome}\n{o.command}\n{o.stderr}")
    print({k: sum(o.outcome == k for o in outcomes) for k in sorted({o.outcome for o in outcomes})})


if __name__ == "__main__":
    main()
