"""Frozen features: run an encoder over uint8 images in batches, no gradients."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..data.augment import to_float


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An inference copy with each BatchNorm2d that directly follows a Conv2d
    folded into that conv (same outputs up to rounding; one pass over each
    feature map fewer). Pairs inside a Sequential are folded in place; when
    batch norms remain (a torchvision ResNet block calls conv1 and bn1 from its
    own forward) the copy is traced with torch.fx and fused there, and kept
    unfused if it cannot be traced. The module itself is not changed."""
    module = copy.deepcopy(module).eval()
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d) and seq[i + 1].track_running_stats:
                seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), nn.Identity()
    return _fuse_traced(module) if _has_batchnorm(module) else module


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) and m.track_running_stats for m in module.modules())


def _fuse_traced(module: nn.Module) -> nn.Module:
    """``module`` traced by torch.fx with its conv-bn pairs fused; a module that cannot be traced (e.g. a
    wrapper that checks its input's shape) keeps its forward and has its children fused instead."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(module)
    except Exception:  # noqa: BLE001 - not traceable: data-dependent control flow
        pass
    for name, child in module.named_children():
        if _has_batchnorm(child):
            setattr(module, name, _fuse_traced(child))
    return module


@torch.no_grad()
def extract_features(encoder: nn.Module, images: torch.Tensor, device=None, batch_size: int | None = None,
                     progress=None, keep_on_device: bool = False) -> torch.Tensor:
    """``(N, C, H, W)`` uint8 -> ``(N, D)`` float32 on the CPU, or, with
    ``keep_on_device``, on the device that computed them (the probe's k-NN and
    linear fits run there: no round trip through the host); ``progress``, a
    tqdm bar, advances by the images done."""
    device = torch.device(device) if device is not None else next(encoder.parameters(), torch.empty(0)).device
    # on a CPU, batches of 256 stay in cache (measured 1.4x faster than 1024 for the small convnet)
    batch_size = batch_size or (1024 if device.type == "cuda" else 256)
    # channels_last weights: the convs take the faster NHWC kernels (measured 1.4x on the CPU for the small convnet)
    net = fold_batchnorm(encoder).to(device).to(memory_format=torch.channels_last)
    out = []
    for i in range(0, len(images), batch_size):
        x = to_float(images[i : i + batch_size].to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            f = net(x).float().flatten(1)
            out.append(f if keep_on_device else f.cpu())
        if progress is not None:
            progress.update(len(x))
    return torch.cat(out)


def raw_pixels(images: torch.Tensor) -> torch.Tensor:
    """The raw-pixel reference: flattened pixels in [0, 1]."""
    return to_float(images).flatten(1)
