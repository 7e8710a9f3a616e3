"""The command line: listings, one-line errors with exit status 2, and the
probe's JSON schema."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from unsup.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unsup.cli", *args], capture_output=True, text=True, timeout=600)


def test_methods_lists_the_catalogue(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("kmeans", "denoising-autoencoder", "simclr"):
        assert name in out
    assert "Coates" in out and "Chen et al. 2020" in out


@pytest.mark.parametrize(("args", "message"), [
    (["pretrain", "no-such-method"], "unknown method 'no-such-method'; choose one of:"),
    (["pretrain", "simclr", "--data", "no-such-data"], "unknown dataset 'no-such-data'"),
    (["pretrain", "simclr", "--budget", "lots"], "bad budget 'lots'"),
    (["pretrain", "simclr", "-o", "temprature=0.1"], "unknown option(s) temprature"),
    (["probe", "/nonexistent/run"], "not a run directory"),
    (["probe", "/nonexistent/run", "--labels", "1,ten"], "bad label budget 'ten'"),
])
def test_bad_input_gets_one_line_and_exit_2(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_corrupt_dataset_file_is_named(tmp_path, capsys):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["pretrain", "simclr", "--data", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "broken.npz" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing written for a run that could not start


def test_pretrain_then_probe_json_schema(fm_tiny, tmp_path):
    out = tmp_path / "run"
    done = run_cli("pretrain", "denoising-autoencoder", "--data", fm_tiny, "--budget", "512", "--out", str(out),
                   "-o", "batch_size=64", "--quiet")
    assert done.returncode == 0, done.stderr
    assert (out / "figures" / "reconstructions.png").is_file() and (out / "config.yaml").is_file()
    done = run_cli("probe", str(out), "--labels", "1,10", "--seeds", "2", "--json", "--no-supervised")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["method"] == "denoising-autoencoder" and result["dataset"] == "fm-tiny.npz"
    for rows in [result["results"], result["references"]["raw_pixels"], result["references"]["random_encoder"]]:
        assert {(r["labels_per_class"], r["classifier"]) for r in rows} == {(1, "linear"), (1, "knn"), (10, "linear"), (10, "knn")}
        assert all(0 <= r["accuracy_mean"] <= 1 and r["seeds"] == [0, 1] for r in rows)
    assert json.loads((out / "probe.json").read_text()) == result
    # the existing run is not clobbered
    done = run_cli("pretrain", "denoising-autoencoder", "--data", fm_tiny, "--out", str(out))
    assert done.returncode == 2 and "already holds a run" in done.stderr
    assert (out / "encoder.safetensors").is_file()


def test_bench_flags_a_plan_sets_itself_are_refused(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("entries: [kmeans]\n")
    for flag in ("--no-supervised", "--family-metrics"):
        assert main(["bench", "--plan", str(plan), flag]) == 2
        assert "go with --methods" in capsys.readouterr().err
    assert main(["bench", "--plan", str(plan), "--fresh", "--report-only"]) == 2
    assert "not both" in capsys.readouterr().err
