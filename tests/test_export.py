"""`unsup export`: the exported files load in torch.jit, onnxruntime, torchvision
(and timm when installed) and give the run's encoder features; bad requests are
refused in one line without touching existing files."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys

import numpy as np
import pytest
import torch

import unsup
from unsup.cli import main
from unsup.errors import UnsupError
from unsup.export import export_encoder, sidecar

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # loading is what users will do

RUNS = {  # tiny runs: the export does not care how well they trained
    "small-convnet": ("simclr", "16", {"batch_size": 8}),
    # a 3x3 grid over 7x7 (and 28x28) maps: regions that the grid does not divide evenly
    "small-convnet-grid": ("moco", "16", {"version": 3, "batch_size": 8,
                                          "backbone_options": {"pool_grid": 3, "read_out": "every-conv",
                                                               "grid_statistics": "mean-max"}}),
    "resnet18": ("simclr", "4", {"batch_size": 4, "backbone": "resnet18"}),
    "kmeans": ("kmeans", "64", {"num_centroids": 16, "num_patches": 2000}),
    "dcgan": ("dcgan", "32", {"batch_size": 16}),  # a discriminator encoder: 4x4 max pooling over 7x7 maps
}


@pytest.fixture(scope="module")
def runs(fm_small, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("runs")
    return {name: unsup.pretrain(method, data=fm_small, budget=budget, out=root / name, options=opts, monitor=False,
                                 figures=False, quiet=True, device="cpu")
            for name, (method, budget, opts) in RUNS.items()}


def images(fm_small, n: int = 8, offset: int = 0) -> torch.Tensor:
    """Real test images as the encoder takes them: float (n, 1, 28, 28) in [0, 1]."""
    return torch.from_numpy(np.load(fm_small)["test_images"][offset : offset + n, None]).float() / 255


def features(run, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return unsup.load_encoder(run)(x)


def max_diff(a, b) -> float:
    return float((torch.as_tensor(a) - b).abs().max())


@pytest.mark.parametrize("name", list(RUNS))
def test_torchscript_and_onnx_give_the_encoder_features(runs, fm_small, tmp_path, name):
    import onnxruntime as ort

    run = runs[name]
    x, x_odd = images(fm_small, 8), images(fm_small, 3, offset=8)  # two batch sizes: the batch axis is free
    want, want_odd = features(run, x), features(run, x_odd)

    ts = export_encoder(run, "torchscript", tmp_path / "enc.pt")
    model = torch.jit.load(str(ts))
    with torch.no_grad():
        assert model(x).shape == want.shape
        assert max_diff(model(x), want) <= 1e-4 and max_diff(model(x_odd), want_odd) <= 1e-4

    onnx_path = export_encoder(run, "onnx", tmp_path / "enc.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    for xb, wb in ((x, want), (x_odd, want_odd)):
        assert max_diff(session.run(None, {"images": xb.numpy()})[0], wb) <= 1e-4

    meta = json.loads(sidecar(onnx_path).read_text())
    assert meta["format"] == "onnx" and meta["out_dim"] == want.shape[1]
    assert meta["input"] == {"layout": "NCHW", "channels": 1, "height": 28, "width": 28, "dtype": "float32", "range": [0.0, 1.0]}
    assert "inside the model" in meta["normalisation"]


def test_resnet18_torchvision_export_loads_strictly_into_torchvision(runs, fm_small, tmp_path):
    import torchvision
    from safetensors.torch import load_file

    run = runs["resnet18"]
    out = export_encoder(run, "torchvision", tmp_path / "resnet18.safetensors")
    meta = json.loads(sidecar(out).read_text())
    assert meta["out_dim"] == 512 and meta["input"]["channels"] == 1
    mean, std = (torch.tensor(meta["normalisation"][k]).view(1, -1, 1, 1) for k in ("mean", "std"))

    # the documented model, written out here rather than taken from the export
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    model.fc = torch.nn.Identity()
    model.load_state_dict(load_file(str(out)), strict=True)
    model.eval()
    x = images(fm_small)
    with torch.no_grad():
        assert max_diff(model((x - mean) / std), features(run, x)) <= 1e-4

    # the lines the JSON gives, run as written (beside the file, as its load line expects)
    scope: dict = {}
    code = "\n".join(meta["build"] + meta["load"]).replace(f'"{out.name}"', repr(str(out)))
    exec(code, scope)
    with torch.no_grad():
        assert max_diff(scope["model"]((x - mean) / std), features(run, x)) <= 1e-4


def test_resnet18_timm_export(runs, fm_small, tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import load_file

    run = runs["resnet18"]
    out = export_encoder(run, "timm", tmp_path / "resnet18-timm.safetensors")
    meta = json.loads(sidecar(out).read_text())
    model = timm.create_model("resnet18", num_classes=0)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    model.load_state_dict(load_file(str(out)), strict=True)
    model.eval()
    mean, std = (torch.tensor(meta["normalisation"][k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    x = images(fm_small)
    with torch.no_grad():
        assert max_diff(model((x - mean) / std), features(run, x)) <= 1e-4


@pytest.mark.parametrize("name, fmt", [("small-convnet", "torchvision"), ("kmeans", "torchvision"), ("kmeans", "timm")])
def test_weight_formats_refuse_other_encoders(runs, tmp_path, name, fmt):
    out = tmp_path / "enc.safetensors"
    with pytest.raises(UnsupError, match="is not a torchvision/timm model.*--format torchscript or --format onnx"):
        export_encoder(runs[name], fmt, out)
    assert not out.exists() and not sidecar(out).exists()


def test_bad_requests_are_refused(runs, tmp_path):
    run = runs["small-convnet"]
    with pytest.raises(UnsupError, match="unknown export format 'keras'; choose one of torchvision, timm, torchscript, onnx"):
        export_encoder(run, "keras", tmp_path / "a")
    with pytest.raises(UnsupError, match="no such run directory"):
        export_encoder(tmp_path / "missing", "torchscript", tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnsupError, match="not a run directory.*unsup pretrain"):
        export_encoder(tmp_path / "empty", "torchscript", tmp_path / "c")

    broken = shutil.copytree(run, tmp_path / "broken")
    (broken / "encoder.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UnsupError, match="not a valid safetensors file"):
        export_encoder(broken, "torchscript", tmp_path / "d")
    (broken / "config.yaml").write_text("just: text\n")
    with pytest.raises(UnsupError, match="config.yaml: 'method' must name a method"):
        export_encoder(broken, "torchscript", tmp_path / "e")
    assert not [n for n in "abcde" if (tmp_path / n).exists() or sidecar(tmp_path / n).exists()]


def test_existing_files_are_kept_unless_overwrite(runs, tmp_path):
    run = runs["small-convnet"]
    out = tmp_path / "enc.pt"
    out.write_bytes(b"precious")
    with pytest.raises(UnsupError, match="already exists; pass --overwrite"):
        export_encoder(run, "torchscript", out)
    assert out.read_bytes() == b"precious" and not sidecar(out).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["enc.pt"]  # no temporary file left behind

    umask = os.umask(0o022)
    try:
        export_encoder(run, "torchscript", out, overwrite=True)
    finally:
        os.umask(umask)
    assert torch.jit.load(str(out))(torch.rand(2, 1, 28, 28)).shape[1] == unsup.load_encoder(run).out_dim
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(sidecar(out).stat().st_mode) == 0o644  # readable by others, as a file
    sidecar_bytes = sidecar(out).read_bytes()
    out2 = tmp_path / "other.pt"
    sidecar(out2).write_bytes(b"precious json")  # the description file is guarded too
    with pytest.raises(UnsupError, match="other.pt.json already exists"):
        export_encoder(run, "torchscript", out2)
    assert not out2.exists() and sidecar(out2).read_bytes() == b"precious json" and sidecar(out).read_bytes() == sidecar_bytes


def test_onnx_without_its_packages_says_how_to_install(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    out = tmp_path / "enc.onnx"
    with pytest.raises(UnsupError, match=r"pip install 'unsup\[onnx\]'"):
        export_encoder(runs["kmeans"], "onnx", out)
    assert not out.exists()


def test_cli_export(runs, fm_small, tmp_path, capsys):
    assert unsup.export_encoder is export_encoder
    run, out = runs["kmeans"], tmp_path / "km.pt"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    x = images(fm_small)
    assert max_diff(torch.jit.load(str(out))(x), features(run, x)) <= 1e-4

    before = out.read_bytes()
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists; pass --overwrite" in err
    assert out.read_bytes() == before
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out), "--overwrite"]) == 0

    assert main(["export", str(run), "--format", "torchvision", "--out", str(tmp_path / "km.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--format torchscript or --format onnx" in err


def test_adaptive_max_pool_as_slices_matches_pytorch():
    """The ONNX trace's stand-in for adaptive max pooling to sizes that do not divide the input."""
    import torch.nn.functional as F

    from unsup.export import _SlicedAdaptiveMaxPool

    for hw, size in (((7, 7), 4), ((14, 14), 4), ((5, 9), (3, 4)), ((13, 6), (None, 4))):
        x = torch.randn(2, 3, *hw)
        with _SlicedAdaptiveMaxPool():
            sliced = F.adaptive_max_pool2d(x, size)
        assert torch.equal(sliced, F.adaptive_max_pool2d(x, size))
