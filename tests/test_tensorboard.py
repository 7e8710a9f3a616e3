"""Training curves: TensorBoard event files that mirror metrics.jsonl, and
``unsup show`` drawing the curves and a summary from metrics.jsonl."""

from __future__ import annotations

import pytest

import unsup
import unsup.api
from unsup.cli import main
from unsup.run import RunDir
from unsup.train import tensorboard as tb

FAST = {"batch_size": 64}
# 20 steps: two loss records (one every 10 steps) and the k-NN monitor at the end
BUDGET = "1280"


def _pretrain(data, out, **kw):
    unsup.pretrain("denoising-autoencoder", data=data, budget=BUDGET, out=out, quiet=True, options=FAST, figures=False,
                   device="cpu", **kw)
    return RunDir(out)


def _events(run: RunDir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run.file(tb.DIRNAME)))
    acc.Reload()
    return acc


def test_event_files_mirror_metrics(fm_small, tmp_path):
    pytest.importorskip("tensorboard")
    run = _pretrain(fm_small, tmp_path / "run")
    metrics = run.metrics()
    loss_rows = [m for m in metrics if "loss" in m]
    acc = _events(run)
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_s", "monitor/knn_accuracy"} <= tags
    losses = acc.Scalars("train/loss")
    assert len(losses) == len(loss_rows) == 2
    assert [e.step for e in losses] == [m["step"] for m in loss_rows]
    assert [e.value for e in losses] == pytest.approx([m["loss"] for m in loss_rows], rel=1e-6)
    assert all(e.value > 0 for e in acc.Scalars("train/images_per_s"))
    monitor = [m["knn_monitor"] for m in metrics if "knn_monitor" in m]
    assert [e.value for e in acc.Scalars("monitor/knn_accuracy")] == pytest.approx(monitor, rel=1e-6)


def test_without_the_package_no_error(fm_small, tmp_path, monkeypatch):
    monkeypatch.setattr(tb, "available", lambda: False)
    run = _pretrain(fm_small, tmp_path / "nopkg", monitor=False)
    assert [m for m in run.metrics() if "loss" in m] and not run.file(tb.DIRNAME).exists()


def test_pretrain_keyword_off(fm_small, tmp_path):
    run = _pretrain(fm_small, tmp_path / "kw", monitor=False, tensorboard=False)
    assert not run.file(tb.DIRNAME).exists()


def test_scalars_of_a_record():
    assert tb.scalars({"step": 10, "images_seen": 640, "seconds": 1.5, "lr": 0.1, "loss": 2.0, "recon": 1.0, "images_per_s": 400.0}) == {
        "train/lr": 0.1, "train/loss": 2.0, "train/recon": 1.0, "train/images_per_s": 400.0}
    assert tb.scalars({"step": 20, "knn_monitor": 0.5}) == {"monitor/knn_accuracy": 0.5}
    assert tb.scalars({"event": "done", "flag": True, "name": "x"}) == {}


def test_show_draws_curves_and_skips_a_garbage_line(fm_small, tmp_path, capsys):
    run = _pretrain(fm_small, tmp_path / "show")
    assert main(["show", str(run.path)]) == 0
    out = capsys.readouterr().out
    png = run.figures_dir / "curves.png"
    assert f"curves: {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    summary = next(line for line in out.splitlines() if line.startswith("training:"))
    assert "20 steps" in summary and "1280 images seen" in summary and "final loss" in summary and "best k-NN monitor" in summary
    lines = run.file("metrics.jsonl").read_text().splitlines()
    with open(run.file("metrics.jsonl"), "a") as f:
        f.write("{not json\n")
    png.unlink()
    assert main(["show", str(run.path)]) == 0
    err = capsys.readouterr().err
    assert f"metrics.jsonl: 1 line(s) not a JSON object (line {len(lines) + 1}), skipped" in err and "Traceback" not in err
    assert png.is_file()
