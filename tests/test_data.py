"""Data: readers for every format (tiny files written here), named datasets,
few-label splits and batched augmentation."""

from __future__ import annotations

import gzip
import math
import os
import pickle

import numpy as np
import pytest
import torch

from unsup.data import AugmentConfig, augment, fetch, few_label_indices, load, parse_label_budgets, readers
from unsup.data.augment import gaussian_blur
from unsup.errors import UnsupError

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- IDX


def _idx_bytes(a: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[a.dtype]
    head = bytes([0, 0, code, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return head + a.tobytes()


def _write_gz(path, data: bytes):
    with gzip.open(path, "wb") as f:
        f.write(data)
    return path


def test_idx_round_trip(tmp_path):
    x = RNG.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    y = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    xi = readers.read_idx(_write_gz(tmp_path / "img-idx3-ubyte.gz", _idx_bytes(x)))
    yi = readers.read_idx(_write_gz(tmp_path / "lab-idx1-ubyte.gz", _idx_bytes(y)))
    assert xi.dtype == np.uint8 and xi.shape == (5, 4, 3)
    np.testing.assert_array_equal(xi, x)
    np.testing.assert_array_equal(yi, y)
    # uncompressed, big-endian int32
    z = np.arange(6, dtype=">i4").reshape(2, 3)
    (tmp_path / "raw-idx").write_bytes(_idx_bytes(z))
    np.testing.assert_array_equal(readers.read_idx(tmp_path / "raw-idx"), z)


def test_idx_truncated_data(tmp_path):
    x = RNG.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    path = _write_gz(tmp_path / "short-idx3-ubyte.gz", _idx_bytes(x)[:-7])
    with pytest.raises(UnsupError, match="short-idx3-ubyte.gz") as e:
        readers.read_idx(path)
    assert "truncated" in str(e.value)


def test_idx_truncated_gzip_stream(tmp_path):
    x = RNG.integers(0, 256, (50, 8, 8), dtype=np.uint8)
    full = tmp_path / "full.gz"
    _write_gz(full, _idx_bytes(x))
    cut = tmp_path / "cut-idx3-ubyte.gz"
    cut.write_bytes(full.read_bytes()[:-30])
    with pytest.raises(UnsupError, match="cut-idx3-ubyte.gz"):
        readers.read_idx(cut)


def test_idx_bad_magic(tmp_path):
    path = _write_gz(tmp_path / "notidx.gz", b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(UnsupError, match="notidx.gz") as e:
        readers.read_idx(path)
    assert "magic" in str(e.value)


def test_idx_missing_file(tmp_path):
    with pytest.raises(UnsupError, match="absent.gz"):
        readers.read_idx(tmp_path / "absent.gz")


# ---------------------------------------------------------------- CIFAR


def _pickle(path, obj, protocol=2):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def _cifar_batch(n):
    data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in RNG.integers(0, 10, n)]
    return {b"batch_label": b"x", b"data": data, b"labels": labels}


CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _cifar10_dir(root, protocol=2):
    root.mkdir()
    batches = [_cifar_batch(3 + i) for i in range(5)]
    for i, b in enumerate(batches, 1):
        _pickle(root / f"data_batch_{i}", b, protocol)
    test = _cifar_batch(4)
    _pickle(root / "test_batch", test, protocol)
    _pickle(root / "batches.meta", {b"label_names": CIFAR10_NAMES, b"num_cases_per_batch": 10}, protocol)
    return batches, test


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10(tmp_path, protocol):
    root = tmp_path / "cifar-10-batches-py"
    batches, test = _cifar10_dir(root, protocol)
    ds = load(str(root), "train")
    n = sum(len(b[b"labels"]) for b in batches)
    assert ds.images.dtype == torch.uint8 and tuple(ds.images.shape) == (n, 3, 32, 32)
    want = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(ds.images.numpy(), want)
    assert ds.labels.tolist() == [v for b in batches for v in b[b"labels"]]
    assert ds.classes == [c.decode() for c in CIFAR10_NAMES]
    assert ds.num_classes == 10
    te = load(str(root), "test")
    np.testing.assert_array_equal(te.images.numpy(), test[b"data"].reshape(-1, 3, 32, 32))
    assert te.labels.tolist() == test[b"labels"]
    # the unlabelled split of a labelled set is its train split
    assert len(load(str(root), "unlabeled")) == n


class Gadget:
    """Any class instance is refused, not only callables."""


@pytest.mark.parametrize("payload", ["system", "instance"])
def test_cifar_refuses_code_in_pickle(tmp_path, payload):
    root = tmp_path / "evil"
    _cifar10_dir(root)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = Exploit() if payload == "system" else {b"data": Gadget(), b"labels": [0]}
    _pickle(root / "data_batch_3", bad)
    with pytest.raises(UnsupError, match="data_batch_3") as e:
        load(str(root), "train")
    assert "refusing" in str(e.value)
    assert not marker.exists()


def test_cifar_bad_shape(tmp_path):
    root = tmp_path / "c10"
    _cifar10_dir(root)
    _pickle(root / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(UnsupError, match="test_batch"):
        load(str(root), "test")


def test_cifar100(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    names = [f"class{i}".encode() for i in range(100)]
    parts = {}
    for split, n in (("train", 6), ("test", 3)):
        data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in RNG.integers(0, 100, n)]
        parts[split] = (data, fine)
        _pickle(root / split, {b"data": data, b"fine_labels": fine, b"coarse_labels": [0] * n})
    _pickle(root / "meta", {b"fine_label_names": names, b"coarse_label_names": [b"c"] * 20})
    for split, (data, fine) in parts.items():
        ds = load(str(root), split)
        assert tuple(ds.images.shape) == (len(fine), 3, 32, 32)
        np.testing.assert_array_equal(ds.images.numpy(), data.reshape(-1, 3, 32, 32))
        assert ds.labels.tolist() == fine
        assert ds.classes == [n.decode() for n in names]


# ---------------------------------------------------------------- STL-10


def _stl_write(path, images):
    # the real format stores each channel column-major
    path.write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())


def test_stl10(tmp_path):
    root = tmp_path / "stl10_binary"
    root.mkdir()
    x = RNG.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8)
    y = np.array([1, 10, 4], dtype=np.uint8)
    u = RNG.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)
    _stl_write(root / "train_X.bin", x)
    (root / "train_y.bin").write_bytes(y.tobytes())
    _stl_write(root / "unlabeled_X.bin", u)
    (root / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")

    xi, yi, classes = readers.read_stl10(root, "train")
    np.testing.assert_array_equal(xi, x)
    assert yi.tolist() == [0, 9, 3]
    assert classes == [f"c{i}" for i in range(10)]

    ds = load(str(root), "train")
    assert tuple(ds.images.shape) == (3, 3, 96, 96)
    np.testing.assert_array_equal(ds.images.numpy(), x)
    assert ds.labels.tolist() == [0, 9, 3]

    un = load(str(root), "unlabeled")
    assert un.labels is None and un.num_classes == 10
    np.testing.assert_array_equal(un.images.numpy(), u)


def test_stl10_bad_size(tmp_path):
    root = tmp_path / "stl"
    root.mkdir()
    (root / "unlabeled_X.bin").write_bytes(bytes(3 * 96 * 96 + 5))
    with pytest.raises(UnsupError, match="unlabeled_X.bin"):
        readers.read_stl10(root, "unlabeled")


def test_stl10_label_count_mismatch(tmp_path):
    root = tmp_path / "stl"
    root.mkdir()
    _stl_write(root / "train_X.bin", np.zeros((2, 3, 96, 96), np.uint8))
    (root / "train_y.bin").write_bytes(bytes([1, 2, 3]))
    with pytest.raises(UnsupError, match="train_y.bin"):
        readers.read_stl10(root, "train")


# ---------------------------------------------------------------- image folder


def _png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_labelled(tmp_path):
    root = tmp_path / "pets"
    imgs = {}
    for cls in ("cat", "dog"):
        for i in range(2):
            a = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            imgs[(cls, i)] = a
            _png(root / cls / f"{i}.png", a)
    (root / "cat" / "notes.txt").write_text("not an image")
    ds = load(str(root), "unlabeled")
    assert tuple(ds.images.shape) == (4, 3, 6, 5)
    assert ds.classes == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(ds.images[2].numpy(), imgs[("dog", 0)].transpose(2, 0, 1))


def test_image_folder_unlabelled_grey(tmp_path):
    root = tmp_path / "flat"
    a = RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    for i in range(3):
        _png(root / f"im{i}.png", a[i])
    x, y, classes = readers.read_image_folder(root)
    assert y is None and classes == []
    assert x.shape == (3, 1, 4, 4)
    np.testing.assert_array_equal(x[:, 0], a)
    assert load(str(root), "unlabeled").labels is None


def test_image_folder_mixed_sizes(tmp_path):
    root = tmp_path / "mixed"
    _png(root / "a.png", np.zeros((4, 4, 3), np.uint8))
    _png(root / "b.png", np.zeros((6, 5, 3), np.uint8))
    with pytest.raises(UnsupError, match="b.png"):
        readers.read_image_folder(root)
    x, _, _ = readers.read_image_folder(root, size=8)
    assert x.shape == (2, 3, 8, 8)


def test_image_folder_empty_and_corrupt(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnsupError, match="no images"):
        readers.read_image_folder(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(UnsupError, match="x.png"):
        readers.read_image_folder(tmp_path / "broken")


# ---------------------------------------------------------------- npz


def test_npz_layouts(tmp_path):
    hw = RNG.integers(0, 256, (4, 5, 6), dtype=np.uint8)
    np.savez(tmp_path / "hw.npz", images=hw)
    ds = load(str(tmp_path / "hw.npz"), "unlabeled")
    assert tuple(ds.images.shape) == (4, 1, 5, 6) and ds.labels is None
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), hw)

    hwc = RNG.integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    labels = np.array([0, 2, 1, 2])
    np.savez(tmp_path / "hwc.npz", images=hwc, labels=labels)
    ds = load(str(tmp_path / "hwc.npz"), "unlabeled")
    assert tuple(ds.images.shape) == (4, 3, 5, 6)
    np.testing.assert_array_equal(ds.images.numpy(), hwc.transpose(0, 3, 1, 2))
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [0, 2, 1, 2]
    assert ds.num_classes == 3

    chw = RNG.integers(0, 256, (2, 3, 7, 7), dtype=np.uint8)
    np.savez(tmp_path / "chw.npz", images=chw)
    np.testing.assert_array_equal(readers.read_npz(tmp_path / "chw.npz")[0], chw)

    f = RNG.random((2, 4, 4)).astype(np.float32)  # floats in [0, 1] are scaled to [0, 255] and rounded
    np.savez(tmp_path / "float.npz", images=f)
    x, _ = readers.read_npz(tmp_path / "float.npz")
    assert x.dtype == np.uint8
    np.testing.assert_array_equal(x[:, 0], np.round(f * 255.0).astype(np.uint8))


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "nokey.npz", pictures=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(UnsupError, match="nokey.npz") as e:
        load(str(tmp_path / "nokey.npz"))
    assert "'images'" in str(e.value) and "pictures" in str(e.value)

    np.savez(tmp_path / "badlab.npz", images=np.zeros((3, 4, 4), np.uint8), labels=np.zeros((3, 2)))
    with pytest.raises(UnsupError, match="badlab.npz") as e:
        load(str(tmp_path / "badlab.npz"))
    assert "labels" in str(e.value)

    np.savez(tmp_path / "flat.npz", images=np.zeros((3, 16), np.uint8))
    with pytest.raises(UnsupError, match="flat.npz"):
        load(str(tmp_path / "flat.npz"))

    (tmp_path / "junk.npz").write_bytes(b"garbage")
    with pytest.raises(UnsupError, match="junk.npz"):
        load(str(tmp_path / "junk.npz"))

    with pytest.raises(UnsupError, match="missing.npz"):
        load(str(tmp_path / "missing.npz"))


# ---------------------------------------------------------------- load()


def test_load_unknown_name():
    with pytest.raises(UnsupError) as e:
        load("no-such-dataset")
    msg = str(e.value)
    assert "no-such-dataset" in msg and "fashion-mnist" in msg and "digits" in msg


def test_load_unknown_split():
    with pytest.raises(UnsupError, match="split"):
        load("digits", "validation")


def test_load_digits():
    tr, te = load("digits", "train"), load("digits", "test")
    assert tr.shape == (1, 8, 8) and tr.images.dtype == torch.uint8
    assert tr.num_classes == 10 and te.num_classes == 10
    assert len(tr) + len(te) == 1797
    assert int(tr.images.max()) == 255
    assert sorted(torch.unique(tr.labels).tolist()) == list(range(10))
    assert torch.equal(load("digits", "train").images, tr.images)  # the split is fixed


@pytest.mark.skipif(not fetch.DEBIAN_DIR.is_dir(), reason="Fashion-MNIST not installed")
def test_load_fashion_mnist_test_split():
    ds = load("fashion-mnist", "test")
    assert len(ds) == 10000 and ds.shape == (1, 28, 28)
    assert ds.num_classes == 10 and ds.labels.min() == 0 and ds.labels.max() == 9
    assert ds.images.dtype == torch.uint8


def test_fashion_mnist_not_found(tmp_path, monkeypatch):
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("UNSUP_DATA", str(empty))
    monkeypatch.setattr(fetch, "DEBIAN_DIR", tmp_path / "nodebian")
    monkeypatch.setattr(fetch, "cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(UnsupError, match="unsup data get fashion-mnist"):
        load("fashion-mnist", "test")


def test_fashion_mnist_from_unsup_data(tmp_path, monkeypatch):
    root = tmp_path / "data" / "fashion-mnist"
    root.mkdir(parents=True)
    x = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    y = np.array([0, 9, 5], np.uint8)
    for prefix in ("train", "t10k"):
        _write_gz(root / f"{prefix}-images-idx3-ubyte.gz", _idx_bytes(x))
        _write_gz(root / f"{prefix}-labels-idx1-ubyte.gz", _idx_bytes(y))
    monkeypatch.setenv("UNSUP_DATA", str(tmp_path / "data"))
    ds = load("fashion-mnist", "train")
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), x)
    assert ds.labels.tolist() == [0, 9, 5] and ds.classes[9] == "ankle-boot"


# ---------------------------------------------------------------- splits


LABELS = torch.tensor([0] * 7 + [1] * 5 + [2] * 9)


def test_few_label_indices_per_class():
    idx = few_label_indices(LABELS, 3, seed=0)
    assert len(idx) == 9 and len(set(idx.tolist())) == 9
    assert torch.bincount(LABELS[idx]).tolist() == [3, 3, 3]
    assert torch.equal(idx, few_label_indices(LABELS, 3, seed=0))
    others = [few_label_indices(LABELS, 3, seed=s) for s in range(1, 6)]
    assert any(not torch.equal(idx, o) for o in others)
    assert few_label_indices(LABELS, 5, seed=0)[LABELS[few_label_indices(LABELS, 5, seed=0)] == 1].tolist() == [7, 8, 9, 10, 11]


def test_few_label_indices_all_and_too_many():
    assert torch.equal(few_label_indices(LABELS, "all", seed=3), torch.arange(len(LABELS)))
    with pytest.raises(UnsupError, match="class 1"):
        few_label_indices(LABELS, 6, seed=0)


def test_parse_label_budgets():
    assert parse_label_budgets("1,10,all") == [1, 10, "all"]
    assert parse_label_budgets(" 100 ") == [100]
    for bad in ("0", "ten", "1,,10", "-1", "1.5"):
        with pytest.raises(UnsupError, match="label budget"):
            parse_label_budgets(bad)


# ---------------------------------------------------------------- augment


NO_CHANGE = AugmentConfig(crop_scale=(1.0, 1.0), flip=0.0, brightness=0.0, contrast=0.0, blur_prob=0.0, noise_std=0.0)


def test_augment_range_and_shape():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 12, 12)
    v = augment(x, AugmentConfig(noise_std=0.2))
    assert v.shape == x.shape and v.dtype == torch.float32
    assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    assert augment(x, out_size=8).shape == (6, 1, 8, 8)


def test_augment_per_sample_randomness():
    torch.manual_seed(0)
    one = torch.rand(1, 3, 16, 16)
    v = augment(one.expand(2, -1, -1, -1).contiguous())
    assert (v[0] - v[1]).abs().max() > 1e-3


def test_augment_identity():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 10, 10)
    torch.testing.assert_close(augment(x, NO_CHANGE), x, atol=1e-5, rtol=0)
    rect = torch.rand(2, 1, 6, 9)  # not square: the full-area crop is still the whole image
    torch.testing.assert_close(augment(rect, NO_CHANGE), rect, atol=1e-5, rtol=0)


def test_augment_flip():
    x = torch.rand(2, 1, 5, 7)
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), flip=1.0, brightness=0.0, contrast=0.0, blur_prob=0.0)
    torch.testing.assert_close(augment(x, cfg), x.flip(-1), atol=1e-5, rtol=0)


def test_augment_crop_keeps_area():
    # a half-area crop magnifies: neighbouring output pixels come closer in the input
    x = torch.linspace(0, 1, 32).repeat(1, 1, 32, 1).expand(64, 1, 32, 32).contiguous()
    cfg = AugmentConfig(crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0), flip=0.0, brightness=0.0, contrast=0.0, blur_prob=0.0)
    v = augment(x, cfg)
    step = (v[..., 1:] - v[..., :-1]).mean()
    torch.testing.assert_close(step, torch.tensor(0.5 / 31), atol=1e-3, rtol=0)


def test_gaussian_blur_per_sample_sigma():
    torch.manual_seed(0)
    noise = torch.rand(1, 1, 16, 16).expand(2, -1, -1, -1).contiguous()
    out = gaussian_blur(noise, torch.tensor([0.5, 2.0]))
    assert out.shape == noise.shape
    assert out[1].var() < out[0].var() < noise[0].var()
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), noise.mean(dim=(1, 2, 3)), atol=0.02, rtol=0)
    for shape in ((2, 1, 2, 2), (2, 1, 1, 5)):  # the kernel shrinks to fit tiny images
        assert gaussian_blur(torch.rand(shape), torch.tensor([1.0, 1.0])).shape == shape



def test_gaussian_blur_matches_torchvision_per_sample():
    """Each sample equals torchvision's blur with that sample's sigma (same kernel size, reflected borders)."""
    from torchvision.transforms.v2.functional import gaussian_blur as tv_blur

    torch.manual_seed(0)
    x = torch.rand(3, 3, 20, 17)
    sigma = torch.tensor([0.3, 1.0, 1.9])
    out = gaussian_blur(x, sigma)
    k = 2 * math.ceil(2 * 1.9) + 1  # one kernel size for the batch, from its largest sigma
    for i in range(3):
        torch.testing.assert_close(out[i], tv_blur(x[i], [k, k], [float(sigma[i])] * 2), atol=1e-5, rtol=0)

def test_augment_uint8_rgb():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 12, 12), dtype=torch.uint8)
    v = augment(x)
    assert v.dtype == torch.float32 and v.shape == (3, 3, 12, 12)
    assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    torch.testing.assert_close(augment(x, NO_CHANGE), x.float() / 255, atol=1e-5, rtol=0)


def test_single_split_sources_hold_out_a_fixed_test_split(tmp_path):
    x = RNG.integers(0, 256, (50, 4, 4), dtype=np.uint8)
    y = np.arange(50) % 5
    np.savez(tmp_path / "one.npz", images=x, labels=y)
    tr, te = load(str(tmp_path / "one.npz"), "train"), load(str(tmp_path / "one.npz"), "test")
    assert len(tr) == 40 and len(te) == 10
    seen = {bytes(a.numpy()) for a in tr.images} | {bytes(a.numpy()) for a in te.images}
    assert len(seen) == 50  # disjoint and complete
    assert torch.equal(load(str(tmp_path / "one.npz"), "test").images, te.images)  # fixed
    # an npz with its own test arrays uses them
    np.savez(tmp_path / "two.npz", images=x, labels=y, test_images=x[:7], test_labels=y[:7])
    assert len(load(str(tmp_path / "two.npz"), "train")) == 50
    assert torch.equal(load(str(tmp_path / "two.npz"), "test").labels, torch.from_numpy(y[:7]))
