"""Natural images for sparse coding and filter learning: the photographs that
scikit-image ships (camera, astronaut, coffee, chelsea, brick, grass, gravel,
...), converted to grey, halved in size (2x2 block means, which removes most
JPEG block artefacts and sensor noise) and cut into non-overlapping 32x32 tiles.

``natural-images``: the tiles, labelled by their source photograph (so a
probe has something to say), a fixed 80/20 train/test split.
``natural-noise``: the control with the same second-order statistics: each
tile keeps its Fourier amplitude spectrum with random phases, so whitening
leaves white Gaussian-like noise without edges or oriented structure.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UnsupError
from .datasets import LOADERS, ImageDataset

SOURCES = ("camera", "astronaut", "coffee", "chelsea", "brick", "grass", "gravel", "rocket", "coins", "moon", "clock",
           "stereo_motorcycle")
TILE = 32


def _grey(a: np.ndarray) -> np.ndarray:
    if a.ndim == 3:  # RGB(A) -> luminance (Rec. 601)
        a = a[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.clip(a, 0, 255).astype(np.uint8)


def natural_tiles(tile: int = TILE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(tiles uint8 (N, tile, tile), source index (N,), source names)."""
    try:
        import skimage.data as skd
    except ImportError:
        raise UnsupError("natural-images needs scikit-image; pip install scikit-image") from None
    tiles, labels, names = [], [], []
    for name in SOURCES:
        try:
            img = getattr(skd, name)()
        except Exception:  # noqa: BLE001 - an image missing from this scikit-image build is skipped
            continue
        img = _grey(img[0] if isinstance(img, tuple) else img).astype(np.float64)
        h2, w2 = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
        img = np.round(img[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2).mean((1, 3))).astype(np.uint8)
        h, w = (img.shape[0] // tile) * tile, (img.shape[1] // tile) * tile
        t = img[:h, :w].reshape(h // tile, tile, w // tile, tile).swapaxes(1, 2).reshape(-1, tile, tile)
        tiles.append(t)
        labels.append(np.full(len(t), len(names)))
        names.append(name)
    if not tiles:
        raise UnsupError("natural-images: none of the scikit-image photographs could be read; reinstall scikit-image")
    return np.concatenate(tiles), np.concatenate(labels), names


def _split(x: np.ndarray, y: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(0.8 * len(x))
    idx = order[:cut] if split == "train" else order[cut:]
    return x[idx], y[idx]


def _natural(split: str) -> ImageDataset:
    x, y, names = natural_tiles()
    x, y = _split(x, y, split)
    return ImageDataset("natural-images", torch.from_numpy(x[:, None].copy()), torch.from_numpy(y.astype(np.int64)), names)


def phase_randomised(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Same amplitude spectrum per image, uniformly random phases (a real image)."""
    rng = np.random.default_rng(seed)
    f = np.fft.fft2(x.astype(np.float64))
    noise_phase = np.angle(np.fft.fft2(rng.standard_normal(x.shape)))  # Hermitian-symmetric phases
    out = np.fft.ifft2(np.abs(f) * np.exp(1j * noise_phase)).real
    mean = x.mean((1, 2), keepdims=True)
    out = out - out.mean((1, 2), keepdims=True) + mean
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _natural_noise(split: str) -> ImageDataset:
    x, y, names = natural_tiles()
    x, y = _split(x, y, split)
    x = phase_randomised(x, seed=0 if split == "train" else 1)
    return ImageDataset("natural-noise", torch.from_numpy(x[:, None].copy()), torch.from_numpy(y.astype(np.int64)), names)


LOADERS["natural-images"] = _natural
LOADERS["natural-noise"] = _natural_noise
