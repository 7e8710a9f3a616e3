"""Nothing lost, nothing corrupted: exact resume after a real ``kill -9`` (one
method of each loop type), one story in metrics.jsonl, a checkpoint that is
good after divergence, SIGTERM, and one writer per run directory."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import unsup
from unsup.errors import UnsupError
from unsup.lock import RunLock
from unsup.run import RunDir, build_method
from unsup.train.loop import LOSS_LIMIT, WEIGHT_LIMIT, ZERO_LOSS_STEPS, TrainContext, _Divergence
from unsup.train.loop import _lr_advice as lr_advice

# one method per loop type: budget, options, checkpoint interval
LOOPS = {
    "simclr": ("480", {"batch_size": 16}, "64img"),
    "dcgan": ("640", {"batch_size": 16, "g_width": 8, "d_width": 8}, "64img"),
    "kmeans": ("600", {"num_patches": 20000, "num_centroids": 64, "iterations": 30, "kmeans_batch": 500}, "1img"),
}


def cli(method, data, budget, out, options, *extra) -> list[str]:
    opts = [a for k, v in options.items() for a in ("-o", f"{k}={v}")]
    return [sys.executable, "-m", "unsup.cli", "pretrain", method, "--data", data, "--budget", budget, "--out", str(out),
            "--device", "cpu", "-q", "--no-tensorboard", *opts, *extra]


def api(method, data, budget, out, options, every, **kw):
    return unsup.pretrain(method, data=data, budget=budget, out=out, device="cpu", quiet=True, options=options,
                          figures=False, tensorboard=False, checkpoint_every=every, **kw)


def wait_for(path: Path, proc: subprocess.Popen | None = None, timeout: float = 240) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc is None or proc.poll() is None, f"the run ended before {path.name} appeared: {proc.stderr.read()}"
        assert time.time() < end, f"no {path} after {timeout}s"
        time.sleep(0.005)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def losses(run: Path) -> list[dict]:
    """The training records without their timings (which differ between attempts)."""
    drop = ("seconds", "images_per_s")
    return [{k: v for k, v in r.items() if k not in drop} for r in RunDir(run).metrics() if "loss" in r or "event" not in r]


@pytest.mark.parametrize("method", list(LOOPS))
def test_kill9_then_resume_is_bit_identical(method, fm_small, tmp_path, capsys):
    budget, options, every = LOOPS[method]
    full, part = tmp_path / "full", tmp_path / "part"
    api(method, fm_small, budget, full, options, every)
    proc = subprocess.Popen(cli(method, fm_small, budget, part, options, "--checkpoint-every", every),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(part / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = RunDir(part).load_checkpoint()["step"]
    capsys.readouterr()
    api(method, fm_small, budget, part, options, every, resume=True)
    err = capsys.readouterr().err
    assert f"took over a stale lock (PID {proc.pid}" in err  # the killed run's lock
    a, b = RunDir(full).load_checkpoint(), RunDir(part).load_checkpoint()
    assert a["step"] == b["step"] > killed_at
    assert a["method"].keys() == b["method"].keys()
    assert all(torch.equal(a["method"][k], b["method"][k]) for k in a["method"]), method
    assert all(torch.equal(x, y) for x, y in zip(unsup.load_encoder(full).state_dict().values(),
                                                 unsup.load_encoder(part).state_dict().values()))
    # metrics.jsonl tells one story: the same records (final loss included, bit for bit), one "done" event
    assert losses(part) == losses(full)
    records = RunDir(part).metrics()
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == sorted(set(steps))
    assert [r.get("event") for r in records].count("done") == 1
    assert not (part / ".lock").exists() and not list(part.glob(".checkpoint.pt.*"))


def test_sigterm_writes_a_checkpoint_and_stops_in_one_line(fm_small, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(cli("simclr", fm_small, "100k", out, {"batch_size": 16}, "--checkpoint-every", "10m"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(out / ".lock", proc)
    end = time.time() + 120
    while not any("loss" in r for r in RunDir(out).metrics()) and time.time() < end:  # training has begun: its first loss is out
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stopped by SIGTERM at step" in lines[0] and "--resume" in lines[0], err
    step = int(lines[0].split("at step ")[1].split()[0])
    assert RunDir(out).load_checkpoint()["step"] == step >= 10
    assert not (out / ".lock").exists()


def test_resume_without_a_checkpoint_says_so_and_drops_stale_records(fm_small, tmp_path, capsys):
    out = tmp_path / "run"
    opts = {"batch_size": 16}
    out.mkdir()  # a run killed before its first checkpoint: a record and a torn temp file, no checkpoint
    (out / "metrics.jsonl").write_text('{"step": 10, "loss": 1.0}\n{"step": 2')
    (out / ".checkpoint.pt.tmp123").write_bytes(b"half a checkpoint")
    api("simclr", fm_small, "64", out, opts, "60s", resume=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"unsup: --resume: no checkpoint in {out} yet; starting from the beginning"]
    assert not list(out.glob(".checkpoint.pt.*"))
    records = RunDir(out).metrics()
    assert [r["step"] for r in records if "loss" in r] == [] and records[-1]["event"] == "done"
    assert RunDir(out).load_checkpoint()["step"] == 4


def test_resume_may_lower_the_rate_but_not_change_the_run(fm_small, tmp_path):
    out = tmp_path / "run"
    api("denoising-autoencoder", fm_small, "64", out, {"batch_size": 32}, "60s")
    with pytest.raises(UnsupError, match=r"option batch_size: 32 -> 16.*all but lr, g_lr"):
        api("denoising-autoencoder", fm_small, "128", out, {"batch_size": 16}, "60s", resume=True)
    api("denoising-autoencoder", fm_small, "128", out, {"batch_size": 32, "lr": 1e-4}, "60s", resume=True)
    state = RunDir(out).load_checkpoint()
    assert state["step"] == 4 and state["optimizers"][0]["param_groups"][0]["base_lr"] == 1e-4


# --- a checkpoint that is good -------------------------------------------------

DIVERGE = {  # a rate (and for SimCLR a weight decay) that blows the weights up within a few steps
    "simclr": {"batch_size": 16, "optimizer": "sgd", "lr": 10, "warmup": 0.0, "weight_decay": 1.0},
    "denoising-autoencoder": {"batch_size": 16, "optimizer": "sgd", "lr": 10, "warmup": 0.9},
    "dcgan": {"batch_size": 16, "g_width": 8, "d_width": 8, "optimizer": "sgd", "lr": 10, "warmup": 0.9},
}


@pytest.mark.parametrize("method", list(DIVERGE))
def test_divergence_keeps_a_good_checkpoint_and_a_lower_rate_finishes(method, fm_small, tmp_path):
    out, options = tmp_path / "run", DIVERGE[method]
    with pytest.raises(UnsupError, match=r"training diverged: .* at step \d+\b.*the last good checkpoint \(step \d+\) is kept"
                                         r".*--resume -o lr=1$") as e:
        api(method, fm_small, "320", out, options, "16img")
    assert "\n" not in str(e.value)
    kept = RunDir(out).load_checkpoint()
    assert f"(step {kept['step']})" in str(e.value)
    assert all(torch.isfinite(v).all() for v in kept["method"].values() if v.is_floating_point())
    params = dict(build_method(RunDir(out).read_config()).named_parameters())
    assert all(kept["method"][k].abs().max() <= WEIGHT_LIMIT for k in params)
    lower = 2e-4 if method == "dcgan" else 1e-3
    api(method, fm_small, "320", out, {**options, "lr": lower}, "16img", resume=True)
    assert RunDir(out).load_checkpoint()["step"] == 20
    assert [r.get("event") for r in RunDir(out).metrics()].count("done") == 1


def test_divergence_check_covers_every_loss_of_every_optimiser():
    from unsup.methods.generative.gan_nets import GanConfig

    ctx, cfg = TrainContext(quiet=True), GanConfig()
    gan = _Divergence(zero_check=True)
    gan.check({"loss": 1.0, "d_loss": 0.5, "g_loss": 0.5}, 0, 0, ctx, cfg)
    with pytest.raises(UnsupError, match=r"g_loss=1.5e\+15 \(past 1e\+06\) at step 3 .*--resume -o lr=2e-05"):
        gan.check({"loss": 2.0, "d_loss": 1.0, "g_loss": 1.5e15}, 3, 96, ctx, cfg)
    with pytest.raises(UnsupError, match="d_real=nan"):
        gan.check({"loss": 2.0, "d_loss": 1.0, "g_loss": 1.0, "d_real": float("nan")}, 3, 96, ctx, cfg)
    gan = _Divergence(zero_check=True)
    for step in range(ZERO_LOSS_STEPS - 1):  # exactly 0, step after step: D wins, G gets no gradient
        gan.check({"loss": 3.0, "d_loss": 0.0, "g_loss": 3.0}, step, 0, ctx, cfg)
    with pytest.raises(UnsupError, match=f"d_loss=0 for {ZERO_LOSS_STEPS} steps in a row"):
        gan.check({"loss": 3.0, "d_loss": 0.0, "g_loss": 3.0}, ZERO_LOSS_STEPS, 0, ctx, cfg)
    one = _Divergence(zero_check=False)  # one optimiser: a loss of 0 may be a solved task, not a divergence
    for step in range(ZERO_LOSS_STEPS + 1):
        one.check({"loss": 0.0}, step, 0, ctx, cfg)
    assert LOSS_LIMIT == 1e6 and "-o lr=2e-05 -o g_lr=0.0001" in lr_advice(GanConfig(g_lr=1e-3))


# --- one writer per run directory ---------------------------------------------

def test_second_writer_is_refused_and_the_folder_is_unchanged(fm_small, tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen(cli("simclr", fm_small, "100k", out, {"batch_size": 16}, "--checkpoint-every", "10m"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(out / ".lock", first)
        wait_for(out / "config.yaml", first)
        first.send_signal(signal.SIGSTOP)  # a writer caught mid-run: nothing in the folder moves while it waits
        before = digest(out)
        second = subprocess.run(cli("simclr", fm_small, "64", out, {"batch_size": 16}, "--overwrite"),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"is in use by unsup pretrain simclr (PID {first.pid} on " in lines[0], second.stderr
        for kw in ({"resume": True}, {"overwrite": True}, {}):
            with pytest.raises(UnsupError, match=f"PID {first.pid}"):
                api("simclr", fm_small, "64", out, {"batch_size": 16}, "60s", **kw)
        with pytest.raises(UnsupError, match="in use"), RunLock(out, "unsup probe"):
            pass
        assert digest(out) == before
        first.send_signal(signal.SIGKILL)  # its lock is left behind, stale
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    capsys.readouterr()
    api("simclr", fm_small, "64", out, {"batch_size": 16}, "60s", resume=True)
    err = capsys.readouterr().err
    assert f"took over a stale lock (PID {first.pid} on" in err
    assert not (out / ".lock").exists() and (out / "encoder.safetensors").is_file()


def test_lock_files_stale_foreign_and_unreadable(tmp_path, capsys):
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    with RunLock(out):
        assert json.loads((out / ".lock").read_text())["pid"] == os.getpid()
    assert "took over a stale lock" in capsys.readouterr().err and not (out / ".lock").exists()
    (out / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "then", "what": "a run"}))
    with pytest.raises(UnsupError, match=r"in use by a run \(PID 1 on elsewhere, since then\).*delete .*\.lock"):
        RunLock(out).acquire()
    assert (out / ".lock").exists()
    (out / ".lock").write_text("")  # its writer died between creating and filling it
    with RunLock(out):
        pass
    fresh = tmp_path / "new"
    with RunLock(fresh):
        assert fresh.is_dir()
    assert not fresh.exists()  # made for the run, left empty: removed again
