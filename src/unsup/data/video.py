"""Video data: Moving Fashion-MNIST / moving digits generated on the device,
and readers for users' own videos.

The generator follows Srivastava, Mansimov & Salakhutdinov (2015), who made
Moving MNIST: 64x64 frames, 2 objects of 28x28 bouncing inside the frame, a
random start position and direction per object, a fixed speed (their step of
0.1 of the free range, i.e. 3.6 pixels per frame), overlaps combined by
pixel-wise max, 20 frames (10 given, 10 to predict). The bounce is the exact
reflection of a straight path (a triangle wave, closed form), so any frame of
any sequence is computed directly: a batch is rendered with one gather, no
Python loop over frames or samples.

Sequences are virtual: a dataset holds the object images and, per sequence,
its two object indices, start positions and directions (drawn once from a
seed); ``data.images[idx]`` renders uint8 ``(B, T, C, 64, 64)`` on the device
holding the parameters. The fixed test set is 10,000 sequences of held-out
test images, rendered batch by batch when evaluated.

Users' video: ``.npy``/``.npz`` arrays ``(N, T, H, W[, C])`` (the public Moving
MNIST file's ``(20, 10000, 64, 64)`` time-first layout is recognised), or a
folder with one sub-folder of frame images per sequence.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import UnsupError
from .datasets import LOADERS, ImageDataset, load

SIZE, FRAMES, OBJECTS = 64, 20, 2
SPEED = 0.1 * (SIZE - 28)  # Srivastava's step_length 0.1 of the free range: 3.6 px/frame
TRAIN_SEQUENCES, TEST_SEQUENCES = 100_000, 10_000
SEEDS = {"train": 1, "test": 2}  # fixed: the test set is the same for every run


def _reflect(p: torch.Tensor, span: float) -> torch.Tensor:
    """Position of a point moving on a line with elastic bounces in [0, span]."""
    if span <= 0:
        return torch.zeros_like(p)
    q = torch.remainder(p, 2 * span)
    return span - (q - span).abs()


class MovingObjects:
    """Virtual sequences of ``objects`` bouncing on a ``size`` canvas.

    ``objects`` uint8 ``(M, C, h, w)``; per sequence ``index`` ``(N, K)`` object
    ids, ``start`` ``(N, K, 2)`` in [0, 1] of the free range (y, x), ``angle``
    ``(N, K)`` radians. Indexing renders uint8 ``(B, T, C, size, size)``.
    """

    def __init__(self, objects, index, start, angle, frames=FRAMES, size=SIZE, speed=SPEED, t0=0):
        self.objects, self.index, self.start, self.angle = objects, index, start, angle
        self.frames, self.size, self.speed, self.t0 = int(frames), int(size), float(speed), int(t0)
        _m, _c, h, w = objects.shape
        if h > self.size or w > self.size:
            raise UnsupError(f"objects of {h}x{w} do not fit a {self.size}x{self.size} canvas; use a larger canvas")

    @classmethod
    def draw(cls, objects: torch.Tensor, n: int, seed: int, num_objects=OBJECTS, **kw) -> MovingObjects:
        g = torch.Generator().manual_seed(seed)
        index = torch.randint(len(objects), (n, num_objects), generator=g)
        start = torch.rand(n, num_objects, 2, generator=g)
        angle = torch.rand(n, num_objects, generator=g) * 2 * math.pi
        return cls(objects, index, start, angle, **kw)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), self.frames, self.objects.shape[1], self.size, self.size)

    @property
    def device(self) -> torch.device:
        return self.objects.device

    def _with(self, **kw) -> MovingObjects:
        args = dict(objects=self.objects, index=self.index, start=self.start, angle=self.angle,
                    frames=self.frames, size=self.size, speed=self.speed, t0=self.t0)
        args.update(kw)
        return MovingObjects(**args)

    def to(self, device) -> MovingObjects:
        return self._with(objects=self.objects.to(device), index=self.index.to(device),
                          start=self.start.to(device), angle=self.angle.to(device))

    def subset(self, idx) -> MovingObjects:
        idx = torch.as_tensor(idx, device=self.index.device) if not isinstance(idx, slice) else idx
        return self._with(index=self.index[idx], start=self.start[idx], angle=self.angle[idx])

    def window(self, t0: int, frames: int) -> MovingObjects:
        """The same sequences seen from frame ``t0`` for ``frames`` frames (a stream in chunks)."""
        return self._with(t0=t0, frames=frames)

    def positions(self, idx, t: torch.Tensor) -> torch.Tensor:
        """Integer top-left corners ``(B, T, K, 2)`` (y, x) at frames ``t``."""
        _m, _c, h, w = self.objects.shape
        span = torch.tensor([self.size - h, self.size - w], device=self.device, dtype=torch.float32)
        start, angle = self.start[idx], self.angle[idx]  # (B, K, 2), (B, K)
        direction = torch.stack([torch.sin(angle), torch.cos(angle)], -1)
        p = start[:, None] * span + self.speed * t.float()[None, :, None, None] * direction[:, None]
        return torch.stack([_reflect(p[..., 0], float(span[0])), _reflect(p[..., 1], float(span[1]))], -1).round().long()

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, int):
            return self[torch.tensor([idx])][0]
        if not isinstance(idx, slice):
            idx = torch.as_tensor(idx, device=self.device)
        objs = self.objects.permute(0, 2, 3, 1)[self.index[idx]]  # (B, K, h, w, C)
        b, k, h, w, c = objs.shape
        t = torch.arange(self.t0, self.t0 + self.frames, device=self.device)
        pos = self.positions(idx, t)  # (B, T, K, 2)
        grid = torch.arange(self.size, device=self.device)
        ry = grid - pos[..., 0, None]  # (B, T, K, S): object row under each canvas row
        rx = grid - pos[..., 1, None]
        mask = ((ry >= 0) & (ry < h))[..., :, None] & ((rx >= 0) & (rx < w))[..., None, :]
        bi = torch.arange(b, device=self.device)[:, None, None, None, None]
        ki = torch.arange(k, device=self.device)[None, None, :, None, None]
        pix = objs[bi, ki, ry.clamp(0, h - 1)[..., :, None], rx.clamp(0, w - 1)[..., None, :]]  # (B, T, K, S, S, C)
        pix = torch.where(mask[..., None], pix, torch.zeros((), dtype=pix.dtype, device=self.device))
        return pix.amax(2).permute(0, 1, 4, 2, 3).contiguous()  # pixel-wise max over objects


class VideoDataset:
    """Sequences for the training loop: ``images[idx]`` is uint8 ``(B, T, C, H, W)``.

    ``images`` is either an in-memory uint8 tensor ``(N, T, C, H, W)`` or a
    ``MovingObjects`` that renders on demand. ``labels`` stays ``None`` (a
    sequence holds several objects); ``object_labels`` ``(N, K)`` gives their
    classes. ``shape`` is one frame's ``(C, H, W)``: what the frame encoder sees.
    ``stills`` (optional) gives labelled still images on the same canvas, used
    by the k-NN monitor during pretraining.
    """

    def __init__(self, name, images, object_labels=None, classes=None, stills=None):
        self.name, self.images, self.object_labels = name, images, object_labels
        self.classes = list(classes or [])
        self.labels = None
        self.stills = stills
        if isinstance(images, torch.Tensor) and (images.dtype != torch.uint8 or images.ndim != 5):
            raise UnsupError(f"{name}: videos must be uint8 (N, T, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) == 0:
            raise UnsupError(f"{name}: the video set is empty")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def frames(self) -> int:
        return int(self.images.shape[1])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[2:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device) -> VideoDataset:
        ol = self.object_labels.to(device) if self.object_labels is not None else None
        return VideoDataset(self.name, self.images.to(device), ol, self.classes, self.stills)

    def subset(self, idx) -> VideoDataset:
        imgs = self.images.subset(idx) if isinstance(self.images, MovingObjects) else self.images[idx]
        ol = self.object_labels[idx] if self.object_labels is not None else None
        return VideoDataset(self.name, imgs, ol, self.classes, self.stills)

    def monitor_data(self) -> ImageDataset | None:
        """Labelled stills for the k-NN monitor (frames hold two objects, so no single label)."""
        return self.stills() if callable(self.stills) else None

    def batches(self, batch_size: int, limit: int | None = None):
        """Rendered uint8 batches in order (evaluation): never more than one batch in memory."""
        n = min(len(self), limit or len(self))
        for i in range(0, n, batch_size):
            yield self.images[slice(i, min(n, i + batch_size))]


# --- stills: objects placed on the canvas, for probing frame encoders -------

def place_on_canvas(ds: ImageDataset, size: int = SIZE, seed: int = 0, channels: int | None = None) -> ImageDataset:
    """Each image at a seeded random position on a ``size`` canvas, as objects sit in the videos."""
    c = ds.images.shape[1]
    if ds.images.shape[-1] > size or ds.images.shape[-2] > size:
        raise UnsupError(f"{ds.name}: images of {tuple(ds.images.shape[-2:])} do not fit a {size}x{size} canvas")
    mo = MovingObjects.draw(ds.images, len(ds), seed, num_objects=1, frames=1, size=size)
    mo.index = torch.arange(len(ds))[:, None]
    out = torch.cat([mo[slice(i, i + 4096)][:, 0] for i in range(0, len(ds), 4096)])
    if channels is not None and channels != c:
        if c != 1:
            raise UnsupError(f"{ds.name}: cannot turn {c}-channel images into {channels} channels")
        out = out.expand(-1, channels, -1, -1).contiguous()
    return ImageDataset(f"{ds.name}-on-{size}x{size}", out, ds.labels, ds.classes)


def _sklearn_digits_28(split: str) -> ImageDataset:
    """scikit-learn's 8x8 digits, upsampled to 28x28 (MNIST's size) with a 2-pixel border."""
    import torch.nn.functional as F

    ds = load("digits", split)
    x = F.interpolate(ds.images.float(), size=(24, 24), mode="bilinear", align_corners=False)
    x = F.pad(x, (2, 2, 2, 2)).clamp(0, 255).round().to(torch.uint8)
    return ImageDataset("digits-28", x, ds.labels, ds.classes)


OBJECT_SOURCES = {"moving-fashion-mnist": lambda s: load("fashion-mnist", s), "moving-digits": _sklearn_digits_28}


def moving(objects: ImageDataset, split: str, n: int | None = None, seed: int | None = None, name: str | None = None,
           classes: list[int] | None = None, **kw) -> VideoDataset:
    """Moving sequences of any labelled image set (optionally only some classes)."""
    pool = torch.arange(len(objects))
    if classes is not None:
        if objects.labels is None:
            raise UnsupError(f"{objects.name}: has no labels, so classes={classes} cannot be chosen")
        pool = pool[torch.isin(objects.labels, torch.as_tensor(classes))]
        if len(pool) == 0:
            raise UnsupError(f"{objects.name}: no images of classes {classes}")
    n = n or (TRAIN_SEQUENCES if split == "train" else TEST_SEQUENCES)
    mo = MovingObjects.draw(objects.images[pool], n, SEEDS.get(split, 3) if seed is None else seed, **kw)
    ol = objects.labels[pool][mo.index] if objects.labels is not None else None
    size = mo.size

    def stills():
        sub = objects.subset(pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(7))[:4000]])
        return place_on_canvas(sub, size, seed=11, channels=None)

    return VideoDataset(name or f"moving-{objects.name}", mo, ol, objects.classes, stills)


def _moving_loader(name: str):
    def loader(split: str) -> VideoDataset:
        return moving(OBJECT_SOURCES[name](split), split, name=name)
    return loader


for _name in OBJECT_SOURCES:
    LOADERS[_name] = _moving_loader(_name)


def _objects_for(video_name: str, split: str) -> ImageDataset:
    if video_name.startswith("moving:"):
        return load(video_name[len("moving:"):], split)
    return OBJECT_SOURCES.get(video_name, OBJECT_SOURCES["moving-fashion-mnist"])(split)


def still_source(video_name: str, split: str, size: int = SIZE, channels: int = 1) -> ImageDataset:
    """Labelled stills for probing a frame encoder trained on ``video_name``:
    the moving set's own objects, or Fashion-MNIST for users' videos."""
    return place_on_canvas(_objects_for(video_name, split), size, seed=SEEDS[split] + 100, channels=channels)


MOVING = {"fashion-mnist": "moving-fashion-mnist", "digits": "moving-digits"}


def video_name(data: str) -> str | None:
    """The video source a video method pretrains on when asked for ``data``,
    registering loaders for ``moving:<image set>`` and users' video paths;
    None when ``data`` names no video."""
    data = str(data)
    if data in MOVING:
        return MOVING[data]
    if data in OBJECT_SOURCES or (data in LOADERS and data.startswith("moving:")):
        return data
    if data.startswith("moving:"):  # moving sequences of any labelled image set (a name or a path)
        src = data[len("moving:"):]
        LOADERS[data] = lambda split, _s=src, _n=data: moving(load(_s, split), split, name=_n)
        return data
    if is_video_path(data):
        return register_video_path(data)
    return None


# --- users' video files --------------------------------------------------

VIDEO_KEYS = ("videos", "video", "sequences", "frames", "arr_0")


def _as_uint8(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.bool_) or not np.issubdtype(x.dtype, np.number):
        raise UnsupError(f"{where}: video values must be numbers, got dtype {x.dtype}")
    x = x.astype(np.float32)
    hi = float(np.nanmax(x)) if x.size else 0.0
    if not np.isfinite(x).all() or x.min() < 0 or hi > 255:
        raise UnsupError(f"{where}: video values must be in [0, 1] (floats) or [0, 255]; got [{x.min()}, {hi}]")
    return np.round(x * 255 if hi <= 1.0 else x).astype(np.uint8)


def video_array(x: np.ndarray, where: str, layout: str = "auto") -> np.ndarray:
    """An array of videos -> uint8 ``(N, T, C, H, W)``.

    Accepts ``(N, T, H, W)`` and ``(N, T, H, W, C)``; ``layout="TN"`` (or, with
    ``"auto"``, the public Moving MNIST shape ``(20, N, 64, 64)``, N >= 1000)
    reads time first.
    """
    if x.ndim not in (4, 5):
        raise UnsupError(f"{where}: a video array must have rank 4 (N, T, H, W) or 5 (N, T, H, W, C); got shape {x.shape}")
    if layout == "auto":
        layout = "TN" if (x.ndim == 4 and x.shape[0] == 20 and x.shape[1] >= 1000) else "NT"
    if layout not in ("NT", "TN"):
        raise UnsupError(f"{where}: unknown layout {layout!r}; choose auto, NT or TN")
    if layout == "TN":
        x = np.swapaxes(x, 0, 1)
    if x.ndim == 4:
        x = x[:, :, None]
    else:
        if x.shape[-1] not in (1, 3):
            raise UnsupError(f"{where}: the last axis of a rank-5 video array is channels (1 or 3); got shape {x.shape}")
        x = np.moveaxis(x, -1, 2)
    return np.ascontiguousarray(_as_uint8(x, where))


def read_video_file(path: str | Path, layout: str = "auto") -> tuple[np.ndarray, np.ndarray | None]:
    """``.npy`` or ``.npz`` -> (uint8 ``(N, T, C, H, W)``, object labels or None)."""
    path = Path(path)
    if not path.is_file():
        raise UnsupError(f"{path}: file not found")
    try:
        if path.suffix == ".npy":
            return video_array(np.load(path, allow_pickle=False), str(path), layout), None
        with np.load(path, allow_pickle=False) as z:
            keys = [k for k in VIDEO_KEYS if k in z.files] or [k for k in z.files if z[k].ndim in (4, 5)]
            if not keys:
                raise UnsupError(f"{path}: no video array (rank 4 or 5) found; arrays present: {z.files}; "
                                 f"store the videos under one of {', '.join(VIDEO_KEYS)}")
            if "layout" in z.files:
                layout = str(z["layout"])
            x = video_array(z[keys[0]], f"{path}[{keys[0]}]", layout)
            labels = np.asarray(z["labels"], dtype=np.int64) if "labels" in z.files else None
    except (OSError, ValueError, EOFError) as e:
        raise UnsupError(f"{path}: cannot read ({e}); expected a numpy .npy or .npz file") from None
    if labels is not None and len(labels) != len(x):
        raise UnsupError(f"{path}: {len(labels)} labels for {len(x)} sequences")
    return x, labels


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def read_frame_folders(root: str | Path) -> np.ndarray:
    """A folder with one sub-folder of frame images per sequence (frames in name
    order) -> uint8 ``(N, T, C, H, W)``; sequences are cut to the shortest."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    seqs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not seqs:
        raise UnsupError(f"{root}: expected one sub-folder of frame images per sequence; found none")
    videos, size, mode = [], None, None
    for seq in seqs:
        files = sorted(p for p in seq.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UnsupError(f"{seq}: no frame images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        frames = []
        for f in files:
            try:
                with Image.open(f) as im:
                    mode = mode or ("L" if im.mode in ("L", "1", "I", "I;16", "P") else "RGB")
                    a = np.asarray(im.convert(mode))
            except (UnidentifiedImageError, OSError) as e:
                raise UnsupError(f"{f}: cannot read the frame ({e})") from None
            if size is None:
                size = a.shape
            if a.shape != size:
                raise UnsupError(f"{f}: frame of size {a.shape[:2]} differs from the first frame's {size[:2]}; "
                                 "all frames must have the same size: resize them first")
            frames.append(a)
        videos.append(np.stack(frames))
    t = min(len(v) for v in videos)
    x = np.stack([v[:t] for v in videos])
    return video_array(x, str(root), "NT")


def check_length(data, needed: int, what: str) -> None:
    """One clear error for sequences shorter than a method needs."""
    if data.shape[1] < needed if isinstance(data, torch.Tensor) else data.frames < needed:
        have = data.shape[1] if isinstance(data, torch.Tensor) else data.frames
        name = getattr(data, "name", "the video")
        raise UnsupError(f"{name}: sequences have {have} frames but {what} needs at least {needed}; "
                         "use longer sequences or lower the context/future options")


HOLD_OUT = 0.2


def load_video_path(path: str | Path, split: str = "train", layout: str = "auto", min_frames: int = 2) -> VideoDataset:
    """A user's video file or folder; a fixed 80/20 train/test split of the sequences."""
    path = Path(path).expanduser()
    if path.is_dir():
        x, labels = read_frame_folders(path), None
    elif path.suffix in (".npy", ".npz"):
        x, labels = read_video_file(path, layout)
    else:
        raise UnsupError(f"{path}: not a video source; give an .npy/.npz array (N, T, H, W[, C]) or a folder of frame folders")
    if x.shape[1] < min_frames:
        raise UnsupError(f"{path}: sequences have {x.shape[1]} frames; at least {min_frames} are needed")
    n = len(x)
    if split != "unlabeled" and n >= 2:
        order = np.random.default_rng(0).permutation(n)
        cut = max(1, round(n * (1 - HOLD_OUT)))
        keep = order[:cut] if split == "train" else order[cut:]
        x = x[np.sort(keep)]
        labels = labels[np.sort(keep)] if labels is not None else None
    ol = torch.from_numpy(labels) if labels is not None else None
    if ol is not None and ol.ndim == 1:
        ol = ol[:, None]
    return VideoDataset(path.name, torch.from_numpy(x), ol)


def is_video_path(data: str) -> bool:
    p = Path(str(data)).expanduser()
    return p.suffix == ".npy" or (p.suffix == ".npz" and p.is_file()) or p.is_dir()


def register_video_path(data: str) -> str:
    """Make a user's video path loadable by name (``unsup.data.load(path)``)."""
    LOADERS[str(data)] = lambda split, _p=str(data): load_video_path(_p, split)
    return str(data)
