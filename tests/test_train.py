"""The shared training loop: budget, schedule, checkpoints, resume, NaN stop,
metrics and the run directory's refusal to clobber another run."""

from __future__ import annotations

import json

import pytest
import torch

import unsup
from unsup.errors import UnsupError
from unsup.methods.base import config_from_dict
from unsup.methods.joint.simclr import SimCLRConfig
from unsup.run import RunDir
from unsup.train.budget import parse_budget
from unsup.train.optim import lr_factor

FAST = {"batch_size": 64}


def test_parse_budget():
    assert parse_budget("100k").kind == "images" and parse_budget("100k").value == 100_000
    assert parse_budget("2m").kind == "seconds" and parse_budget("2m").value == 120
    assert parse_budget("90s").value == 90 and parse_budget(5000).value == 5000
    for bad in ("", "ten", "-5", "0", "5 weeks"):
        with pytest.raises(UnsupError, match="budget"):
            parse_budget(bad)


def test_warmup_then_cosine():
    assert lr_factor(0.0, 0.1) == 0.0
    assert lr_factor(0.05, 0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(0.55, 0.1) == pytest.approx(0.5)
    assert lr_factor(1.0, 0.1) == pytest.approx(0.0, abs=1e-9)


def test_config_refuses_unknown_options():
    with pytest.raises(UnsupError, match="temprature.*valid:.*temperature"):
        config_from_dict(SimCLRConfig, {"temprature": 0.1})
    cfg = config_from_dict(SimCLRConfig, {"temperature": 0.1, "augment": {"flip": 0.0}})
    assert cfg.temperature == 0.1 and cfg.augment.flip == 0.0


def test_number_options_written_as_text_become_numbers():
    from unsup.cli import _options

    # YAML reads 5e-4 (no dot) as text: it used to reach the optimiser as a string
    opts = _options(["weight_decay=5e-4", "lr=1", "batch_size=32"])
    assert opts["weight_decay"] == "5e-4"
    cfg = config_from_dict(SimCLRConfig, opts)
    assert cfg.weight_decay == 5e-4 and isinstance(cfg.lr, float) and cfg.batch_size == 32
    with pytest.raises(UnsupError, match="option lr .*must be a number.*got 'fast'"):
        config_from_dict(SimCLRConfig, {"lr": "fast"})
    with pytest.raises(UnsupError, match="option batch_size .*whole number.*got 'big'"):
        config_from_dict(SimCLRConfig, {"batch_size": "big"})


def test_budget_checkpoint_resume_and_metrics(fm_small, tmp_path):
    out = tmp_path / "run"
    unsup.pretrain("denoising-autoencoder", data=fm_small, budget="640", out=out, quiet=True, options=FAST, figures=False)
    run = RunDir(out)
    first = [m for m in run.metrics() if "loss" in m]
    assert run.file("checkpoint.pt").is_file() and run.file("encoder.safetensors").is_file()
    state = run.load_checkpoint()
    assert state["images_seen"] == 640 and state["step"] == 10
    # the same directory is refused unless --resume or --overwrite
    with pytest.raises(UnsupError, match="already holds a run"):
        unsup.pretrain("denoising-autoencoder", data=fm_small, budget="1280", out=out, quiet=True, options=FAST)
    with pytest.raises(UnsupError, match="different run"):
        unsup.pretrain("simclr", data=fm_small, budget="1280", out=out, quiet=True, options=FAST, resume=True)
    unsup.pretrain("denoising-autoencoder", data=fm_small, budget="1280", out=out, quiet=True, options=FAST, resume=True,
                   figures=False)
    state = run.load_checkpoint()
    assert state["images_seen"] == 1280 and state["step"] == 20  # continued, not restarted
    steps = [m["step"] for m in run.metrics() if "loss" in m]
    assert steps == sorted(steps) and steps[-1] == 20 and len(steps) > len(first)
    monitor = [m for m in run.metrics() if "knn_monitor" in m]
    assert monitor and 0.1 < monitor[-1]["knn_monitor"] <= 1.0


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(fm_small, tmp_path, monkeypatch):
    out = tmp_path / "run"
    unsup.pretrain("simclr", data=fm_small, budget="128", out=out, quiet=True, options=FAST, figures=False)
    good = RunDir(out).load_checkpoint()
    from unsup.methods.joint.simclr import SimCLR

    def nan_loss(self, images):
        return self.encoder(images.float()).sum() * float("nan"), {}

    monkeypatch.setattr(SimCLR, "training_loss", nan_loss)
    with pytest.raises(UnsupError, match=r"diverged.*loss=nan.*last good checkpoint"):
        unsup.pretrain("simclr", data=fm_small, budget="256", out=out, quiet=True, options=FAST, resume=True)
    kept = RunDir(out).load_checkpoint()
    assert kept["step"] == good["step"]
    assert all(torch.equal(kept["method"][k], good["method"][k]) for k in good["method"])


def test_corrupt_checkpoint_is_refused(fm_small, tmp_path):
    out = tmp_path / "run"
    unsup.pretrain("simclr", data=fm_small, budget="64", out=out, quiet=True, options=FAST, figures=False)
    (out / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(UnsupError, match=r"checkpoint.pt.*cannot read"):
        unsup.pretrain("simclr", data=fm_small, budget="128", out=out, quiet=True, options=FAST, resume=True)


def test_encoder_round_trip_and_bad_weights(fm_small, tmp_path):
    out = tmp_path / "run"
    unsup.pretrain("simclr", data=fm_small, budget="128", out=out, quiet=True, options=FAST, figures=False)
    method = unsup.load_method(out)
    enc = unsup.load_encoder(out)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(enc(x), method.encoder.eval()(x))
    desc = json.loads((out / "encoder.json").read_text())
    assert desc["input"]["channels"] == 1 and desc["out_dim"] == enc(x).shape[1]
    with pytest.raises(UnsupError, match="expects images"):
        enc(torch.rand(2, 3, 28, 28))
    (out / "encoder.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(UnsupError, match="safetensors"):
        unsup.load_encoder(out)


def test_monitor_interval_follows_a_short_time_budget():
    from unsup.api import monitor_interval

    assert monitor_interval(parse_budget("60s")) == 15.0 and monitor_interval(parse_budget("10m")) == 60.0
    assert monitor_interval(parse_budget("20s")) == 10.0 and monitor_interval(parse_budget("100k")) == 60.0
