"""Readers for the image formats users have: IDX, CIFAR pickles, STL-10 binary,
image folders and ``.npz``. Each returns uint8 arrays ``(N, C, H, W)`` plus
integer labels (or ``None``), and names the file and the fault when a file is
missing, truncated or malformed.

Pixels become uint8 by one rule (``to_uint8``), the same for every reader:

- ``uint8``: kept; ``bool``: False -> 0, True -> 255;
- ``uint16`` (and 16-bit image files): scaled, ``round(v * 255 / 65535)``, never clipped;
- other integer types: kept when every value is in 0..255, refused otherwise;
- floats: refused when any value is NaN or infinite; all in [0, 1]: ``round(v * 255)``;
  else all in [0, 255]: ``round(v)``; anything else (negative, above 255) refused;
- any other dtype: refused.

Labels must be whole numbers in ``0..MAX_CLASSES-1`` (and below the number of
class names where a source has them); floats with integral values are converted.

A source whose arrays would take more memory than ``memory_limit()`` (half the
machine's RAM unless ``set_memory_limit`` or ``unsup --max-memory`` says
otherwise) is refused before it is read: ``.npz`` members by their header
shapes, gzip streams as they expand, image folders by their headers' sizes.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import UnsupError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_CLASSES = 10_000
_memory_limit: int | None = None


def _ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def memory_limit() -> int:
    """Bytes a dataset's arrays may take: ``set_memory_limit``'s value, else half the RAM."""
    return _memory_limit if _memory_limit is not None else _ram() // 2


def set_memory_limit(nbytes: int | None) -> None:
    """Set the limit of ``memory_limit`` (None: back to half the RAM)."""
    global _memory_limit
    _memory_limit = None if nbytes is None else int(nbytes)


def parse_memory(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"100k"``, ``"2000000"`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise UnsupError(f"{text!r} is not a memory size; give e.g. 4G, 512M or 100000000 (bytes)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def _check_memory(where, nbytes: int, what: str) -> None:
    limit = memory_limit()
    if nbytes > limit:
        raise UnsupError(f"{where}: {what} would take {nbytes / 2**30:.2f} GiB, over the memory limit of "
                         f"{limit / 2**30:.2f} GiB; use a smaller file or raise --max-memory")


def to_uint8(where, a: np.ndarray, sixteen_bit: bool = False) -> np.ndarray:
    """Pixels as uint8 by the module's rule; ``sixteen_bit`` marks integer
    pixels of a 16-bit image file (PIL's ``I;16`` / ``I`` modes)."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.size == 0:
        return a.astype(np.uint8)
    kind = a.dtype.kind
    if kind in "iu":
        lo, hi = int(a.min()), int(a.max())
        if a.dtype == np.uint16 or sixteen_bit:
            if lo < 0 or hi > 65535:
                raise UnsupError(f"{where}: 16-bit pixel values must lie in 0..65535, found {lo}..{hi}")
            return np.round(a.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        if lo < 0 or hi > 255:
            raise UnsupError(f"{where}: {a.dtype} pixel values must lie in 0..255 (or be uint16, scaled by 255/65535), "
                             f"found {lo}..{hi}; rescale them or save uint8")
        return a.astype(np.uint8)
    if kind == "f":
        finite = np.isfinite(a)
        if not finite.all():
            raise UnsupError(f"{where}: {int((~finite).sum())} pixel value(s) are NaN or infinite; fix or drop those images")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 255:
            raise UnsupError(f"{where}: float pixel values must lie in [0, 1] or [0, 255], found {lo:g}..{hi:g} "
                             "(normalised data? undo the normalisation first)")
        return np.round(a * 255.0 if hi <= 1.0 else a).astype(np.uint8)
    raise UnsupError(f"{where}: pixels of dtype {a.dtype} are not images; give uint8, uint16 or float values")


def check_labels(where, labels, n: int, classes: list | None = None) -> np.ndarray:
    """``labels`` as int64 ``(n,)``: whole numbers in 0..MAX_CLASSES-1, and below
    ``len(classes)`` when the source names its classes."""
    y = np.asarray(labels)
    if y.shape != (n,):
        raise UnsupError(f"{where}: labels have shape {y.shape}; expected ({n},), one per image")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not (y == np.round(y)).all():
            raise UnsupError(f"{where}: labels must be whole numbers (class indices), found non-integer values")
    elif y.dtype.kind not in "iub":
        raise UnsupError(f"{where}: labels of dtype {y.dtype} are not class indices; give integers 0..K-1")
    if n:
        lo, hi = y.min(), y.max()
        top = min(MAX_CLASSES, len(classes)) if classes else MAX_CLASSES
        if lo < 0 or hi >= top:
            names = f" ({len(classes)} class names)" if classes else ""
            raise UnsupError(f"{where}: labels must lie in 0..{top - 1}{names}, found {lo:g}..{hi:g}")
    return y.astype(np.int64)


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise UnsupError(f"{path}: file not found")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read(memory_limit() + 1)  # a bomb stops at the limit, not at the machine's RAM
            _check_memory(path, len(data), "the expanded file")
            return data
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
    classes = None
    if meta_file.exists():
        names = _read_cifar_batch(meta_file).get(names_key)
        if isinstance(names, list | tuple) and names:
            classes = [n.decode(errors="replace") if isinstance(n, bytes) else str(n) for n in names]
    images, labels = [], []
    for f in files:
        batch = _read_cifar_batch(f)
        if "data" not in batch or label_key not in batch:
            raise UnsupError(f"{f}: CIFAR batch lacks 'data' or '{label_key}'")
        data = np.asarray(batch["data"])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise UnsupError(f"{f}: CIFAR batch has data of shape {data.shape}, expected (N, 3072) with N labels")
        images.append(to_uint8(f, data).reshape(-1, 3, 32, 32))
        labels.append(check_labels(f, batch[label_key], len(data), classes))
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
    names_file = root / "class_names.txt"
    try:
        classes = names_file.read_text().split() if names_file.exists() else []
    except (OSError, UnicodeDecodeError) as e:
        raise UnsupError(f"{names_file}: cannot read the class names ({e}); fix or delete the file") from None
    classes = classes or [str(i) for i in range(10)]
    labels = None
    if split != "unlabeled":
        y_file = root / f"{split}_y.bin"
        raw_y = np.frombuffer(_read_bytes(y_file), dtype=np.uint8).astype(np.int64)
        if len(raw_y) != len(images):
            raise UnsupError(f"{y_file}: {len(raw_y)} labels for {len(images)} images")
        if len(raw_y) and (raw_y.min() < 1 or raw_y.max() > len(classes)):
            raise UnsupError(f"{y_file}: STL-10 labels run from 1 to {len(classes)}, found {raw_y.min()}..{raw_y.max()}")
        labels = raw_y - 1  # stored 1..K
    return np.ascontiguousarray(images), labels, classes


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def _pixels(img, f: Path, grey: bool) -> np.ndarray:
    """One image as uint8 ``(H, W)`` (grey) or ``(H, W, 3)``: 16-bit and float
    modes go through ``to_uint8``'s rule instead of PIL's clipping conversion."""
    if img.mode in SIXTEEN_BIT_MODES or img.mode == "F":
        a = to_uint8(f, np.asarray(img), sixteen_bit=img.mode != "F")
        return a if grey else np.repeat(a[..., None], 3, axis=-1)
    return np.asarray(img.convert("L" if grey else "RGB"), dtype=np.uint8)


def read_image_folder(root: str | Path, size: int | None = None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """One subfolder per class (labelled) or images directly in ``root`` (unlabelled).

    All images must share one size unless ``size`` is given (then each is resized
    to ``size`` x ``size``). The channel count is the majority's: greyscale files
    (1, L, LA, 16-bit I;16 and float F modes) give 1 channel, anything else 3 (RGB,
    alpha dropped); with a mix, the minority is converted to the majority (RGB on a
    tie) with one warning on stderr that counts them. 16-bit and float pixels follow
    ``to_uint8``'s rule.
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise UnsupError(f"{root}: not a directory")
    try:
        subdirs = sorted(p for p in root.iterdir() if p.is_dir())
        if subdirs:
            classes = [d.name for d in subdirs]
            items = [(f, i) for i, d in enumerate(subdirs) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        else:
            classes = []
            items = [(f, -1) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    except OSError as e:
        raise UnsupError(f"{e.filename or root}: cannot list the folder ({e.strerror})") from None
    if not items:
        raise UnsupError(f"{root}: no images found (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)")
    # headers first (PIL reads pixels lazily): the channel majority and the memory the set will take
    heads = []
    for f, _ in items:
        try:
            with Image.open(f) as img:
                heads.append((img.mode, img.size))
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds
            raise UnsupError(f"{f}: cannot read image ({e})") from None
    n_grey = sum(mode in GREY_MODES for mode, _ in heads)
    grey = n_grey > len(heads) - n_grey
    channels = 1 if grey else 3
    pixels = sum((size * size) if size else (w * h) for _, (w, h) in heads)
    _check_memory(root, pixels * channels, f"{len(items)} images")
    if 0 < n_grey < len(heads):
        minority = len(heads) - n_grey if grey else n_grey
        print(f"warning: {root}: {n_grey} greyscale and {len(heads) - n_grey} colour images; {minority} converted to "
              f"{'greyscale (1 channel)' if grey else 'RGB (3 channels)'}, the majority", file=sys.stderr)
    arrays = []
    for f, _ in items:
        try:
            with Image.open(f) as img:
                img.load()
                a = _pixels(img, f, grey)
            if size is not None:
                a = np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))
        except UnsupError:
            raise
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds
            raise UnsupError(f"{f}: cannot read image ({e})") from None
        if arrays and a.shape != arrays[0].shape:
            raise UnsupError(f"{f}: image is {a.shape[:2]} but {items[0][0]} is {arrays[0].shape[:2]}; pass a size to resize all")
        arrays.append(a)
    images = np.stack(arrays)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    labels = np.array([y for _, y in items], dtype=np.int64) if subdirs else None
    return np.ascontiguousarray(images), labels, classes


NPZ_KEYS = ("images", "labels", "test_images", "test_labels")


def _npz_images(path: Path, images: np.ndarray, labels: np.ndarray | None, key: str) -> tuple[np.ndarray, np.ndarray | None]:
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.transpose(0, 3, 1, 2)
    else:
        raise UnsupError(f"{path}: '{key}' has shape {images.shape}; expected (N,H,W), (N,H,W,C) or (N,C,H,W)")
    if images.shape[1] not in (1, 3):
        raise UnsupError(f"{path}: '{key}' has {images.shape[1]} channels (shape {images.shape}); expected 1 (grey) or 3 (RGB)")
    images = to_uint8(f"{path}: '{key}'", images)
    if labels is not None:
        labels = check_labels(f"{path}: labels of '{key}'", labels, len(images))
    return np.ascontiguousarray(images), labels


def _npz_member_bytes(z: np.lib.npyio.NpzFile, key: str) -> int:
    """Bytes ``key`` will take once loaded, from its .npy header (nothing else is read)."""
    with z.zip.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return int(np.prod(shape, dtype=object)) * dtype.itemsize


def read_npz_splits(path: str | Path):
    """An ``.npz`` with ``images`` (N,H,W), (N,H,W,C) or (N,C,H,W), optional
    ``labels``, and optionally its own ``test_images`` / ``test_labels`` of the
    same image shape. Returns (images, labels, test_images, test_labels), missing
    ones None. Pixels and labels follow the module's rules; the arrays' size is
    checked against ``memory_limit()`` from their headers before they are loaded."""
    path = Path(path)
    if not path.is_file():
        raise UnsupError(f"{path}: file not found")
    try:
        z = np.load(path, mmap_mode="r", allow_pickle=False)  # a bare .npy is mapped, not read
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise UnsupError(f"{path}: a single .npy array, not an .npz archive; save with np.savez(path, images=...)")
        with z:
            if "images" not in z:
                raise UnsupError(f"{path}: no 'images' array (found: {', '.join(z.files) or 'none'})")
            present = [k for k in NPZ_KEYS if k in z]
            _check_memory(path, sum(_npz_member_bytes(z, k) for k in present), "its arrays")
            arrays = {k: z[k] for k in present}
    except UnsupError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile/numpy raise many kinds
        raise UnsupError(f"{path}: not a readable .npz ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if "test_labels" in arrays and "test_images" not in arrays:
        raise UnsupError(f"{path}: 'test_labels' without 'test_images'; add the images or drop the labels")
    x, y = _npz_images(path, arrays["images"], arrays.get("labels"), "images")
    tx = ty = None
    if "test_images" in arrays:
        tx, ty = _npz_images(path, arrays["test_images"], arrays.get("test_labels"), "test_images")
        if tx.shape[1:] != x.shape[1:]:
            raise UnsupError(f"{path}: 'test_images' are {tx.shape[1:]} but 'images' are {x.shape[1:]} (C, H, W); "
                             "both splits need one image shape")
        if (y is None) != (ty is None):
            raise UnsupError(f"{path}: labels for one split only; give both 'labels' and 'test_labels' or neither")
    return x, y, tx, ty


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``images`` and ``labels`` of an ``.npz`` (see ``read_npz_splits``)."""
    x, y, _, _ = read_npz_splits(path)
    return x, y
