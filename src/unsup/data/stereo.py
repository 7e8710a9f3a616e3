"""Stereo pairs with known disparity, for view synthesis (Deep3D).

Two sources:

* ``render_stereo``: scenes rendered batched on the device from any image
  dataset's objects. A textured background (a natural texture shipped with
  scikit-image, never the test pair) is a slanted plane that recedes upward,
  as ground planes and floors do (disparity grows towards the bottom), and
  dataset objects (their nonzero pixels, e.g. Fashion-MNIST clothes) stand on
  it at random places, at the plane's disparity where their foot is
  (``grounded``), or float in front of it at random depths. The plane's
  disparity spans most of the levels (its far edge anywhere in 0..0.6 of the
  top level), so texture alone does not say "far". With ``perspective`` an
  object's rendered size also grows with its disparity (nearer is bigger;
  off by default: on the Fashion-MNIST validation probe it made the encoder
  worse, see ``unsup.methods.pretext.stereo``). Each layer is warped by ``grid_sample``; the
  right view samples every layer ``d`` pixels further right (a point at
  disparity ``d`` on the right view's grid is seen at ``x + d`` in the left
  view), layers are composited far to near, and the disparity map on the
  right view's grid is composited the same way.
* ``motorcycle_pair``: the real Middlebury pair shipped as
  ``skimage.data.stereo_motorcycle`` with its ground-truth disparity, in
  grayscale and downscaled; held out for testing only.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UnsupError
from .augment import to_float

TEXTURES = ("brick", "grass", "gravel", "camera", "moon", "text", "page", "coins", "cell",
            "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


@lru_cache(maxsize=2)
def texture_bank(side: int = 192) -> torch.Tensor:
    """Grayscale natural textures from scikit-image, uint8 (K, 1, side, side)."""
    import skimage.data as sd
    from skimage.color import rgb2gray
    from skimage.transform import resize

    out = []
    for name in TEXTURES:
        try:
            im = getattr(sd, name)()
        except Exception:  # noqa: BLE001, S112 - a scikit-image build without that file: use the others
            continue
        im = rgb2gray(im[..., :3]) if im.ndim == 3 else im.astype(np.float64) / (255.0 if im.dtype == np.uint8 else 1.0)
        s = min(im.shape)
        im = im[(im.shape[0] - s) // 2 : (im.shape[0] - s) // 2 + s, (im.shape[1] - s) // 2 : (im.shape[1] - s) // 2 + s]
        out.append(np.round(resize(im, (side, side), anti_aliasing=True) * 255).clip(0, 255).astype(np.uint8))
    if not out:
        raise UnsupError("scikit-image ships none of its sample textures here; reinstall scikit-image (pip install scikit-image)")
    return torch.from_numpy(np.stack(out)[:, None])


def _pixel_grid(size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ar = torch.arange(size, device=device, dtype=torch.float32) + 0.5  # pixel centres
    return ar.view(1, 1, size).expand(1, size, size), ar.view(1, size, 1).expand(1, size, size)


def _sample(img: torch.Tensor, u: torch.Tensor, v: torch.Tensor, w: float, h: float, padding: str) -> torch.Tensor:
    """Read ``img`` (B, C, h, w) at continuous pixel coordinates (B, S, S)."""
    grid = torch.stack([2 * u / w - 1, 2 * v / h - 1], -1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def render_stereo(objects: torch.Tensor, textures: torch.Tensor, size: int = 48, levels: int = 16, n_objects: int = 2,
                  object_scale: tuple[float, float] = (0.8, 1.3), plain: float = 0.0,
                  grounded: bool = False, perspective: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scenes from ``objects`` (uint8 (B, C, h, w); each scene uses sample i and
    its ``n_objects - 1`` successors) over ``textures`` (uint8 (K, 1, T, T)).
    A fraction ``plain`` of the scenes get a black background instead of the
    texture (the objects' own dataset background; a flat plane carries no
    disparity signal, the objects still do). ``grounded``: each object's
    disparity is the plane's at its foot row (plus up to one pixel), else
    anywhere between that and the nearest level. ``perspective`` (p in [0, 1)):
    an object's rendered side grows with its disparity, by (1 - p) + 2 p d / top
    (top = levels - 1), as an object's image grows when it comes nearer; its
    foot row stays where it was drawn. 0: sizes independent of depth.
    Returns left, right (float (B, C, S, S) in [0, 1]) and the disparity on the
    right view's grid (B, 1, S, S), in pixels, within [0, levels - 1]."""
    b, c, oh, ow = objects.shape
    dev = objects.device
    if levels < 2:
        raise UnsupError(f"levels={levels}: stereo needs at least 2 disparity levels")
    if not 0 <= perspective < 1:
        raise UnsupError(f"perspective={perspective}: choose it in [0, 1) (0: object sizes independent of depth)")
    obj = to_float(objects)
    tex = to_float(textures.to(dev))
    xs, ys = _pixel_grid(size, dev)
    def u(*shape, lo=0.0, hi=1.0):
        return torch.rand(*shape, device=dev) * (hi - lo) + lo
    top = levels - 1
    # background: a random texture crop, a slanted plane with disparity d0 + slope * y / S
    t = tex[torch.randint(0, len(tex), (b,), device=dev)]
    if c != 1:
        t = t.expand(b, c, *t.shape[-2:])
    # the plane's level spans most of the range (0..0.6 top at its far edge, up to top at its near edge):
    # with 0..0.3 top, textures were always "far" and the trained network put the motorcycle pair's
    # near textured surfaces at 4 px (median) where the truth is 10 px
    d0, slope = u(b, 1, 1, hi=0.6 * top), u(b, 1, 1, hi=0.4 * top)
    zoom = u(b, 1, 1, lo=0.5, hi=1.5)
    ox, oy = u(b, 1, 1, hi=t.shape[-1] - size * 1.5), u(b, 1, 1, hi=t.shape[-2] - size * 1.5)
    contrast = u(b, 1, 1, 1, lo=0.5, hi=1.2)
    bg_disp = d0 + slope * ys / size
    # 0: a black background, as in the objects' own images (no draw when plain = 0: the same scenes as before)
    textured = (u(b, 1, 1, 1) >= plain).float() if plain > 0 else 1.0
    views, disps = [], []
    for shift in (torch.zeros_like(bg_disp), bg_disp):  # left, right
        bg = _sample(t, ox + (xs + shift) * zoom, oy + ys * zoom, t.shape[-1], t.shape[-2], "reflection")
        views.append(((bg - 0.5) * contrast + 0.5) * textured)
        disps.append(bg_disp.unsqueeze(1).clone())
    # objects: each in front of the background where it stands (grounded: on it, at its foot row's disparity),
    # composited far to near
    depth = u(b, n_objects)
    side = u(b, n_objects, lo=object_scale[0] * oh, hi=object_scale[1] * oh)
    px, py = u(b, n_objects, lo=-0.2, hi=0.8) * size, u(b, n_objects, lo=-0.1, hi=0.7) * size
    foot = d0.view(b, 1) + slope.view(b, 1) * ((py + side) / size).clamp(max=1)
    if grounded:
        d = (foot + depth).clamp(max=top)  # standing on the plane: within a pixel of its disparity at the foot row
    else:
        d = (foot + 1 + depth * (top - foot - 1).clamp(min=0)).clamp(max=top)
    if perspective > 0:  # nearer is bigger; the foot row (hence a grounded object's disparity) is kept
        grown = side * ((1 - perspective) + 2 * perspective * d / top)
        py, side = py + side - grown, grown
    order = d.argsort(1)
    rows = torch.arange(b, device=dev)
    for r in range(n_objects):
        k = order[:, r]
        o = obj[(rows + k) % b]  # scene i uses sample i and its successors
        s_, x_, y_ = (v[rows, k].view(b, 1, 1) for v in (side, px, py))
        dk = d[rows, k].view(b, 1, 1)
        gain = u(b, 1, 1, 1, lo=0.7, hi=1.3)
        for i, shift in enumerate((torch.zeros_like(dk), dk)):
            patch = _sample(o, (xs + shift - x_) / s_ * ow, (ys - y_) / s_ * oh, ow, oh, "zeros")
            alpha = (patch.mean(1, keepdim=True) * 20).clamp(0, 1)  # the object's nonzero pixels
            views[i] = views[i] * (1 - alpha) + alpha * (patch * gain).clamp(0, 1)
            disps[i] = disps[i] * (1 - alpha) + alpha * dk.unsqueeze(1)
    return views[0].clamp(0, 1), views[1].clamp(0, 1), disps[1]


def check_pair(left: torch.Tensor, right: torch.Tensor, disparity: torch.Tensor | None = None) -> None:
    """A stereo pair must have one size (and its disparity map too)."""
    if left.shape != right.shape:
        raise UnsupError(f"stereo pair of different sizes: left {tuple(left.shape)} vs right {tuple(right.shape)}; "
                         "rectify and crop both views to one size")
    if disparity is not None and disparity.shape[-2:] != left.shape[-2:]:
        raise UnsupError(f"disparity map {tuple(disparity.shape[-2:])} does not match the views {tuple(left.shape[-2:])}")


def motorcycle_pair(scale: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """skimage's Middlebury motorcycle pair, grayscale, downscaled by ``scale``:
    left, right float (1, 1, H, W) in [0, 1] and the left view's disparity
    (1, 1, H, W) in (downscaled) pixels, NaN where unknown."""
    import skimage.data as sd
    from skimage.color import rgb2gray
    from skimage.transform import resize

    left, right, disp = sd.stereo_motorcycle()
    h, w = (left.shape[0] // scale) * scale, (left.shape[1] // scale) * scale
    left, right, disp = left[:h, :w], right[:h, :w], disp[:h, :w].astype(np.float64)
    size = (h // scale, w // scale)
    lg = resize(rgb2gray(left), size, anti_aliasing=True)
    rg = resize(rgb2gray(right), size, anti_aliasing=True)
    disp[~np.isfinite(disp)] = np.nan
    blocks = disp.reshape(size[0], scale, size[1], scale).transpose(0, 2, 1, 3).reshape(*size, scale * scale)
    valid = np.isfinite(blocks).mean(-1) >= 0.5
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks: unknown disparity
        d = np.where(valid, np.nanmedian(np.where(np.isfinite(blocks), blocks, np.nan), -1), np.nan) / scale
    def as_t(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return as_t(lg), as_t(rg), as_t(d)


def right_grid_disparity(disp_left: torch.Tensor) -> torch.Tensor:
    """Move a left-view disparity map (1, 1, H, W) to the right view's grid:
    a left pixel x with disparity d is seen at x - d in the right view; where
    several land on one pixel the nearest (largest d) wins; NaN where none."""
    _, _, h, w = disp_left.shape
    d = disp_left[0, 0]
    ok = torch.isfinite(d)
    xs = torch.arange(w, dtype=torch.float32).expand(h, w)
    xr = torch.round(xs - torch.nan_to_num(d)).long()
    ok &= (xr >= 0) & (xr < w)
    rows = torch.arange(h).view(h, 1).expand(h, w)
    flat = torch.full((h * w,), float("-inf"))
    flat.scatter_reduce_(0, (rows * w + xr)[ok], d[ok], reduce="amax")
    out = flat.view(h, w)
    return torch.where(torch.isfinite(out), out, torch.full_like(out, float("nan")))[None, None]
