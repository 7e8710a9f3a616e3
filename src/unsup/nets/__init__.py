"""Backbones and the ``Encoder`` wrapper every method ends in.

An encoder maps float images in [0, 1], shape ``(B, C, H, W)``, to features
``(B, D)``; it carries its own input normalisation so a loaded encoder needs
nothing else.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from ..errors import UnsupError


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallConvNet(nn.Module):
    """A VGG-style convnet for 28x28 / 32x32 images, cheap enough for a CPU:
    three stages (32, 64, 128 channels by default), each two 3x3 convs with
    batch norm, max-pooled between stages, then global average pooling."""

    def __init__(self, in_channels: int = 1, width: int = 32, out_dim: int | None = None):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(in_channels, w), conv_bn(w, w), nn.MaxPool2d(2),
            conv_bn(w, 2 * w), conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            conv_bn(2 * w, 4 * w), conv_bn(4 * w, out_dim or 8 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = out_dim or 8 * w

    def forward(self, x):
        return self.pool(self.features(x)).flatten(1)


def resnet18_small(in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18 with the small-image stem (3x3 conv, stride 1,
    no max-pool) used by SimCLR for CIFAR; the classifier is removed."""
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.out_dim = 512
    return net


BACKBONES = {
    "small-convnet": lambda c: SmallConvNet(c),
    "resnet18": resnet18_small,
}
MIN_SIZE = {"small-convnet": 8, "resnet18": 8}


def build_backbone(name: str, in_channels: int) -> nn.Module:
    if name not in BACKBONES:
        raise UnsupError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name](in_channels)


class Encoder(nn.Module):
    """Normalise, then run a feature extractor; ``out_dim`` is D."""

    def __init__(self, net: nn.Module, in_channels: int, image_size: int, mean: float = 0.5, std: float = 0.25, out_dim: int | None = None):
        super().__init__()
        self.net = net
        self.in_channels = in_channels
        self.image_size = image_size
        self.register_buffer("mean", torch.full((1, in_channels, 1, 1), float(mean)))
        self.register_buffer("std", torch.full((1, in_channels, 1, 1), float(std)))
        self.out_dim = out_dim or net.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise UnsupError(f"encoder expects images (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.net((x - self.mean) / self.std)


def build_encoder(backbone: str, in_channels: int, image_size: int) -> Encoder:
    if image_size < MIN_SIZE.get(backbone, 1):
        raise UnsupError(f"images of {image_size}x{image_size} are too small for {backbone} (needs at least {MIN_SIZE[backbone]})")
    return Encoder(build_backbone(backbone, in_channels), in_channels, image_size)


def projection_mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2, last_bn: bool = False) -> nn.Sequential:
    """The MLP head of the joint-embedding papers: (Linear-BN-ReLU) x (layers-1), Linear."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        d = hidden
    mods.append(nn.Linear(d, out_dim, bias=not last_bn))
    if last_bn:
        mods.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*mods)
