"""A cheap frame encoder and decoder for 64x64 video frames.

``FrameConvNet`` halves the resolution three times with strided convs (a
5x5 then 3x3s: 64 -> 32 -> 16 -> 8 for 64x64 frames), keeping the spatial map for the video
models (motion needs positions) and giving global average + max pooled
features to the probe. It is the ``frame-convnet`` backbone of
``unsup.nets.BACKBONES``, so the supervised reference can build the same network.
"""

from __future__ import annotations

import torch
from torch import nn

from . import conv_bn


class FrameConvNet(nn.Module):
    def __init__(self, in_channels: int = 1, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 5, 2, 2, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            conv_bn(w, 2 * w, 2), conv_bn(2 * w, 4 * w, 2), conv_bn(4 * w, 4 * w),
        )
        self.map_channels = 4 * w
        self.out_dim = 8 * w

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.features(x)
        return torch.cat([m.mean((2, 3)), m.amax((2, 3))], 1)



def feature_map(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The spatial map (B, C, h, w) under an ``Encoder``'s pooled output."""
    m = encoder.forward_features(x)
    if m.ndim != 4:
        raise TypeError(f"{type(encoder.net).__name__} has no spatial feature map; use the frame-convnet or small-convnet backbone")
    return m


class FrameDecoder(nn.Module):
    """A vector -> frame logits: linear to a (w, s/8, s/8) map, three stride-2
    transposed convs (8 -> 16 -> 32 -> 64 for 64x64 frames)."""

    def __init__(self, in_dim: int, channels: int, size: int, width: int = 32):
        super().__init__()
        self.s0, self.width = size // 8, width
        self.fc = nn.Linear(in_dim, width * self.s0 * self.s0)
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width // 2, width // 4, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width // 4, channels, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(len(z), self.width, self.s0, self.s0))
