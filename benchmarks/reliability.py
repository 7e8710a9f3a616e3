"""The reliability floors of issue 18, measured on a tiny Fashion-MNIST subset:

- kill -9 / resume: per loop type (gradient: simclr, GAN: dcgan, non-gradient:
  kmeans), ``--trials`` runs of ``unsup pretrain`` killed with SIGKILL at a
  random moment (every fourth one the moment a checkpoint's temporary file
  appears: during a checkpoint write), then resumed; each resumed run is
  compared bit for bit (every checkpoint tensor, the encoder, the loss records)
  with one uninterrupted run. Also counted: unreadable checkpoints after a kill,
  and the work lost per kill (seconds between the last checkpoint written and
  the kill).
- divergence: SimCLR, a denoising autoencoder and DCGAN driven to explosion;
  the kept checkpoint must be finite and ``--resume -o lr=<lower>`` must finish.
- two writers: ``--trials`` runs in which a second writer (the CLI with
  --overwrite, or the API fresh, --resume, --overwrite, or a probe's lock)
  arrives while a first ``unsup pretrain`` holds the folder (frozen with
  SIGSTOP so that the folder stays still): it must be refused in one line and
  the folder's files must be unchanged, byte for byte.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/reliability.py [--trials 20]

Writes benchmarks/results/reliability.md and .json.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import unsup
from unsup.errors import UnsupError
from unsup.lock import RunLock
from unsup.run import RunDir, build_method
from unsup.train.loop import WEIGHT_LIMIT

# method, budget, options, checkpoint interval: these runs train for one to a few seconds, so intervals in
# images (every 2 or 4 steps, every k-means pass) make most kills land after a checkpoint
LOOPS = {
    "gradient (simclr)": ("simclr", "240", {"batch_size": 16}, "32img"),
    "GAN (dcgan)": ("dcgan", "480", {"batch_size": 16, "g_width": 8, "d_width": 8}, "64img"),
    "non-gradient (kmeans)": ("kmeans", "600", {"num_patches": 10000, "num_centroids": 32, "iterations": 30,
                                                "kmeans_batch": 500}, "1img"),
}
DIVERGE = {
    "simclr": {"batch_size": 16, "optimizer": "sgd", "lr": 10, "warmup": 0.0, "weight_decay": 1.0},
    "denoising-autoencoder": {"batch_size": 16, "optimizer": "sgd", "lr": 10, "warmup": 0.9},
    "dcgan": {"batch_size": 16, "g_width": 8, "d_width": 8, "optimizer": "sgd", "lr": 10, "warmup": 0.9},
}


def tiny_dataset(path: Path) -> str:
    from unsup.data import load

    tr, te = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    g = torch.Generator().manual_seed(0)
    i, j = torch.randperm(len(tr), generator=g)[:600], torch.randperm(len(te), generator=g)[:200]
    np.savez(path, images=tr.images[i, 0].numpy(), labels=tr.labels[i].numpy(),
             test_images=te.images[j, 0].numpy(), test_labels=te.labels[j].numpy())
    return str(path)


def cli(method, data, budget, out, options, *extra) -> list[str]:
    opts = [a for k, v in options.items() for a in ("-o", f"{k}={v}")]
    return [sys.executable, "-m", "unsup.cli", "pretrain", method, "--data", data, "--budget", budget, "--out", str(out),
            "--device", "cpu", "-q", "--no-tensorboard", *opts, *extra]


def api(method, data, budget, out, options, every, **kw) -> str:
    """Pretrain in this process; returns what it wrote on stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        unsup.pretrain(method, data=data, budget=budget, out=out, device="cpu", quiet=True, options=options,
                       figures=False, tensorboard=False, checkpoint_every=every, **kw)
    return err.getvalue()


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def records(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s", "pretrain_seconds")}
            for r in RunDir(run).metrics()]


def monitor(record: dict) -> bool:
    """A k-NN monitor record: the monitor runs on a clock, so interrupted runs may have one more."""
    return any(k.startswith("knn_monitor") for k in record)


def same_run(a: Path, b: Path) -> bool:
    sa, sb = RunDir(a).load_checkpoint(), RunDir(b).load_checkpoint()
    if sa["step"] != sb["step"] or sa["method"].keys() != sb["method"].keys():
        return False
    if not all(torch.equal(sa["method"][k], sb["method"][k]) for k in sa["method"]):
        return False
    ea, eb = unsup.load_encoder(a).state_dict(), unsup.load_encoder(b).state_dict()
    if not all(torch.equal(ea[k], eb[k]) for k in ea):
        return False
    # the loss records, bit for bit, and one story: the same records in the same order, one "done"
    return [r for r in records(a) if not monitor(r)] == [r for r in records(b) if not monitor(r)]


def kill_trials(name, method, budget, options, data, root: Path, trials: int, every: str, rng: random.Random) -> dict:
    ref = root / "reference"
    p = subprocess.Popen(cli(method, data, budget, root / "reference-cli", options, "--checkpoint-every", every),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while p.poll() is None and not (root / "reference-cli" / ".lock").exists():
        time.sleep(0.002)
    t_lock = time.perf_counter()  # data loaded, the folder taken: training starts
    while p.poll() is None and not (root / "reference-cli" / "encoder.safetensors").exists():
        time.sleep(0.002)
    wall = time.perf_counter() - t_lock  # the training window: kills land in it (start-up before, figures after)
    assert p.wait() == 0
    api(method, data, budget, ref, options, every)
    out = {"loop": name, "method": method, "budget": budget, "options": options, "every": every, "trials": trials, "identical": 0,
           "cli_equals_api": same_run(ref, root / "reference-cli"), "corrupt_checkpoints": 0, "killed_during_write": 0,
           "killed_before_first_checkpoint": 0, "finished_before_kill": 0, "after_training": 0, "lost_seconds": [], "training_window_seconds": round(wall, 2),
           "failures": []}
    for t in range(trials):
        d = root / f"trial{t}"
        aim_write = t % 4 == 3
        p = subprocess.Popen(cli(method, data, budget, d, options, "--checkpoint-every", every),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while p.poll() is None and not (d / ".lock").exists():
            time.sleep(0.002)
        start = time.perf_counter()
        if aim_write:  # the moment a checkpoint's temporary file appears
            while p.poll() is None and time.perf_counter() - start < wall and not list(d.glob(".checkpoint.pt.*")):
                time.sleep(0.001)
        else:
            time.sleep(rng.uniform(0, wall))
        finished = p.poll() is not None
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed_at = time.time()
        out["finished_before_kill"] += finished
        out["after_training"] += (d / "encoder.safetensors").exists()
        out["killed_during_write"] += bool(list(d.glob(".checkpoint.pt.*")))
        ckpt = d / "checkpoint.pt"
        if ckpt.exists():
            try:
                RunDir(d).load_checkpoint()
            except UnsupError:
                out["corrupt_checkpoints"] += 1
            if not (d / "encoder.safetensors").exists():  # training not over: what it did since the checkpoint is lost
                out["lost_seconds"].append(round(killed_at - ckpt.stat().st_mtime, 3))
        else:
            out["killed_before_first_checkpoint"] += 1
        try:
            api(method, data, budget, d, options, every, resume=True)
            ok = same_run(ref, d)
        except Exception as e:  # noqa: BLE001 - a failed trial is counted, not fatal
            ok, _ = False, out["failures"].append(f"trial {t}: {type(e).__name__}: {e}")
        out["identical"] += ok
        if not ok and len(out["failures"]) < 5:
            out["failures"].append(f"trial {t}: differs from the uninterrupted run")
        print(f"  {name} trial {t + 1}/{trials}: {'identical' if ok else 'DIFFERENT'}", flush=True)
    lost = sorted(out["lost_seconds"])
    out["lost_seconds_max"] = lost[-1] if lost else None
    out["lost_seconds_median"] = lost[len(lost) // 2] if lost else None
    return out


def divergence_trials(data, root: Path) -> list[dict]:
    rows = []
    for method, options in DIVERGE.items():
        d = root / method
        row = {"method": method, "options": options}
        try:
            api(method, data, "320", d, options, "16img")
            row["error"] = None
        except UnsupError as e:
            row["error"] = str(e)
        kept = RunDir(d).load_checkpoint()
        row["kept_step"] = kept["step"] if kept else None
        params = dict(build_method(RunDir(d).read_config()).named_parameters())
        row["kept_finite"] = bool(kept) and all(bool(torch.isfinite(v).all()) for v in kept["method"].values()
                                                if v.is_floating_point())
        row["kept_within_limit"] = bool(kept) and all(float(kept["method"][k].abs().max()) <= WEIGHT_LIMIT for k in params)
        lower = 2e-4 if method == "dcgan" else 1e-3
        try:
            api(method, data, "320", d, {**options, "lr": lower}, "16img", resume=True)
            row["resumed_with_lr"], row["resume_finished"] = lower, RunDir(d).load_checkpoint()["step"] == 20
        except UnsupError as e:
            row["resumed_with_lr"], row["resume_finished"], row["resume_error"] = lower, False, str(e)
        print(f"  divergence {method}: kept step {row['kept_step']}, finite {row['kept_finite']}, "
              f"resume finished {row['resume_finished']}", flush=True)
        rows.append(row)
    return rows


def writer_trials(data, root: Path, trials: int, rng: random.Random) -> dict:
    kinds = ["cli --overwrite", "api fresh", "api --resume", "api --overwrite", "probe lock"]
    out = {"trials": trials, "refused": 0, "one_line": 0, "unchanged": 0, "kinds": kinds, "failures": []}
    opts = {"batch_size": 16}
    for t in range(trials):
        d = root / f"trial{t}"
        first = subprocess.Popen(cli("simclr", data, "100k", d, opts, "--checkpoint-every", "1s"),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not ((d / ".lock").exists() and (d / "config.yaml").exists()):
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 3))  # caught at a random moment of its run
            first.send_signal(signal.SIGSTOP)
            before = digest(d)
            kind = kinds[t % len(kinds)]
            message = None
            if kind == "cli --overwrite":
                r = subprocess.run(cli("simclr", data, "64", d, opts, "--overwrite"), capture_output=True, text=True)
                message = r.stderr.strip() if r.returncode == 2 else None
            else:
                try:
                    if kind == "probe lock":
                        with RunLock(d, "unsup probe"):
                            pass
                    else:
                        api("simclr", data, "64", d, opts, "60s", resume=kind == "api --resume",
                            overwrite=kind == "api --overwrite")
                except UnsupError as e:
                    message = f"unsup: error: {e}"
            refused = message is not None and f"PID {first.pid}" in message
            out["refused"] += refused
            out["one_line"] += refused and "\n" not in message
            out["unchanged"] += digest(d) == before
            if not refused and len(out["failures"]) < 5:
                out["failures"].append(f"trial {t} ({kind}): {message!r}")
            if t == 0:
                out["example"] = message
            print(f"  two writers trial {t + 1}/{trials} ({kind}): {'refused' if refused else 'NOT REFUSED'}", flush=True)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    return out


def markdown(result: dict) -> str:
    lines = ["# Reliability: kill -9 and resume, divergence, two writers", "",
             f"Command: `{result['command']}`  ", f"Machine: {result['machine']}; {result['date']}; "
             f"{result['wall_minutes']} min in all. Data: 600 Fashion-MNIST training images (tiny budgets).", "",
             "## kill -9 at a random moment, then --resume (bit-identical to one uninterrupted run)", "",
             "| loop | budget | --checkpoint-every | trials | bit-identical | killed during a checkpoint write "
             "| before the first checkpoint | after training (during the end stages) | corrupt checkpoints "
             "| work lost per kill: median / max (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["kill"]:
        lines.append(f"| {r['loop']} | {r['budget']} img | {r['every']} | {r['trials']} | {r['identical']}/{r['trials']} | "
                     f"{r['killed_during_write']} | {r['killed_before_first_checkpoint']} | {r['after_training']} | "
                     f"{r['corrupt_checkpoints']} | {r['lost_seconds_median']} / {r['lost_seconds_max']} |")
    total = sum(r["identical"] for r in result["kill"])
    lines += ["", f"{total}/{sum(r['trials'] for r in result['kill'])} bit-identical. Kills land at a uniformly random "
              "moment of the training window (from the folder's lock, taken once the data are loaded, to the encoder "
              "written, timed on the uninterrupted run); every fourth one the moment a checkpoint's temporary file "
              "appears. Work lost: seconds from the last checkpoint written to the kill, for kills during training "
              "after a checkpoint (a checkpoint is committed one step after it is due, once that step's losses were "
              "computed with its weights, so work lost can reach the interval plus a step and the write). The CLI's "
              "uninterrupted run equals the API's: "
              + ", ".join(f"{r['method']} {r['cli_equals_api']}" for r in result["kill"]) + ".", ""]
    for r in result["kill"]:
        lines += [f"- {r['loop']}: failure: {f}" for f in r["failures"]]
    lines += ["## Divergence: the kept checkpoint is good and a lower rate finishes", "",
              "| method | options | error (one line) | kept step | finite | parameters within 1e6 | resumed with | finished |",
              "|---|---|---|---|---|---|---|---|"]
    for r in result["divergence"]:
        err = (r["error"] or "no error").replace("|", "\\|")
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        lines.append(f"| {r['method']} | {opts} | {err} | {r['kept_step']} | {r['kept_finite']} | {r['kept_within_limit']} "
                     f"| -o lr={r['resumed_with_lr']:g} | {r['resume_finished']} |")
    w = result["writers"]
    lines += ["", "## Two writers on one folder", "",
              f"{w['refused']}/{w['trials']} second writers refused, {w['one_line']}/{w['trials']} in one line, "
              f"{w['unchanged']}/{w['trials']} with the folder byte-identical (second writers in turn: {', '.join(w['kinds'])}; "
              "the first writer is frozen with SIGSTOP at a random moment of its run so that its own writes do not "
              "change the folder while the second one tries).", "", f"Example: `{w.get('example')}`", ""]
    lines += [f"- failure: {f}" for f in w["failures"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "reliability"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="unsup-reliability-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("UNSUP_CACHE", str(root / "cache"))
        data = tiny_dataset(root / "tiny.npz")
        kill = []
        for name, (method, budget, options, every) in LOOPS.items():
            print(f"kill -9 / resume: {name}", flush=True)
            kill.append(kill_trials(name, method, budget, options, data, root / method, args.trials, every, rng))
        print("divergence", flush=True)
        div = divergence_trials(data, root / "diverge")
        print("two writers", flush=True)
        writers = writer_trials(data, root / "writers", args.trials, rng)
    from unsup.api import machine

    result = {"command": "OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/reliability.py "
                         + " ".join(shlex.quote(a) for a in sys.argv[1:]),
              "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "wall_minutes": round((time.perf_counter() - t0) / 60, 1), "kill": kill, "divergence": div, "writers": writers}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
