"""Named datasets and user paths, all loaded as uint8 tensors ``(N, C, H, W)``.

``load("fashion-mnist", "train")`` is the default. A path loads a user's own
data: an ``.npz``, a CIFAR-10/100 python folder, an STL-10 binary folder, or an
image folder. Other families register extra names in ``LOADERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UnsupError
from . import readers
from .fetch import find_fashion_mnist

FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


@dataclass
class ImageDataset:
    """Images as uint8 ``(N, C, H, W)``; labels int64 ``(N,)`` or ``None``."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise UnsupError(f"{self.name}: images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) == 0:
            raise UnsupError(f"{self.name}: the image set is empty")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise UnsupError(f"{self.name}: {len(self.labels)} labels for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        return int(self.labels.max()) + 1 if self.labels is not None else 0

    def to(self, device) -> ImageDataset:
        labels = self.labels.to(device) if self.labels is not None else None
        return ImageDataset(self.name, self.images.to(device), labels, self.classes)

    def subset(self, index) -> ImageDataset:
        labels = self.labels[index] if self.labels is not None else None
        return ImageDataset(self.name, self.images[index], labels, self.classes)


def _tensor(images: np.ndarray, labels: np.ndarray | None, name: str, classes) -> ImageDataset:
    """A dataset from reader arrays; pixels and labels pass the readers' rules."""
    images = readers.to_uint8(name, images)
    y = torch.from_numpy(readers.check_labels(name, labels, len(images), classes)) if labels is not None else None
    return ImageDataset(name, torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)), y, list(classes or []))


def check_pair(train: ImageDataset, test: ImageDataset, source: str) -> None:
    """Refuse a train/test pair that cannot be probed together: no labels, another
    image shape, other class names, or test labels of classes the train split lacks."""
    if train.labels is None or test.labels is None:
        raise UnsupError(f"{source}: has no labels, so its encoder cannot be probed; give a labelled source "
                         "(class subfolders, or 'labels' in the .npz)")
    if train.shape != test.shape:
        raise UnsupError(f"{source}: the test images are {test.shape} but the train images {train.shape} (C, H, W); "
                         "both splits need one image shape")
    if train.classes and test.classes and train.classes != test.classes:
        raise UnsupError(f"{source}: the test split's classes ({', '.join(test.classes[:5])}...) differ from the train "
                         f"split's ({', '.join(train.classes[:5])}...); give both splits the same class folders")
    if train.labels is not None and test.labels is not None and len(test.labels):
        top = int(test.labels.max())
        if top >= train.num_classes:
            raise UnsupError(f"{source}: the test split has label {top} but the train split only {train.num_classes} classes")


def _fashion_mnist(split: str) -> ImageDataset:
    root = find_fashion_mnist()
    prefix = {"train": "train", "test": "t10k"}[split]
    x_file, y_file = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    x, y = readers.read_idx(x_file), readers.read_idx(y_file)
    if x.ndim != 3 or len(x) != len(y):
        raise UnsupError(f"{root}: {prefix} images {x.shape} and labels {y.shape} do not match")
    return _tensor(readers.to_uint8(x_file, x[:, None]), readers.check_labels(y_file, y, len(x), FASHION_CLASSES),
                   "fashion-mnist", FASHION_CLASSES)


def _digits(split: str) -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits; a fixed 75/25 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None]
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(0.75 * len(x))
    idx = order[:cut] if split == "train" else order[cut:]
    return _tensor(x[idx], d.target[idx], "digits", [str(i) for i in range(10)])


HOLD_OUT = 0.2  # share of a single-split source kept as its test split


def _split_held_out(ds: ImageDataset, split: str) -> ImageDataset:
    """A source with one split (npz, flat folder): a fixed 80/20 train/test
    split, the same for every run; the unlabelled split is everything."""
    if split == "unlabeled":
        return ds
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(ds)))
    cut = round(len(ds) * (1 - HOLD_OUT))
    return ds.subset(order[:cut] if split == "train" else order[cut:])


def _from_path(path: Path, split: str) -> ImageDataset:
    name = path.name
    if path.suffix == ".npz":
        x, y, tx, ty = readers.read_npz_splits(path)
        if tx is not None:
            return _tensor(tx, ty, name, None) if split == "test" else _tensor(x, y, name, None)
        return _split_held_out(_tensor(x, y, name, None), split)
    if not path.exists():
        raise UnsupError(f"{path}: no such file or folder")
    if (path / "data_batch_1").exists() or (path / "test_batch").exists() or (path / "meta").exists():
        x, y, classes = readers.read_cifar(path, split)
        return _tensor(x, y, name, classes)
    if (path / "train_X.bin").exists() or (path / "unlabeled_X.bin").exists():
        x, y, classes = readers.read_stl10(path, split)
        return _tensor(x, y, name, classes)
    sub = path / ("train" if split == "unlabeled" else split)
    if sub.is_dir():
        x, y, classes = readers.read_image_folder(sub)
        return _tensor(x, y, name, classes)
    x, y, classes = readers.read_image_folder(path)
    return _split_held_out(_tensor(x, y, name, classes), split)


# name -> loader(split); method families add their own (e.g. natural images, video)
LOADERS: dict[str, Callable[[str], ImageDataset]] = {
    "fashion-mnist": _fashion_mnist,
    "digits": _digits,
}
SPLITS = ("train", "test", "unlabeled")


def has_unlabeled_split(name: str) -> bool:
    """True for sources with a separate unlabelled split (STL-10's 100k images)."""
    path = Path(name).expanduser()
    if (path / "unlabeled_X.bin").is_file():
        return True
    from . import shards

    return shards.is_prepared(path) and "unlabeled" in shards.read_index(path).get("splits", {})


def _discover_loaders() -> None:
    """Import every module of ``unsup.data`` so the ones that add names to
    ``LOADERS`` (natural images, video, stereo) have done so."""
    import importlib
    import pkgutil

    from .. import data

    for info in pkgutil.iter_modules(data.__path__):
        importlib.import_module(f"{data.__name__}.{info.name}")


def load(name: str, split: str = "train") -> ImageDataset:
    """A dataset by name (see ``LOADERS``) or by path, one split; a directory
    written by ``unsup data prepare`` streams its images from disk (``shards``)."""
    if not str(name).strip():  # Path("") is the current folder: an empty --data must not train on it
        raise UnsupError("--data is empty; give a dataset name or a path")
    if name not in LOADERS:
        _discover_loaders()
    if split not in SPLITS:
        raise UnsupError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if name in LOADERS:
        if split == "unlabeled":
            split = "train"  # labelled sets serve their train split unlabelled
        return LOADERS[name](split)
    path = Path(name).expanduser()
    from . import shards

    if shards.is_prepared(path):
        return shards.open_prepared(path, split)
    if path.suffix == ".npz" or path.exists():
        return _from_path(path, split)
    raise UnsupError(f"unknown dataset {name!r}; choose one of {', '.join(LOADERS)} or give a path (.npz, CIFAR, STL-10 or image folder)")
