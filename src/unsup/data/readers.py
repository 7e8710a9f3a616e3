"""Readers for the image formats users have: IDX, CIFAR pickles, STL-10 binary,
image folders and ``.npz``. Each returns uint8 arrays ``(N, C, H, W)`` plus
integer labels (or ``None``), and names the file and the fault when a file is
missing, truncated or malformed.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import UnsupError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise UnsupError(f"{path}: file not found")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UnsupError(f"{path}: cannot read ({e}); the file is corrupt or truncated, fetch it again") from None


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzip-compressed or not."""
    raw = _read_bytes(Path(path))
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise UnsupError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UnsupError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise UnsupError(
            f"{path}: truncated or padded IDX data: header says shape {shape} ({expected} bytes) but {len(raw) - header} bytes follow"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches: dicts, lists, bytes and numpy arrays, nothing else,
    so a crafted file cannot run code."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(path: Path) -> dict:
    raw = _read_bytes(path)
    try:
        batch = _ArraysOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any unpickling fault means a bad file
        raise UnsupError(f"{path}: not a CIFAR python batch ({e})") from None
    if not isinstance(batch, dict):
        raise UnsupError(f"{path}: not a CIFAR python batch (expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def read_cifar(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``, ``test``).

    ``split`` is ``"train"``, ``"test"`` or ``"unlabeled"`` (the train files)."""
    root = Path(root)
    split = "train" if split == "unlabeled" else split
    if (root / "data_batch_1").exists() or (root / "test_batch").exists():
        files = [root / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [root / "test_batch"]
        label_key, meta_file, names_key = "labels", root / "batches.meta", "label_names"
    else:
        files = [root / ("train" if split == "train" else "test")]
        label_key, meta_file, names_key = "fine_labels", root / "meta", "fine_label_names"
    images, labels = [], []
    for f in files:
        batch = _read_cifar_batch(f)
        if "data" not in batch or label_key not in batch:
            raise UnsupError(f"{f}: CIFAR batch lacks 'data' or '{label_key}'")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch[label_key]) != len(data):
            raise UnsupError(f"{f}: CIFAR batch has data of shape {data.shape}, expected (N, 3072) with N labels")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    classes = None
    if meta_file.exists():
        names = _read_cifar_batch(meta_file).get(names_key)
        if names is not None:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    y = np.concatenate(labels)
    return np.concatenate(images), y, classes or [str(i) for i in range(int(y.max()) + 1)]


STL_SIZE = 96


def read_stl10(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """STL-10 binary: ``train_X.bin``/``train_y.bin``, ``test_*``, ``unlabeled_X.bin``."""
    root = Path(root)
    raw = np.frombuffer(_read_bytes(root / f"{split}_X.bin"), dtype=np.uint8)
    per_image = 3 * STL_SIZE * STL_SIZE
    if raw.size % per_image:
        raise UnsupError(f"{root / f'{split}_X.bin'}: size {raw.size} is not a multiple of one 3x96x96 image")
    # stored column-major per channel: swap H and W to get (N, C, H, W)
    images = raw.reshape(-1, 3, STL_SIZE, STL_SIZE).transpose(0, 1, 3, 2)
    labels = None
    if split != "unlabeled":
        labels = np.frombuffer(_read_bytes(root / f"{split}_y.bin"), dtype=np.uint8).astype(np.int64) - 1
        if len(labels) != len(images):
            raise UnsupError(f"{root / f'{split}_y.bin'}: {len(labels)} labels for {len(images)} images")
    names_file = root / "class_names.txt"
    classes = names_file.read_text().split() if names_file.exists() else [str(i) for i in range(10)]
    return np.ascontiguousarray(images), labels, classes


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def read_image_folder(root: str | Path, size: int | None = None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """One subfolder per class (labelled) or images directly in ``root`` (unlabelled).

    All images must share one size unless ``size`` is given (then each is resized
    to ``size`` x ``size``). Greyscale stays 1 channel; anything else becomes RGB.
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise UnsupError(f"{root}: not a directory")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if subdirs:
        classes = [d.name for d in subdirs]
        items = [(f, i) for i, d in enumerate(subdirs) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        classes = []
        items = [(f, -1) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise UnsupError(f"{root}: no images found (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)")
    arrays = []
    first_mode = None
    for f, _ in items:
        try:
            img = Image.open(f)
            img.load()
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds
            raise UnsupError(f"{f}: cannot read image ({e})") from None
        first_mode = first_mode or ("L" if img.mode in ("L", "1", "I;16") else "RGB")
        img = img.convert(first_mode)
        if size is not None:
            img = img.resize((size, size), Image.BILINEAR)
        a = np.asarray(img, dtype=np.uint8)
        if arrays and a.shape != arrays[0].shape:
            raise UnsupError(f"{f}: image is {a.shape[:2]} but {items[0][0]} is {arrays[0].shape[:2]}; pass a size to resize all")
        arrays.append(a)
    images = np.stack(arrays)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    labels = np.array([y for _, y in items], dtype=np.int64) if subdirs else None
    return np.ascontiguousarray(images), labels, classes


def _npz_images(path: Path, images: np.ndarray, labels: np.ndarray | None, key: str) -> tuple[np.ndarray, np.ndarray | None]:
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.transpose(0, 3, 1, 2)
    else:
        raise UnsupError(f"{path}: '{key}' has shape {images.shape}; expected (N,H,W), (N,H,W,C) or (N,C,H,W)")
    if images.dtype != np.uint8:
        if images.dtype.kind == "f" and images.size and images.max() <= 1.0:
            images = images * 255.0
        images = np.clip(images, 0, 255).astype(np.uint8)
    if labels is not None:
        if labels.shape != (len(images),):
            raise UnsupError(f"{path}: labels for '{key}' have shape {labels.shape}; expected ({len(images)},)")
        labels = labels.astype(np.int64)
    return np.ascontiguousarray(images), labels


def read_npz_splits(path: str | Path):
    """An ``.npz`` with ``images`` (N,H,W), (N,H,W,C) or (N,C,H,W), optional
    ``labels``, and optionally its own ``test_images`` / ``test_labels``.
    Returns (images, labels, test_images, test_labels), missing ones None."""
    path = Path(path)
    if not path.is_file():
        raise UnsupError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z:
                raise UnsupError(f"{path}: no 'images' array (found: {', '.join(z.files) or 'none'})")
            arrays = {k: z[k] for k in ("images", "labels", "test_images", "test_labels") if k in z}
    except UnsupError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile/numpy raise many kinds
        raise UnsupError(f"{path}: not a readable .npz ({e})") from None
    x, y = _npz_images(path, arrays["images"], arrays.get("labels"), "images")
    tx = ty = None
    if "test_images" in arrays:
        tx, ty = _npz_images(path, arrays["test_images"], arrays.get("test_labels"), "test_images")
    return x, y, tx, ty


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``images`` and ``labels`` of an ``.npz`` (see ``read_npz_splits``)."""
    x, y, _, _ = read_npz_splits(path)
    return x, y
