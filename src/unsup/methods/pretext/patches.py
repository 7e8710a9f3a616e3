"""Batched patch geometry shared by the patch-based pretext tasks.

Everything works on a whole batch at once: a random crop-and-resize is one
``affine_grid`` + ``grid_sample``; patches at per-sample, per-patch positions
are read with one advanced-indexing gather; no Python loop over samples.

The papers' geometry is given as fractions of the (resized) image side, so the
same proportions apply to a 28x28 image resized to 48 and to a 96x96 STL-10
image; ``working_size`` says which side the images are resized to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UnsupError
from ...nets import GridMeans

AUTO_SIZE = 48  # 28x28 images are resized to this side before patches are cut


def working_size(size: int, image_size: int, auto: int = AUTO_SIZE) -> int:
    """The side images are resized to: ``size``, or 0 = auto (max(auto, native))."""
    if size < 0:
        raise UnsupError(f"size={size}: the working image side must be >= 0 (0 = auto)")
    return size or max(auto, image_size)


def require_fit(method: str, need: int, size: int, what: str, fix: str) -> None:
    """Refuse a geometry that does not fit, naming the sizes."""
    if need > size:
        raise UnsupError(f"{method}: {what} needs {need}x{need} pixels but the working image is {size}x{size}; {fix}")


def crop_resize(x: torch.Tensor, size: int, crop_frac: float = 1.0, crop_min: float = 0.0) -> torch.Tensor:
    """Per-sample random square crop of side ``crop_frac`` of the image,
    resized to ``size`` x ``size`` (bilinear); float in, float out. With
    ``crop_min > 0`` each image's crop side is drawn uniformly in
    ``[crop_min, crop_frac]`` instead (then placed at random as before)."""
    b = x.shape[0]
    dev = x.device
    side = torch.full((b, 1), float(crop_frac), device=dev, dtype=x.dtype)
    if crop_min > 0:
        side = crop_min + torch.rand(b, 1, device=dev, dtype=x.dtype) * (side - crop_min)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = side[:, 0]
    theta[:, :, 2] = (torch.rand(b, 2, device=dev, dtype=x.dtype) * 2 - 1) * (1 - side)
    grid = F.affine_grid(theta, (b, x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def gather_patches(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Patches of side ``size`` with top-left corners ``(top, left)``, both
    ``(B, K)`` integer tensors: ``(B, C, H, W)`` -> ``(B, K, C, size, size)``."""
    b, _k = top.shape
    ar = torch.arange(size, device=x.device)
    rows = (top[..., None] + ar)[:, :, :, None]  # (B, K, s, 1)
    cols = (left[..., None] + ar)[:, :, None, :]  # (B, K, 1, s)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    out = x.permute(0, 2, 3, 1)[bi, rows, cols]  # (B, K, s, s, C)
    return out.permute(0, 1, 4, 2, 3)


def normalise_patches(p: torch.Tensor, eps: float = 0.05) -> torch.Tensor:
    """Per-patch mean and std normalisation (against low-level cues such as
    brightness shared by neighbouring patches), mapped back to mean 0.5 and
    std 0.25 so that the encoder's own (x - 0.5) / 0.25 makes it zero-mean,
    unit-std."""
    dims = tuple(range(p.ndim - 3, p.ndim))
    mu = p.mean(dims, keepdim=True)
    sd = p.std(dims, keepdim=True)
    return (p - mu) / (sd + eps) * 0.25 + 0.5


# the 8 neighbours of the centre cell of a 3x3 grid, in reading order (row, col)
NEIGHBOURS = torch.tensor([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])


class PairGeometry:
    """Doersch et al.'s layout: a centre patch and one of its 8 neighbours,
    patch side ``p``, a gap between them and a random jitter of each patch,
    all as fractions of the patch side.

    ``free=True`` (how Doersch et al. sample; context's default): only the
    pair has to fit, so the first patch is anywhere the chosen neighbour still
    fits. ``free=False``: the whole 3x3 layout is placed at a random position
    inside the working image; on a canvas it nearly fills (3 patches of 0.23
    of the side, half-patch gaps: 1 pixel of slack at 48x48) the first patch
    is always the image centre and the second one of 8 fixed places."""

    def __init__(self, method: str, size: int, patch_frac: float, gap_frac: float, jitter_frac: float, free: bool = False):
        self.size = size
        self.free = free
        self.patch = max(1, round(patch_frac * size))
        self.gap = round(gap_frac * self.patch)
        self.jitter = round(jitter_frac * self.patch)
        self.step = self.patch + self.gap  # centre-to-centre distance of neighbouring cells
        cells = 2 if free else 3
        self.span = cells * self.patch + (cells - 1) * self.gap + 2 * self.jitter
        what = "a pair" if free else "a 3x3 layout"
        require_fit(method, self.span, size, f"{what} of {self.patch}-pixel patches with gap {self.gap} and jitter {self.jitter}",
                    "lower patch_frac / gap_frac / jitter_frac or raise size")

    def sample(self, b: int, device, which: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-left corners ``(B, 2)`` of the centre and the neighbour patch,
        and which neighbour (0..7) each sample got."""
        if which is None:
            which = torch.randint(0, 8, (b,), device=device)
        j = self.jitter
        offset = NEIGHBOURS.to(device)[which] * self.step  # (B, 2): neighbour minus centre
        if self.free:  # the centre anywhere that keeps both jittered patches inside the image
            lo = j + (-offset).clamp(min=0)
            hi = self.size - self.patch - j - offset.clamp(min=0)
            centre = lo + (torch.rand(b, 2, device=device) * (hi - lo + 1)).long().clamp(max=hi - lo)
        else:
            slack = self.size - self.span
            origin = torch.randint(0, slack + 1, (b, 2), device=device) + j  # top-left cell of the layout
            centre = origin + self.step
        jit = torch.randint(-j, j + 1, (2, b, 2), device=device) if j > 0 else torch.zeros(2, b, 2, dtype=torch.long, device=device)
        nb = centre + offset
        return centre + jit[0], nb + jit[1], which


class AtWorkingScale(nn.Module):
    """Resize whole images (the native side) to the working side before the
    backbone, so the probed encoder sees objects at the scale its filters were
    trained at on patches; patches (any other side) pass unchanged."""

    def __init__(self, net: nn.Module, native: int, working: int):
        super().__init__()
        self.net, self.native, self.working = net, native, working
        self.out_dim = net.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.native and self.native != self.working:
            x = F.interpolate(x, size=(self.working, self.working), mode="bilinear", align_corners=False)
        return self.net(x)


def patch_encoder(method) -> nn.Module:
    """The shared backbone as a patch encoder (see ``AtWorkingScale``)."""
    enc = method.make_encoder()
    if getattr(method.cfg, "probe_at_working_scale", False):
        enc.net = AtWorkingScale(enc.net, method.shape[1], method.size)
    return enc


def _last_pool(encoder: nn.Module) -> nn.Module:
    pools = [m for m in encoder.modules() if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, GridMeans))]
    if not pools:
        raise UnsupError(f"{type(encoder).__name__}: no global pooling layer to read the spatial feature map from")
    return pools[-1]


def spatial_map(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The encoder's feature map just before its global pooling, ``(B, D, h, w)``
    (read with a temporary hook on the last pooling layer; the pooled output is
    computed too and discarded)."""
    seen: list[torch.Tensor] = []
    handle = _last_pool(encoder).register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        encoder(x)
    finally:
        handle.remove()
    return seen[-1]


def optional_patch_fc(method, units: int, patch: int, option: str) -> PatchFC | None:
    """A ``PatchFC`` of ``units`` on ``patch``-pixel patches of ``method``'s encoder, or None for 0 (pooled features)."""
    if units < 0:
        raise UnsupError(f"{method.name}: {option}={units} must be >= 0 (0 = the pooled features, no per-patch fc)")
    return PatchFC(method.encoder, method.shape[0], patch, units) if units else None


def patch_features(encoder: nn.Module, fc: PatchFC | None, patches: torch.Tensor) -> torch.Tensor:
    """Per-patch features for the head: through the per-patch fc when there is one, else pooled."""
    return fc(encoder, patches) if fc is not None else encoder(patches)


class PatchFC(nn.Module):
    """The papers' per-patch fully connected layer (Noroozi & Favaro's fc6, the
    top of each siamese branch in Doersch et al. and Isola et al.) on the shared
    encoder's unpooled map of one patch: the spatial layout inside the patch
    reaches the head through this layer's weights, so the convolutional
    features need not encode it themselves (through zero-padding borders,
    which whole images at probe time do not have). Shape: patches
    ``(N, C, p, p)`` -> ``(N, out_dim)``; only the encoder (convs + global
    pooling) is probed."""

    def __init__(self, encoder: nn.Module, in_channels: int, patch: int, out_dim: int):
        super().__init__()
        was = encoder.training
        encoder.eval()
        with torch.no_grad():
            d = spatial_map(encoder, torch.zeros(1, in_channels, patch, patch)).flatten(1).shape[1]
        encoder.train(was)
        self.fc = nn.Sequential(nn.Linear(d, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True))
        self.out_dim = out_dim

    def forward(self, encoder: nn.Module, patches: torch.Tensor) -> torch.Tensor:
        return self.fc(spatial_map(encoder, patches).flatten(1))
