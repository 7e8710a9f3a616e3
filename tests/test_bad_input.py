"""Bad input, table-driven: every reader, every option kind and every run-directory
file. Each malformed input is refused with exit status 2 and exactly one line on
stderr (no traceback) naming the file or option, and leaves what is already on
disk unchanged; each documented conversion happens with at most one warning line.

Everything runs in-process through ``unsup.cli.main`` (a subprocess would pay the
torch import per case); ``benchmarks/bad_inputs.py`` runs a larger set as real
subprocesses with a timeout.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unsup.cli import main
from unsup.data import load, readers
from unsup.errors import UnsupError

RNG = np.random.default_rng(0)
OK = RNG.integers(0, 256, (40, 16, 16), dtype=np.uint8)
OK_Y = np.arange(40) % 4


def cli(args: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of ``unsup ARGS`` run in this process."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's refusals
        code = e.code
    return code, capsys.readouterr().err


def assert_one_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "weights_only=False" not in err, err
    for f in fragments:
        assert f in err, (f, err)


def tree_hash(root: Path, skip: tuple[str, ...] = ()) -> str:
    """One digest of every file's path and bytes under ``root`` (but ``skip``)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and str(p.relative_to(root)) not in skip:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------- options: refused before any data is loaded

MISSING = "/nonexistent/never-read.npz"  # an option refusal must come first: this path is never opened

OPTION_CASES = [
    (["-o", "batch_size=-4"], "batch_size"),
    (["-o", "batch_size=0"], "batch_size"),
    (["-o", "batch_size=2.5"], "batch_size"),
    (["-o", "batch_size=abc"], "batch_size"),
    (["-o", "batch_size=true"], "batch_size"),
    (["-o", "batch_size=10000000"], "batch_size"),
    (["-o", "lr=-1"], "lr"),
    (["-o", "lr=0"], "lr"),
    (["-o", "lr=.nan"], "lr"),
    (["-o", "lr=.inf"], "lr"),
    (["-o", "lr=[1, 2]"], "lr"),
    (["-o", "weight_decay=-0.1"], "weight_decay"),
    (["-o", "warmup=1"], "warmup"),
    (["-o", "warmup=-0.5"], "warmup"),
    (["-o", "momentum=1.5"], "momentum"),
    (["-o", "optimizer=adagrad"], "optimizer"),
    (["-o", "optimizer=5"], "optimizer"),
    (["-o", "schedule=linear"], "schedule"),
    (["-o", "augment=5"], "augment"),
    (["-o", "augment=[1, 2]"], "augment"),
    (["-o", "augment={flip: 2}"], "augment.flip"),
    (["-o", "augment={bogus: 1}"], "augment.bogus"),
    (["-o", "augment={crop_scale: [0.9, 0.1]}"], "crop_scale"),
    (["-o", "augment={crop_scale: [0, 1]}"], "crop_scale"),
    (["-o", "augment={crop_scale: [0.5]}"], "crop_scale"),
    (["-o", "augment={blur_sigma: abc}"], "blur_sigma"),
    (["-o", "temperature=0"], "temperature"),
    (["-o", "temperature=-1"], "temperature"),
    (["-o", "proj_dim=0"], "proj_dim"),
    (["-o", "proj_hidden=-3"], "proj_hidden"),
    (["-o", "no_such_option=1"], "no_such_option"),
    (["-o", "lr"], "--option 'lr'"),
    (["-o", "=3"], "--option '=3'"),
    (["-o", "lr=[1,"], "--option 'lr=[1,'"),
    (["-o", "lr=!!python/object/apply:os.system [touch pwned]"], "--option"),
    (["--budget", "0"], "budget"),
    (["--budget", "-5"], "budget"),
    (["--budget", "lots"], "budget"),
    (["--budget", "1e9"], "budget"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "abc"], "--seed"),
    (["--seed", str(2**64)], "--seed"),
    (["--device", "tpu"], "device"),
    (["--max-memory", "lots"], "--max-memory"),
    (["--max-memory", "0"], "--max-memory"),
]


@pytest.mark.parametrize(("extra", "names"), OPTION_CASES, ids=[" ".join(c[0]) for c in OPTION_CASES])
def test_option_refused_before_data(extra, names, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = cli(["pretrain", "simclr", "--data", MISSING, "--budget", "64", "--out", out, "-q", *extra], capsys)
    assert code == 2
    assert_one_line(err, names)
    assert "never-read" not in err  # refused before the data was looked at
    assert not out.exists() and not Path("pwned").exists()


METHOD_OPTION_CASES = [
    ("dcgan", "g_lr=-1"), ("dcgan", "beta1=1"), ("dcgan", "z_dim=0"), ("infogan", "z_prior=cauchy"),
    ("infogan", "q_bn=maybe"), ("improved-gan", "dropout=1"), ("denoising-autoencoder", "corruption=salt"),
    ("denoising-autoencoder", "noise_level=-0.1"), ("kmeans", "num_centroids=0"), ("kmeans", "patch_size=-6"),
    ("jigsaw", "tile_frac=1.5"), ("context", "crop_frac=0"), ("exemplar", "scale=[1.4, 0.7]"),
    ("stacked-autoencoder", "hidden=[1000, -1]"), ("stacked-autoencoder", "hidden=abc"), ("rotation", "flip=-1"),
    ("deepcluster", "num_clusters=0"), ("sparse-coding", "stat_decay=2"), ("prednet", "loss=L2"),
]


@pytest.mark.parametrize(("method", "option"), METHOD_OPTION_CASES, ids=[f"{m} {o}" for m, o in METHOD_OPTION_CASES])
def test_method_option_refused_before_data(method, option, tmp_path, capsys):
    code, err = cli(["pretrain", method, "--data", MISSING, "--budget", "64", "--out", tmp_path / "run", "-q", "-o", option], capsys)
    assert code == 2
    assert_one_line(err, option.split("=")[0])
    assert not (tmp_path / "run").exists()


PROBE_BENCH_CASES = [
    (["probe", "RUN", "--seeds", "0"], "--seeds"),
    (["probe", "RUN", "--seeds", "-2"], "--seeds"),
    (["probe", "RUN", "--seeds", "x"], "--seeds"),
    (["probe", "RUN", "--labels", "0"], "label budget"),
    (["probe", "RUN", "--labels", "-5,all"], "--labels"),
    (["probe", "RUN", "--labels", ""], "label budget"),
    (["probe", "RUN", "--labels", "1.5"], "label budget"),
    (["probe"], "run"),
    (["bench", "--seeds", "0"], "--seeds"),
    (["bench", "--methods", ","], "--methods"),
    (["bench", "--methods", "nosuch"], "nosuch"),
    (["bench", "--labels", "ten"], "label budget"),
    (["bench", "--budget", "0s"], "budget"),
    (["pretrain"], "method"),
    (["pretrain", "simclr", "--data", "", "--budget", "64", "-q"], "--data is empty"),
    (["nonsense-command"], "invalid choice"),
    (["export", "RUN", "--format", "zip", "--out", "OUT"], "format"),
]


@pytest.mark.parametrize(("args", "fragment"), PROBE_BENCH_CASES, ids=[" ".join(c[0]) for c in PROBE_BENCH_CASES])
def test_command_arguments(args, fragment, tmp_path, capsys, trained_run):
    run = tmp_path / "r"
    shutil.copytree(trained_run, run)
    before = tree_hash(run)
    args = [str(run) if a == "RUN" else str(tmp_path / "out.pt") if a == "OUT" else a for a in args]
    code, err = cli(args + (["--out", tmp_path / "bench"] if args[0] == "bench" else []), capsys)
    assert code == 2
    assert_one_line(err, fragment)
    assert tree_hash(run) == before and not (tmp_path / "bench").exists()


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("mine")
    for out in (f, f / "below"):
        code, err = cli(["pretrain", "simclr", "--data", MISSING, "--out", out, "-q"], capsys)
        assert code == 2
        assert_one_line(err, "--out", "is a file")
    assert f.read_text() == "mine"


# ---------------------------------------------------------------- readers: refused with the file named

def npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def cifar_dir(path: Path, data, labels, names=None) -> Path:
    path.mkdir()
    for name in ("data_batch_1", "test_batch"):
        with open(path / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
    if names is not None:
        with open(path / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": names}, f)
    return path


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path("pwned"),))


def stl_dir(path: Path, labels: bytes, n: int = 2) -> Path:
    path.mkdir()
    (path / "train_X.bin").write_bytes(bytes(n * 3 * 96 * 96))
    (path / "train_y.bin").write_bytes(labels)
    return path


def image_folder(path: Path, images: dict[str, np.ndarray | bytes]) -> Path:
    for name, a in images.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(a, bytes):
            (path / name).write_bytes(a)
        else:
            Image.fromarray(a).save(path / name)
    return path


def idx_bytes(arr: np.ndarray, code: int) -> bytes:
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def fashion_dir(path: Path, images: bytes | None = None, labels: bytes | None = None) -> Path:
    path.mkdir()
    x = idx_bytes(OK[:10], 0x08) if images is None else images
    y = idx_bytes(OK_Y[:10].astype(np.uint8), 0x08) if labels is None else labels
    for prefix in ("train", "t10k"):
        (path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(x))
        (path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(y))
    return path


GREY = np.zeros((16, 16), np.uint8)
nan_images = OK.astype(np.float32) / 255
nan_images[3, 2, 2] = np.nan
inf_images = OK.astype(np.float64)
inf_images[0, 0, 0] = np.inf

READER_CASES = {
    # npz
    "npz-nan-pixels": (lambda t: npz(t / "d.npz", images=nan_images), "NaN"),
    "npz-inf-pixels": (lambda t: npz(t / "d.npz", images=inf_images), "infinite"),
    "npz-negative-floats": (lambda t: npz(t / "d.npz", images=OK.astype(np.float32) / 128 - 1), "[0, 1] or [0, 255]"),
    "npz-floats-over-255": (lambda t: npz(t / "d.npz", images=OK.astype(np.float32) * 4), "[0, 1] or [0, 255]"),
    "npz-int64-over-255": (lambda t: npz(t / "d.npz", images=OK.astype(np.int64) * 3), "0..255"),
    "npz-int8-negative": (lambda t: npz(t / "d.npz", images=(OK.astype(np.int16) - 128).astype(np.int8)), "0..255"),
    "npz-complex": (lambda t: npz(t / "d.npz", images=OK.astype(np.complex64)), "complex"),
    "npz-strings": (lambda t: npz(t / "d.npz", images=np.array(["a", "b"])), "shape"),
    "npz-5-channels": (lambda t: npz(t / "d.npz", images=np.zeros((4, 5, 8, 8), np.uint8)), "channels"),
    "npz-2d": (lambda t: npz(t / "d.npz", images=np.zeros((4, 64), np.uint8)), "shape"),
    "npz-labels-negative": (lambda t: npz(t / "d.npz", images=OK, labels=OK_Y - 1), "labels"),
    "npz-labels-fractional": (lambda t: npz(t / "d.npz", images=OK, labels=OK_Y + 0.5), "whole numbers"),
    "npz-labels-huge": (lambda t: npz(t / "d.npz", images=OK, labels=OK_Y * 10**9), "labels"),
    "npz-labels-nan": (lambda t: npz(t / "d.npz", images=OK, labels=np.full(40, np.nan)), "whole numbers"),
    "npz-labels-strings": (lambda t: npz(t / "d.npz", images=OK, labels=np.array(["cat"] * 40)), "labels"),
    "npz-labels-too-few": (lambda t: npz(t / "d.npz", images=OK, labels=OK_Y[:30]), "labels"),
    "npz-test-shape-mismatch": (lambda t: npz(t / "d.npz", images=OK, labels=OK_Y, test_images=np.zeros((5, 8, 8), np.uint8),
                                              test_labels=np.zeros(5, int)), "test_images"),
    "npz-test-labels-alone": (lambda t: npz(t / "d.npz", images=OK, test_labels=OK_Y), "test_labels"),
    "npz-labels-one-split": (lambda t: npz(t / "d.npz", images=OK, labels=OK_Y, test_images=OK), "one split"),
    "npz-empty": (lambda t: npz(t / "d.npz", images=np.zeros((0, 8, 8), np.uint8)), "empty"),
    "npz-no-images": (lambda t: npz(t / "d.npz", pictures=OK), "'images'"),
    "npz-object-array": (lambda t: npz(t / "d.npz", images=np.array([OK, None], dtype=object)), "not a readable .npz"),
    "npz-garbage": (lambda t: _write(t / "d.npz", b"PK\x03\x04garbage"), "not a readable .npz"),
    "npz-is-npy": (lambda t: (np.save(t / "d.npy", OK), (t / "d.npy").rename(t / "d.npz"), t / "d.npz")[-1], "single .npy"),
    "npz-over-memory": (lambda t: npz(t / "d.npz", images=np.zeros((4000, 32, 32), np.uint8)), "memory limit"),
    # CIFAR
    "cifar-labels-negative": (lambda t: cifar_dir(t / "c", np.zeros((2, 3072), np.uint8), [0, -1]), "labels"),
    "cifar-labels-past-names": (lambda t: cifar_dir(t / "c", np.zeros((2, 3072), np.uint8), [0, 3], [b"a", b"b"]), "class names"),
    "cifar-data-int64-300": (lambda t: cifar_dir(t / "c", np.full((2, 3072), 300, np.int64), [0, 1]), "0..255"),
    "cifar-data-wrong-shape": (lambda t: cifar_dir(t / "c", np.zeros((2, 100), np.uint8), [0, 1]), "3072"),
    "cifar-labels-count": (lambda t: cifar_dir(t / "c", np.zeros((2, 3072), np.uint8), [0]), "labels"),
    "cifar-labels-not-list": (lambda t: cifar_dir(t / "c", np.zeros((2, 3072), np.uint8), 7), "labels"),
    "cifar-pickled-code": (lambda t: cifar_dir(t / "c", _Payload(), [0]), "refusing"),
    "cifar-not-a-dict": (lambda t: _write(t / "c" / "data_batch_1", pickle.dumps([1, 2])).parent, "expected a dict"),
    # STL-10
    "stl-label-zero": (lambda t: stl_dir(t / "s", bytes([0, 1])), "1 to 10"),
    "stl-label-eleven": (lambda t: stl_dir(t / "s", bytes([1, 11])), "1 to 10"),
    "stl-label-count": (lambda t: stl_dir(t / "s", bytes([1])), "labels for"),
    "stl-truncated": (lambda t: _write(t / "s" / "train_X.bin", b"123").parent, "multiple"),
    # image folders
    "folder-empty": (lambda t: (t / "f").mkdir() or t / "f", "no images"),
    "folder-corrupt-png": (lambda t: image_folder(t / "f", {"a.png": GREY, "b.png": b"\x89PNG garbage"}), "b.png"),
    "folder-mixed-sizes": (lambda t: image_folder(t / "f", {"a.png": GREY, "b.png": np.zeros((9, 9), np.uint8)}), "b.png"),
    "folder-over-memory": (lambda t: image_folder(t / "f", {"a.png": np.zeros((1200, 1200), np.uint8)}), "memory limit"),
    # IDX (Fashion-MNIST files under $UNSUP_DATA)
    "idx-bad-magic": (lambda t: fashion_dir(t / "fm", images=b"\x01\x02\x03\x04rest"), "bad magic"),
    "idx-truncated": (lambda t: fashion_dir(t / "fm", images=idx_bytes(OK[:10], 0x08)[:-7]), "truncated"),
    "idx-labels-past-classes": (lambda t: fashion_dir(t / "fm", labels=idx_bytes(np.full(10, 12, np.uint8), 0x08)), "class names"),
    "idx-int32-pixels-over-255": (lambda t: fashion_dir(t / "fm", images=idx_bytes(OK[:10].astype(np.int32) * 4, 0x0C)), "0..255"),
    "idx-float-nan": (lambda t: fashion_dir(t / "fm", images=idx_bytes(np.full((10, 16, 16), np.nan, np.float32), 0x0D)), "NaN"),
}


@pytest.mark.parametrize("case", sorted(READER_CASES))
def test_reader_refuses(case, tmp_path, capsys, monkeypatch):
    build, fragment = READER_CASES[case]
    monkeypatch.chdir(tmp_path)
    src = Path(build(tmp_path))
    data = "fashion-mnist" if case.startswith("idx") else src
    if case.startswith("idx"):
        monkeypatch.setenv("UNSUP_DATA", str(src))
    before = tree_hash(tmp_path)
    extra = ["--max-memory", "1M"] if "memory" in case else []
    code, err = cli(["pretrain", "rotation", "--data", data, "--budget", "64", "--out", tmp_path / "run", "-q", *extra], capsys)
    assert code == 2
    assert_one_line(err, fragment)
    assert src.name in err or case.startswith("idx") or "options" in err
    assert tree_hash(tmp_path) == before  # no run directory, no payload's file
    assert not (tmp_path / "pwned").exists()


def _pair_folder(t: Path, test_images: dict) -> Path:
    image_folder(t / "f" / "train", {"a/1.png": GREY, "a/2.png": GREY, "b/1.png": GREY})
    return image_folder(t / "f" / "test", test_images)


PAIR_CASES = {
    "folder-test-size": (lambda t: _pair_folder(t, {"a/1.png": np.zeros((20, 20), np.uint8), "b/1.png": np.zeros((20, 20), np.uint8)}),
                         "test images"),
    "folder-test-classes": (lambda t: _pair_folder(t, {"a/1.png": GREY, "c/1.png": GREY}), "classes"),
    "folder-unlabelled": (lambda t: image_folder(t / "f", {"1.png": GREY, "2.png": GREY, "3.png": GREY, "4.png": GREY,
                                                          "5.png": GREY}) and t / "f", "no labels"),
}


@pytest.mark.parametrize("case", sorted(PAIR_CASES))
def test_probe_pair_refused(case, tmp_path):
    """Splits that load alone but cannot be probed together."""
    from unsup.methods.base import config_from_dict
    from unsup.registry import get_method

    build, fragment = PAIR_CASES[case]
    build(tmp_path)
    cls = get_method("rotation")
    method = cls(config_from_dict(cls.Config, {}), (1, 16, 16))
    with pytest.raises(UnsupError) as e:
        method.probe_datasets(str(tmp_path / "f"))
    assert fragment in str(e.value) and "\n" not in str(e.value)


SMALL_SET_CASES = [
    ("deepcluster", [], "num_clusters"),
    ("deepcluster", ["-o", "num_clusters=4", "-o", "epoch_size=2"], "epoch_size"),
    ("exemplar", [], "surrogate_classes"),
    ("improved-gan", [], "num_classes"),
    ("improved-gan", ["-o", "num_classes=4"], "class 0 has only"),
    ("text-to-image-gan", [], "num_classes"),
]


@pytest.mark.parametrize(("method", "extra", "fragment"), SMALL_SET_CASES, ids=[f"{m} {' '.join(e)}" for m, e, _ in SMALL_SET_CASES])
def test_set_unfit_for_the_method_fails_before_the_run_directory(method, extra, fragment, tmp_path, capsys):
    """Ten labelled images (four classes): too few, or other classes than the config's."""
    data = npz(tmp_path / "ten.npz", images=OK[:10], labels=OK_Y[:10])
    code, err = cli(["pretrain", method, "--data", data, "--budget", "64", "--out", tmp_path / "run", "-q", *extra], capsys)
    assert code == 2
    assert_one_line(err, fragment)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- conversions: documented, at most one warning

def test_conversion_rules(tmp_path):
    f01 = RNG.random((3, 4, 4))
    np.testing.assert_array_equal(readers.to_uint8("x", f01), np.round(f01 * 255).astype(np.uint8))
    f255 = RNG.random((3, 4, 4)) * 255
    np.testing.assert_array_equal(readers.to_uint8("x", f255), np.round(f255).astype(np.uint8))
    u16 = np.array([0, 257, 65535, 32768], np.uint16)
    assert readers.to_uint8("x", u16).tolist() == [0, 1, 255, 128]  # scaled, never clipped
    assert readers.to_uint8("x", np.array([0, 200], np.int64)).tolist() == [0, 200]
    assert readers.to_uint8("x", np.array([True, False])).tolist() == [255, 0]
    assert readers.check_labels("x", np.array([0.0, 2.0]), 2).dtype == np.int64


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path, capsys):
    ramp = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 256).astype(np.uint16)
    image_folder(tmp_path / "f", {"a.png": ramp, "b.png": ramp})
    ds = load(str(tmp_path / "f"), "unlabeled")
    assert ds.images.dtype == torch.uint8 and ds.shape == (1, 16, 16)
    np.testing.assert_array_equal(ds.images[0, 0].numpy(), np.round(ramp * (255 / 65535)).astype(np.uint8))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("n_grey", "n_rgb", "channels"), [(3, 1, 1), (1, 3, 3), (2, 2, 3)])
def test_mixed_channels_converted_to_the_majority_with_one_warning(n_grey, n_rgb, channels, tmp_path, capsys):
    files = {f"g{i}.png": GREY for i in range(n_grey)} | {f"c{i}.png": np.zeros((16, 16, 3), np.uint8) for i in range(n_rgb)}
    image_folder(tmp_path / "f", files)
    ds = load(str(tmp_path / "f"), "unlabeled")
    assert ds.shape[0] == channels and len(ds) == n_grey + n_rgb
    err = capsys.readouterr().err
    assert_one_line(err, "warning", f"{n_grey} greyscale and {n_rgb} colour", str(tmp_path / "f"))


def test_float_npz_in_0_255_is_rounded(tmp_path):
    x = OK.astype(np.float64) * 0.99 + 0.4
    x[0, 0, 0] = 254.6
    ds = load(str(npz(tmp_path / "d.npz", images=x)), "unlabeled")
    assert int(ds.images[0, 0, 0, 0]) == 255 and int(ds.images[1, 0, 0, 0]) == round(OK[1, 0, 0] * 0.99 + 0.4)


# ---------------------------------------------------------------- run directories: read defensively, left unchanged

@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.npz"
    return npz(path, images=OK, labels=OK_Y, test_images=OK[:20], test_labels=OK_Y[:20])


TRAIN = ["--budget", "64", "-o", "batch_size=32", "-q", "--no-tensorboard"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_npz) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ae"
    assert main(["pretrain", "denoising-autoencoder", "--data", str(tiny_npz), "--out", str(out), *TRAIN]) == 0
    return out


def _malicious_checkpoint(p: Path) -> None:
    torch.save({"method": _Payload()}, p)


def _other_checkpoint(p: Path) -> None:
    """A well-formed checkpoint of another model."""
    state = torch.load(p, weights_only=True)
    torch.save({**state, "method": {"head.weight": torch.zeros(3, 5)}}, p)


def _other_encoder(p: Path) -> None:
    from safetensors.torch import save_file

    save_file({"net.0.weight": torch.zeros(7, 2, 3, 3)}, str(p))


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


RUN_FILE_CASES = {
    # file, tamper (text, bytes or a function of the path), commands, expected fragment
    "config-not-yaml": ("config.yaml", "method: [unclosed\n", ["show", "probe", "export", "resume"], "not valid YAML"),
    "config-list": ("config.yaml", "- a\n- b\n", ["show", "probe", "export", "resume"], "mapping"),
    "config-empty": ("config.yaml", "", ["show", "probe"], "mapping"),
    "config-binary": ("config.yaml", b"\xff\xfe\x00garbage", ["show", "probe"], "config.yaml"),
    "config-no-method": ("config.yaml", "data: x\nshape: [1, 16, 16]\n", ["show", "probe", "export"], "'method'"),
    "config-bad-shape": ("config.yaml", "method: rotation\ndata: x\nshape: [1, -16]\n", ["probe", "export"], "'shape'"),
    "config-unknown-method": ("config.yaml", "method: nosuch\ndata: x\nshape: [1, 16, 16]\n", ["probe", "export"], "unknown method"),
    "config-bad-option": ("config.yaml", "method: rotation\ndata: x\nshape: [1, 16, 16]\noptions: {lr: -1}\n", ["probe", "show"],
                          "option lr"),
    "config-yaml-tag": ("config.yaml", "method: !!python/object/apply:os.system [touch pwned]\n", ["show", "probe"], "YAML"),
    "figures-a-file": ("figures", None, ["show"], "figures"),
    "probe-json-garbage": ("probe.json", "{not json", ["show"], "probe.json"),
    "probe-json-list": ("probe.json", "[1, 2]", ["show"], "probe.json"),
    "probe-json-wrong-rows": ("probe.json", '{"method": "x", "results": 5}', ["show"], "probe.json"),
    "encoder-garbage": ("encoder.safetensors", b"\x00" * 50, ["probe", "export"], "encoder.safetensors"),
    "encoder-other-model": ("encoder.safetensors", _other_encoder, ["probe", "export"], "encoder.safetensors"),
    "checkpoint-garbage": ("checkpoint.pt", b"PK\x03\x04 truncated", ["resume"], "checkpoint"),
    "checkpoint-malicious": ("checkpoint.pt", _malicious_checkpoint, ["resume"], "unsafe"),
    "checkpoint-other-model": ("checkpoint.pt", _other_checkpoint, ["resume"], "checkpoint"),
}
COMMANDS = {
    "show": lambda run: ["show", run],
    "probe": lambda run: ["probe", run, "--labels", "1", "--seeds", "1", "--no-references", "-q"],
    "export": lambda run: ["export", run, "--format", "torchscript", "--out", run.parent / "enc.pt"],
    "resume": lambda run: ["pretrain", "denoising-autoencoder", "--data", TINY[0], "--out", run, "--resume", *TRAIN],
}
TINY: list[str] = []
def apply_tamper(target, tamper) -> None:
    """Damage a run-directory file as a RUN_FILE_CASES entry says (also used by benchmarks/bad_inputs.py)."""
    if tamper is None:  # a file where a folder belongs
        shutil.rmtree(target)
        target.write_text("x")
    elif callable(tamper):
        tamper(target)
    elif isinstance(tamper, bytes):
        target.write_bytes(tamper)
    else:
        target.write_text(tamper)


RUN_CASES = [pytest.param(case, cmd, id=f"{case}-{cmd}")
             for case, (_, _, cmds, _) in sorted(RUN_FILE_CASES.items()) for cmd in cmds]


@pytest.mark.parametrize(("case", "command"), RUN_CASES)
def test_run_directory_file(case, command, tmp_path, capsys, monkeypatch, trained_run, tiny_npz):
    TINY[:] = [str(tiny_npz)]
    monkeypatch.chdir(tmp_path)
    name, tamper, _, fragment = RUN_FILE_CASES[case]
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    apply_tamper(run / name, tamper)
    skip = ("run/figures/curves.png",) if command == "show" else ()  # `show` draws the curves before it reads probe.json
    before = tree_hash(tmp_path, skip)
    code, err = cli(COMMANDS[command](run), capsys)
    assert code == 2
    assert_one_line(err, fragment)
    assert name in err or "unknown method" in err
    assert tree_hash(tmp_path, skip) == before
    assert not (tmp_path / "pwned").exists()


def test_garbage_metrics_lines_give_one_warning(tmp_path, capsys, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": 3, "loss": \n[1, 2]\n\xff\xfe garbage\n{"knn_monitor": "high", "step": "x"}\n' + b"[" * 100_000 + b"\n")
    before = tree_hash(run, skip=("figures/curves.png",))  # `show` draws the curves there
    code, err = cli(["show", run], capsys)
    assert code == 0
    assert_one_line(err, "warning", "metrics.jsonl", "4 line(s)")
    assert tree_hash(run, skip=("figures/curves.png",)) == before
