"""Batched augmentation on the device: every sample gets its own random
parameters, with no Python loop over samples.

Random resized crop and flip are one affine warp (``affine_grid`` +
``grid_sample``); blur is a per-sample Gaussian applied as a grouped
convolution; brightness, contrast and noise are per-sample tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5  # probability of a horizontal flip
    brightness: float = 0.4  # factor drawn from [1-b, 1+b]
    contrast: float = 0.4
    jitter_prob: float = 0.8
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise_std: float = 0.0  # additive Gaussian noise, std drawn from [0, noise_std]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1]; floats pass through."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def _uniform(n: int, lo: float, hi: float, device) -> torch.Tensor:
    return torch.rand(n, device=device) * (hi - lo) + lo


def random_resized_crop(x: torch.Tensor, scale, ratio, flip: float, out_size: int | None = None) -> torch.Tensor:
    """Per-sample crop of area fraction ``scale`` and aspect ``ratio``, resized
    back to ``out_size`` (default: the input size), optionally mirrored."""
    b, c, h, w = x.shape
    dev = x.device
    area = _uniform(b, *scale, dev)
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), dev)
    r = torch.exp(log_r) * (h / w)  # pixel aspect -> aspect in image fractions
    cw = torch.sqrt(area * r)  # crop width as a fraction of the image
    ch = torch.sqrt(area / r)
    # a crop too wide or too tall for the image keeps its area, not its aspect
    wide, tall = cw > 1, ch > 1  # never both: cw * ch = area <= 1
    cw, ch = torch.where(wide, 1.0, torch.where(tall, area, cw)), torch.where(tall, 1.0, torch.where(wide, area, ch))
    tx = (torch.rand(b, device=dev) * 2 - 1) * (1 - cw)
    ty = (torch.rand(b, device=dev) * 2 - 1) * (1 - ch)
    sign = torch.where(torch.rand(b, device=dev) < flip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = cw * sign
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = ch
    theta[:, 1, 2] = ty
    size = out_size or h
    grid = F.affine_grid(theta, (b, c, size, size if out_size else w), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur sample i with its own ``sigma[i]`` (separable, grouped conv)."""
    b, c, h, w = x.shape
    k = max(3, 2 * math.ceil(2 * float(sigma.max())) + 1)
    k = max(1, min(k, 2 * ((min(h, w) - 1) // 2) + 1))  # odd, and the reflect pad stays below the image size
    pos = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kern = torch.exp(-(pos[None] ** 2) / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, k)
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), kern[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), kern[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def color_jitter(x: torch.Tensor, brightness: float, contrast: float, prob: float) -> torch.Tensor:
    b = x.shape[0]
    dev = x.device
    on = (torch.rand(b, 1, 1, 1, device=dev) < prob).float()
    bf = 1 + on * _uniform(b, -brightness, brightness, dev).view(b, 1, 1, 1)
    cf = 1 + on * _uniform(b, -contrast, contrast, dev).view(b, 1, 1, 1)
    x = x * bf
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * cf + mean).clamp_(0, 1)


def augment(images: torch.Tensor, cfg: AugmentConfig | None = None, out_size: int | None = None) -> torch.Tensor:
    """One random view of each image: uint8 or float in, float [0, 1] out."""
    cfg = cfg or AugmentConfig()
    x = to_float(images)
    x = random_resized_crop(x, cfg.crop_scale, cfg.crop_ratio, cfg.flip, out_size)
    if cfg.brightness or cfg.contrast:
        x = color_jitter(x, cfg.brightness, cfg.contrast, cfg.jitter_prob)
    if cfg.blur_prob > 0:
        b = x.shape[0]
        sigma = _uniform(b, *cfg.blur_sigma, x.device)
        sigma = torch.where(torch.rand(b, device=x.device) < cfg.blur_prob, sigma, torch.full_like(sigma, 1e-3))
        x = gaussian_blur(x, sigma)
    if cfg.noise_std > 0:
        std = torch.rand(x.shape[0], 1, 1, 1, device=x.device) * cfg.noise_std
        x = (x + torch.randn_like(x) * std).clamp_(0, 1)
    return x
