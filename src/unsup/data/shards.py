"""Prepared shard directories: a dataset written once as fixed-size uint8 shards,
then read in batches from disk, so a set larger than memory can train.

``prepare(SOURCE, OUT, size)`` (``unsup data prepare``) reads any source
``load()`` understands (an ``.npz``, a CIFAR or STL-10 folder, an image folder;
image folders stream file by file, never whole) and writes, per split the
source has (``train``/``test``/``unlabeled``, or ``all`` for a single-split
source, held out 80/20 at load time like the in-memory path):

- ``SPLIT-NNNNN.bin``: raw uint8 ``(n, C, H, W)`` images, C-order, no header
  (``np.memmap(f, np.uint8, "r", shape=(n, C, H, W))`` reads one); every shard
  but a split's last holds ``shard_images`` images;
- ``SPLIT-NNNNN.labels.npy``: int64 ``(n,)``, -1 for an unlabelled image;
- ``index.json``: the format, source, size, image shape, classes, the shards
  of each split (file, count, sha256) and the corrupt images skipped (file and
  error). Each shard and then the index are written atomically, so a stopped
  prepare keeps its complete shards and a rerun continues after them.

``open_prepared(DIR, split)`` (what ``load()`` returns for such a directory)
is an ``ImageDataset`` whose ``images`` (``ShardImages``) gather the rows of
``images[idx]`` with positional reads into a fresh buffer: memory holds one
batch, not the files (a memory map's touched pages would count toward the
process's resident memory and grow to the size of the set).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..errors import UnsupError
from ..run import atomic_write
from . import readers
from .datasets import ImageDataset, _split_held_out

FORMAT = "unsup-shards"
VERSION = 1
INDEX = "index.json"
SHARD_BYTES = 128 << 20  # images per shard: as many as fit in this many bytes
IN_MEMORY_SUBSET = 64 << 20  # a subset up to this many bytes is read into memory (monitor banks, figures)
FOLDER_CHUNK = 1024  # image files of a folder source decoded per chunk handed to the writer


def _command(index: dict, out="DIR") -> str:
    """The prepare command that wrote (or finishes) ``index``."""
    size = f" --size {index['size']}" if index.get("size") else ""
    return f"unsup data prepare {index.get('source', 'SOURCE')}{size} --out {out}"


def is_prepared(path: Path) -> bool:
    """True when ``path`` is a directory with a shard index (complete or not)."""
    return (Path(path) / INDEX).is_file()


def read_index(root: Path) -> dict:
    """The index of a prepared directory; anything else is refused in one line."""
    root = Path(root)
    try:
        index = json.loads((root / INDEX).read_text())
    except (OSError, ValueError) as e:
        raise UnsupError(f"{root / INDEX}: not a readable shard index ({e}); prepare the set again with "
                         f"`unsup data prepare SOURCE --out {root}` into an empty directory") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
        raise UnsupError(f"{root / INDEX}: not an {FORMAT} v{VERSION} index; prepare the set again with "
                         f"`unsup data prepare SOURCE --out DIR` into an empty directory")
    return index


# ---------------------------------------------------------------- reading


class _Files:
    """The open shard files of one split, shared by every view of it; closed when the last view goes."""

    def __init__(self, root: Path, shards: list[dict], row_bytes: int):
        self.paths = [root / s["file"] for s in shards]
        self.fds = [os.open(p, os.O_RDONLY) for p in self.paths]
        self.row_bytes = row_bytes
        self.per_shard = shards[0]["count"]
        weakref.finalize(self, _close, list(self.fds))

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The images at ``rows`` (int64, any order, repeats allowed) as uint8 ``(len(rows), row_bytes)``;
        reads go in file order, one per run of consecutive rows."""
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        shard, local = np.divmod(srt, self.per_shard)
        breaks = np.flatnonzero((np.diff(srt) != 1) | (np.diff(shard) != 0)) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [len(srt)]))
        buf = np.empty((len(rows), self.row_bytes), np.uint8)
        view = memoryview(buf).cast("B")
        rb = self.row_bytes
        for a, b in zip(starts.tolist(), ends.tolist()):
            fd, offset, want = self.fds[shard[a]], int(local[a]) * rb, (b - a) * rb
            got = 0
            while got < want:
                n = os.preadv(fd, [view[a * rb + got : b * rb]], offset + got)
                if n <= 0:
                    raise UnsupError(f"{self.paths[shard[a]]}: truncated shard (row {int(local[a]) + got // rb} "
                                     "missing); rerun `unsup data prepare` on this directory to rewrite it")
                got += n
        if (np.diff(rows) >= 0).all():  # asked in file order (slices): no copy back
            return buf
        out = np.empty_like(buf)
        out[order] = buf  # back to the asked order
        return out


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class ShardImages:
    """The images of a prepared split as a lazy uint8 ``(N, C, H, W)`` tensor.

    ``images[idx]`` (a LongTensor or array of indices on any device, a slice,
    or an int) reads those rows from the shards and returns a uint8 tensor on
    this view's device. ``prefetch(idx)`` starts that read in a background
    thread; the next ``images[idx]`` with the same indices takes its result.
    ``to(device)`` is a view bound to another device. ``cpu()`` and
    ``float()`` read every row: they are refused over ``readers.memory_limit()``.
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, files: _Files, shape: tuple[int, int, int, int], rows: np.ndarray | None = None,
                 device=None, where: str = "shards"):
        self._files, self._rows, self.where = files, rows, where
        self.shape = torch.Size((len(rows) if rows is not None else shape[0], *shape[1:]))
        self.device = torch.device(device or "cpu")
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[tuple[np.ndarray, object]] = []

    def __len__(self) -> int:
        return self.shape[0]

    def _positions(self, idx) -> tuple[np.ndarray, bool]:
        """Rows in the shard files for ``idx``, and whether one image (an int) was asked."""
        n = len(self)
        if isinstance(idx, slice):
            pos = np.arange(n)[idx]
        elif isinstance(idx, (int, np.integer)):
            if not -n <= idx < n:
                raise IndexError(f"index {idx} is out of range for {n} images")
            return self._map(np.array([idx % n])), True
        else:
            pos = idx.detach().cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
            if pos.dtype == np.bool_:
                pos = np.flatnonzero(pos)
            pos = pos.astype(np.int64, copy=False).reshape(-1)
            if len(pos) and (pos.min() < -n or pos.max() >= n):
                raise IndexError(f"index {int(pos.min() if pos.min() < -n else pos.max())} is out of range for {n} images")
            pos = pos % n if len(pos) and pos.min() < 0 else pos
        return self._map(pos), False

    def _map(self, pos: np.ndarray) -> np.ndarray:
        return self._rows[pos] if self._rows is not None else pos

    def _gather(self, rows: np.ndarray) -> torch.Tensor:
        out = torch.from_numpy(self._files.read(rows)).view(len(rows), *self.shape[1:])
        if self.device.type == "cuda":
            return out.pin_memory().to(self.device, non_blocking=True)
        return out

    def __getitem__(self, idx) -> torch.Tensor:
        rows, single = self._positions(idx)
        out = None
        while self._pending:  # a prefetched read of these rows, else stale ones are dropped
            ahead, future = self._pending.pop(0)
            if np.array_equal(ahead, rows):
                out = future.result()
                break
        if out is None:
            out = self._gather(rows)
        return out[0] if single else out

    def prefetch(self, idx) -> None:
        """Start reading ``idx`` in the background; ``images[idx]`` then takes the result."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unsup-prefetch")
            weakref.finalize(self, self._pool.shutdown, wait=False)
        rows, _ = self._positions(idx)
        self._pending.append((rows, self._pool.submit(self._gather, rows)))
        del self._pending[:-2]  # at most the batch being trained and the next one

    def to(self, device, non_blocking: bool = False) -> ShardImages:
        return ShardImages(self._files, tuple(self.shape), self._rows, device, self.where)

    def view_of(self, pos: np.ndarray) -> ShardImages:
        """The images at positions ``pos`` of this view, still on disk."""
        return ShardImages(self._files, tuple(self.shape), self._map(pos), self.device, self.where)

    def cpu(self) -> torch.Tensor:
        readers._check_memory(self.where, len(self) * int(np.prod(self.shape[1:])), f"{len(self)} images")
        return self.to("cpu")[:]

    def float(self) -> torch.Tensor:
        readers._check_memory(self.where, 5 * len(self) * int(np.prod(self.shape[1:])), f"{len(self)} images as floats")
        return self[:].float()

    def __repr__(self) -> str:
        return f"ShardImages({self.where}, shape={tuple(self.shape)}, device={self.device})"


def prefetched(batches, images):
    """Yield ``batches`` (index tensors) unchanged; where ``images`` can
    ``prefetch`` (``ShardImages``), the next batch's read starts in the
    background before each batch is handed out, so it overlaps that training step."""
    ahead = getattr(images, "prefetch", None)
    it = iter(batches)
    if ahead is None:
        yield from it
        return
    nxt = next(it, None)
    if nxt is not None:
        ahead(nxt)
    while nxt is not None:
        cur, nxt = nxt, next(it, None)
        if nxt is not None:
            ahead(nxt)
        yield cur


class ShardDataset(ImageDataset):
    """An ``ImageDataset`` whose images stay in shard files (``ShardImages``);
    labels (int64, 8 bytes an image) are in memory. ``to(device)`` binds the
    reads to a device; ``subset(index)`` is read into memory up to
    ``IN_MEMORY_SUBSET`` bytes, else stays on disk."""

    def to(self, device) -> ShardDataset:
        labels = self.labels.to(device) if self.labels is not None else None
        return ShardDataset(self.name, self.images.to(device), labels, self.classes)

    def subset(self, index) -> ImageDataset:
        pos = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        pos = np.flatnonzero(pos) if pos.dtype == np.bool_ else pos.astype(np.int64).reshape(-1)
        labels = self.labels[torch.from_numpy(pos).to(self.labels.device)] if self.labels is not None else None
        if len(pos) * int(np.prod(self.shape)) <= IN_MEMORY_SUBSET:
            return ImageDataset(self.name, self.images[pos], labels, self.classes)
        return ShardDataset(self.name, self.images.view_of(pos % len(self)), labels, self.classes)


def open_prepared(root, split: str = "train") -> ImageDataset:
    """One split of a prepared directory as a ``ShardDataset``: ``train``,
    ``test`` or ``unlabeled`` (the train split where there is none); a
    single-split source (``all``) gives the same fixed 80/20 hold-out as the
    in-memory path. An unfinished or damaged directory is refused in one line."""
    root = Path(root)
    index = read_index(root)
    splits = index.get("splits", {})
    unfinished = [s for s, v in splits.items() if not v.get("complete")]
    if not index.get("complete") or unfinished:
        raise UnsupError(f"{root}: an unfinished prepare ({', '.join(unfinished) or 'no'} split(s) incomplete); "
                         f"rerun `{_command(index, root)}` to finish it")
    if "all" in splits:
        return _split_held_out(_open_split(root, index, "all"), split)
    name = split if split in splits else ("train" if split == "unlabeled" else None)
    if name not in splits:
        raise UnsupError(f"{root}: no {split} split (prepared: {', '.join(splits)}); choose one of those, or prepare "
                         "a source that has it")
    return _open_split(root, index, name)


def _open_split(root: Path, index: dict, split: str) -> ShardDataset:
    shards = index["splits"][split]["shards"]
    c, h, w = index["shape"]
    row = c * h * w
    for s in shards:
        p = root / s["file"]
        size = p.stat().st_size if p.is_file() else -1
        if size != s["count"] * row:
            found = "missing" if size < 0 else f"{size} bytes, expected {s['count'] * row}"
            raise UnsupError(f"{p}: shard {found}; rerun `{_command(index, root)}` to rewrite it")
    if not shards:
        raise UnsupError(f"{root}: the {split} split has no images; prepare a source with images")
    n = sum(s["count"] for s in shards)
    labels = np.concatenate([_read_labels(root / _labels_file(s["file"]), s["count"]) for s in shards])
    y = torch.from_numpy(labels) if (labels >= 0).any() else None
    images = ShardImages(_Files(root, shards, row), (n, c, h, w), where=f"{root} ({split})")
    return ShardDataset(root.name, images, y, list(index.get("classes") or []))


def _labels_file(shard_file: str) -> str:
    return shard_file[: -len(".bin")] + ".labels.npy"


def _read_labels(path: Path, count: int) -> np.ndarray:
    try:
        y = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UnsupError(f"{path}: cannot read the shard's labels ({e}); rerun `unsup data prepare` on this directory") from None
    if y.shape != (count,) or y.dtype != np.int64:
        raise UnsupError(f"{path}: labels {y.dtype} {y.shape}, expected int64 ({count},); rerun `unsup data prepare` "
                         "on this directory")
    return y


# ---------------------------------------------------------------- writing


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


class ShardWriter:
    """Writes a prepared directory split by split; reopening one continues it.

    ``ShardWriter(out, source, size, shape, classes)`` keeps the longest prefix
    of each split's recorded shards that still verify (size and sha256); ``resume_at(split)``
    is the source position to continue from. ``add(split, images, labels, items)``
    takes a chunk with each image's source position; full shards are written
    (shard, labels, then the index, each atomically). ``finish(split)``
    writes the last partial shard; ``close()`` marks the set complete."""

    def __init__(self, out, source: str, size: int | None, shape: tuple[int, int, int], classes: list[str],
                 splits: list[str], shard_images: int | None = None):
        self.out = Path(out)
        row = int(np.prod(shape))
        meta = {"format": FORMAT, "version": VERSION, "source": source, "size": size, "shape": list(shape),
                "classes": list(classes), "shard_images": shard_images or max(1, SHARD_BYTES // row)}
        if self.out.exists() and not self.out.is_dir():
            raise UnsupError(f"--out {self.out}: a file, not a directory; choose another --out")
        old = read_index(self.out) if is_prepared(self.out) else None
        if old is not None and not any(s.get("shards") for s in old.get("splits", {}).values()):
            old = None  # stopped before its first shard: nothing to keep, whatever it was asked
        elif old is None and self.out.is_dir() and any(self.out.iterdir()):
            raise UnsupError(f"--out {self.out}: not empty and not a prepared set; choose an empty or new directory")
        if old is not None and any(old.get(k) != v for k, v in meta.items()):
            differ = [k for k, v in meta.items() if old.get(k) != v]
            raise UnsupError(f"--out {self.out}: holds a set prepared with another {', '.join(differ)} "
                             f"({_command(old, self.out)}); choose another --out or delete it")
        self.row, self.per = row, meta["shard_images"]
        for tmp in self.out.glob(".*"):  # temp files of a killed atomic write
            if tmp.is_file() and (tmp.name.startswith(f".{INDEX}.") or ".bin." in tmp.name or ".labels.npy." in tmp.name):
                tmp.unlink(missing_ok=True)
        self.index = {**meta, "complete": False, "splits": {}}
        for split in splits:
            kept = self._verified(old["splits"].get(split)) if old is not None else None
            self.index["splits"][split] = kept or {"complete": False, "next_item": 0, "shards": [], "skipped": []}
        self._buf: dict[str, list] = {s: [] for s in splits}  # pending (images, labels, items) chunks
        self._save()

    def _verified(self, split: dict | None) -> dict | None:
        """A split's record cut back to the prefix of its shards that are whole and match their checksum."""
        if split is None:
            return None
        good = []
        for s in split.get("shards", []):
            p = self.out / s["file"]
            if not (p.is_file() and p.stat().st_size == s["count"] * self.row
                    and (self.out / _labels_file(s["file"])).is_file() and _sha256(p) == s["sha256"]):
                break
            good.append(s)
        if len(good) == len(split.get("shards", [])) and split.get("complete"):
            return split
        # only a finished split's last shard is short, so the kept prefix is whole shards
        next_item = good[-1]["next_item"] if good else 0
        return {"complete": False, "next_item": next_item, "shards": good,
                "skipped": [k for k in split.get("skipped", []) if k["item"] < next_item]}

    def resume_at(self, split: str) -> int | None:
        """The source position to continue ``split`` from; None when it is complete."""
        s = self.index["splits"][split]
        return None if s["complete"] else s["next_item"]

    def skip(self, split: str, item: int, file: str, error: str) -> None:
        """Record a corrupt image (not written) at source position ``item``."""
        self.index["splits"][split]["skipped"].append({"item": item, "file": file, "error": error})

    def add(self, split: str, images: np.ndarray, labels: np.ndarray, items: np.ndarray) -> None:
        """Images uint8 ``(n, C, H, W)``, labels int64 (-1: none) and source positions ``(n,)``."""
        self._buf[split].append((images, labels, items))
        while sum(len(b[0]) for b in self._buf[split]) >= self.per:
            self._flush(split, self.per)

    def _flush(self, split: str, n: int) -> None:
        buf = self._buf[split]
        images = np.concatenate([b[0] for b in buf])
        labels = np.concatenate([b[1] for b in buf]).astype(np.int64)
        items = np.concatenate([b[2] for b in buf])
        rec = self.index["splits"][split]
        name = f"{split}-{len(rec['shards']):05d}.bin"
        data = np.ascontiguousarray(images[:n])
        atomic_write(self.out / name, memoryview(data).cast("B"))
        label_bytes = _npy_bytes(labels[:n])
        atomic_write(self.out / _labels_file(name), label_bytes)
        rec["shards"].append({"file": name, "count": int(n), "next_item": int(items[n - 1]) + 1,
                              "sha256": hashlib.sha256(memoryview(data).cast("B")).hexdigest()})
        rec["next_item"] = int(items[n - 1]) + 1
        self._buf[split] = [(images[n:], labels[n:], items[n:])] if len(images) > n else []
        self._save()

    def finish(self, split: str, end_item: int) -> None:
        """All of ``split`` is read (``end_item``: the position after the source's last image)."""
        pending = sum(len(b[0]) for b in self._buf[split])
        if pending:
            self._flush(split, pending)
        rec = self.index["splits"][split]
        rec["complete"], rec["next_item"] = True, int(end_item)
        self._save()

    def close(self) -> dict:
        """Mark the set complete (every split finished); returns the index."""
        self.index["complete"] = all(s["complete"] for s in self.index["splits"].values())
        self._save()
        return self.index

    def _save(self) -> None:
        atomic_write(self.out / INDEX, json.dumps(self.index, indent=1))


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    f = io.BytesIO()
    np.save(f, a, allow_pickle=False)
    return f.getvalue()


# ---------------------------------------------------------------- prepare


def _resized(a: np.ndarray, size: int | None) -> np.ndarray:
    """One image, uint8 ``(H, W)`` or ``(H, W, 3)``, resized to ``size`` x ``size`` (bilinear, as
    ``readers.read_image_folder`` does); unchanged without a size or at that size already."""
    if size is None or a.shape[:2] == (size, size):
        return a
    from PIL import Image

    return np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))


def _resize_all(images: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 ``(n, C, H, W)`` resized image by image (see ``_resized``)."""
    if size is None or images.shape[2:] == (size, size):
        return images
    hwc = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
    out = np.stack([_resized(np.ascontiguousarray(a), size) for a in hwc])
    return out[:, None] if out.ndim == 3 else out.transpose(0, 3, 1, 2)


def _array_splits(source: str, path: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None, list[str]]]:
    """Each split of an in-memory source (``.npz``, CIFAR, STL-10, a named set) as (images, labels, classes);
    a source with one split gives ``all`` (held out at load time)."""
    from .datasets import has_unlabeled_split, load

    if path.suffix == ".npz":
        x, y, tx, ty = readers.read_npz_splits(path)
        return {"all": (x, y, [])} if tx is None else {"train": (x, y, []), "test": (tx, ty, [])}
    names = ["train", "test"] + (["unlabeled"] if has_unlabeled_split(source) else [])
    out = {}
    for split in names:
        ds = load(source, split)
        out[split] = (ds.images.numpy(), ds.labels.numpy() if ds.labels is not None else None, ds.classes)
    return out


def _is_folder(path: Path) -> bool:
    """An image folder, not a CIFAR or STL-10 folder (the markers ``load`` goes by)."""
    markers = ("data_batch_1", "test_batch", "meta", "train_X.bin", "unlabeled_X.bin")
    return path.is_dir() and not any((path / m).exists() for m in markers)


def _folder_items(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(file, label) in ``readers.read_image_folder``'s order, and the class names (subfolders)."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    suffixes = readers.IMAGE_SUFFIXES
    if subdirs:
        items = [(f, i) for i, d in enumerate(subdirs) for f in sorted(d.iterdir()) if f.suffix.lower() in suffixes]
    else:
        items = [(f, -1) for f in sorted(root.iterdir()) if f.suffix.lower() in suffixes]
    if not items:
        raise UnsupError(f"{root}: no images found (expected {', '.join(sorted(suffixes))} files)")
    return items, [d.name for d in subdirs]


def _folder_shape(items: list[tuple[Path, int]], size: int | None) -> tuple[int, int, int]:
    """(C, H, W) from the headers: the channel majority (RGB on a tie, as the reader) and, without
    ``size``, the first readable image's size. Unreadable files are left to the pixel pass to record."""
    from PIL import Image

    grey = colour = 0
    first = None
    for f, _ in items:
        try:
            with Image.open(f) as img:
                mode, (w, h) = img.mode, img.size
        except Exception:  # noqa: BLE001 - PIL raises many kinds; recorded when its pixels are read
            continue
        grey, colour = grey + (mode in readers.GREY_MODES), colour + (mode not in readers.GREY_MODES)
        first = first or (h, w, f)
        if size is None and (h, w) != first[:2]:
            raise UnsupError(f"{f}: image is {h}x{w} but {first[2]} is {first[0]}x{first[1]}; pass --size to resize all")
    if first is None:
        raise UnsupError(f"{items[0][0].parent}: no readable image among {len(items)} files")
    if grey and colour:
        print(f"warning: {grey} greyscale and {colour} colour images; all converted to "
              f"{'greyscale' if grey > colour else 'RGB'}, the majority", file=sys.stderr)
    return (1 if grey > colour else 3, *((size, size) if size else first[:2]))


def _write_folder(writer: ShardWriter, split: str, items, shape, size, progress) -> None:
    """Decode the split's files from where the writer stands, chunk by chunk; corrupt ones are recorded and skipped."""
    from PIL import Image

    start = writer.resume_at(split)
    if start is None:
        return
    grey = shape[0] == 1
    progress.update(start)
    for lo in range(start, len(items), FOLDER_CHUNK):
        arrays, labels, pos = [], [], []
        for k in range(lo, min(lo + FOLDER_CHUNK, len(items))):
            f, y = items[k]
            try:
                with Image.open(f) as img:
                    img.load()
                    a = _resized(readers._pixels(img, f, grey), size)
            except Exception as e:  # noqa: BLE001 - PIL raises many kinds; a bad file is skipped, not fatal
                writer.skip(split, k, str(f), str(e).splitlines()[0] if str(e) else type(e).__name__)
                continue
            if a.shape[:2] != shape[1:]:
                raise UnsupError(f"{f}: image is {a.shape[:2]} but the others are {shape[1:]}; pass --size to resize all")
            arrays.append(a)
            labels.append(y)
            pos.append(k)
        if arrays:
            x = np.stack(arrays)
            x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
            writer.add(split, x, np.array(labels, np.int64), np.array(pos, np.int64))
        progress.update(min(FOLDER_CHUNK, len(items) - lo))
    writer.finish(split, len(items))


def prepare(source, out, size: int | None = None, shard_images: int | None = None, quiet: bool = False) -> dict:
    """Write ``source`` (anything ``load()`` reads) into shards in ``out``; returns the index.

    ``size``: every image resized to ``size`` x ``size`` (needed when an image
    folder's images differ in size). Image folders are decoded file by file
    (corrupt files are skipped and listed in the index); other sources are
    read whole, as ``load()`` does. Rerunning on a stopped or damaged ``out``
    continues after its last verified shard; on a complete one it only verifies."""
    from ..progress import bar

    source = str(source)
    path = Path(source).expanduser()
    if size is not None and not 1 <= int(size) <= 4096:
        raise UnsupError(f"--size {size}: give a side length in pixels, 1..4096")
    size = int(size) if size is not None else None
    if _is_folder(path):
        sub = {"train": path / "train", "test": path / "test"}
        folders = {s: p for s, p in sub.items() if p.is_dir()} if sub["train"].is_dir() else {"all": path}
        listed = {s: _folder_items(p) for s, p in folders.items()}
        classes = next(iter(listed.values()))[1]
        for s, (_, names) in listed.items():
            if names != classes:
                raise UnsupError(f"{folders[s]}: class folders {names[:5]} differ from {classes[:5]} of the other split; "
                                 "give every split the same class folders")
        old = read_index(Path(out)) if is_prepared(Path(out)) else None
        same = old is not None and old.get("source") == source and old.get("size") == size
        shape = tuple(old["shape"]) if same else _folder_shape([i for items, _ in listed.values() for i in items], size)
        writer = ShardWriter(out, source, size, shape, classes, list(folders), shard_images)
        for s, (items, _) in listed.items():
            with bar(None if quiet else f"prepare {s}", len(items), "img") as b:
                _write_folder(writer, s, items, shape, size, b)
        return _report(writer.close(), quiet)
    arrays = {s: (_resize_all(x, size), y, c) for s, (x, y, c) in _array_splits(source, path).items()}
    first = next(iter(arrays.values()))
    writer = ShardWriter(out, source, size, first[0].shape[1:], first[2], list(arrays), shard_images)
    for s, (x, y, _) in arrays.items():
        start = writer.resume_at(s)
        if start is None:
            continue
        y = y if y is not None else np.full(len(x), -1, np.int64)
        for lo in range(start, len(x), writer.per):
            hi = min(lo + writer.per, len(x))
            writer.add(s, x[lo:hi], y[lo:hi], np.arange(lo, hi))
        writer.finish(s, len(x))
    return _report(writer.close(), quiet)


def _report(index: dict, quiet: bool) -> dict:
    """Say what was skipped (stderr), unless quiet; return the index."""
    for split, rec in index["splits"].items():
        if rec["skipped"] and not quiet:
            listed = "; ".join(f"{k['file']} ({k['error']})" for k in rec["skipped"][:10])
            more = f"; and {len(rec['skipped']) - 10} more (see index.json)" if len(rec["skipped"]) > 10 else ""
            print(f"warning: {split}: skipped {len(rec['skipped'])} corrupt image(s): {listed}{more}", file=sys.stderr)
    return index


def summary(index: dict, out) -> str:
    """One line: where, the image shape, each split's count and shards, the skipped count."""
    parts = [f"{s} {sum(x['count'] for x in r['shards'])} images in {len(r['shards'])} shard(s)"
             + (f", {len(r['skipped'])} corrupt skipped" if r["skipped"] else "") for s, r in index["splits"].items()]
    return f"{out}: {'x'.join(map(str, index['shape']))} uint8; " + "; ".join(parts)
