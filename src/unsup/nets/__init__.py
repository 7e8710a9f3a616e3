"""Backbones and the ``Encoder`` wrapper every method ends in.

An encoder maps float images in [0, 1], shape ``(B, C, H, W)``, to features
``(B, D)``; it carries its own input normalisation so a loaded encoder needs
nothing else.

A backbone is made by a factory in ``BACKBONES``, the one table of them:
``factory(in_channels, image_size, **options)`` returns a module with an
integer ``out_dim``, a pooled ``forward`` (``(B, D)``) and ``forward_features``
(the spatial map ``(B, C', h, w)`` of a convnet, the token sequence
``(B, T, D)`` of a ViT; prednet, whose features pool several recurrent
layers, has none). Options are the factory's keyword arguments; a run
records them (``backbone_options``) and ``backbone_options()`` gives the ones
that differ from the defaults, which key the cached supervised reference.
"""

from __future__ import annotations

import inspect

import torch
import torchvision
from torch import nn

from ..errors import UnsupError


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _whole(name: str, value, what: str = "") -> None:
    """Refuse, in one line, an option that must be a positive whole number."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UnsupError(f"{name} must be a whole number >= 1{what}; got {value!r}")


def _region_weights(size: int, grid: int, like: torch.Tensor) -> torch.Tensor:
    """(grid, size): row i averages positions floor(i * size / grid) to
    ceil((i + 1) * size / grid) - 1, the regions of ``AdaptiveAvgPool2d``;
    built on ``like``'s device (no host copy)."""
    i = torch.arange(grid, device=like.device)[:, None]
    pos = torch.arange(size, device=like.device)
    inside = (pos >= i * size // grid) & (pos < ((i + 1) * size + grid - 1) // grid)
    return (inside / inside.sum(1, keepdim=True)).to(like.dtype)


class _Grid(nn.Module):
    """A statistic of each region of a ``grid`` x ``grid`` layout, as a (B, C, grid, grid) map."""

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid

    def extra_repr(self) -> str:
        return f"grid={self.grid}"


class GridMeans(_Grid):
    """``AdaptiveAvgPool2d(grid)`` computed as one matmul with the regions'
    averaging weights: the same regions and values, and exportable to ONNX
    when the grid does not divide the map (torch's pooling is not). Forward and
    backward of 128 maps of 7x7x256 over a 3x3 grid, one thread of the 2-core
    CPU: 2.4 ms against 7.6 ms."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = self.grid
        rows, cols = _region_weights(h, g, x), _region_weights(w, g, x)
        weights = (rows[:, None, :, None] * cols[None, :, None, :]).reshape(g * g, h * w)
        # (B, h*w, C) is a view of a channels_last map: the matmul reads it in place
        pooled = torch.matmul(weights, x.permute(0, 2, 3, 1).reshape(b, h * w, c))
        return pooled.view(b, g, g, c).permute(0, 3, 1, 2)


def _regions(size: int, grid: int) -> list[tuple[int, int]]:
    """The (start, stop) of each of ``grid`` regions along ``size`` positions, as ``_region_weights`` draws them."""
    return [(i * size // grid, ((i + 1) * size + grid - 1) // grid) for i in range(grid)]


class GridMaxes(_Grid):
    """The maximum over each region of ``GridMeans``'s grid: torch's adaptive
    max pooling, and in an ONNX export the same maxima by slices (over rows,
    then over columns), which export for any grid (the pooling does not when
    the grid does not divide the map). The slices are slower: forward and
    backward of 128 maps of 28x28x32, 20 ms against 3 ms on the 2-core CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            return nn.functional.adaptive_max_pool2d(x, self.grid)
        _, _, h, w = x.shape
        rows = torch.stack([x[:, :, a:b].amax(2) for a, b in _regions(h, self.grid)], 2)  # (B, C, grid, W)
        return torch.stack([rows[..., a:b].amax(3) for a, b in _regions(w, self.grid)], 3)


class GridMeansAndMaxes(nn.Module):
    """Each region's mean and maximum, as ``2C`` channels (the means first)."""

    def __init__(self, grid: int):
        super().__init__()
        self.means, self.maxes = GridMeans(grid), GridMaxes(grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.means(x), self.maxes(x)], 1)


GRID_STATISTICS = ("mean", "mean-max")


class GridPooled(nn.Module):
    """A convnet read out by average pooling over a ``pool_grid`` x
    ``pool_grid`` grid of regions, their averages concatenated (1: global
    average pooling); subclasses set ``features``."""

    def read_out(self, channels: int, pool_grid: int, statistics: str = "mean") -> None:
        _whole("pool_grid", pool_grid, what=" (1: global average pooling)")
        if statistics not in GRID_STATISTICS:
            raise UnsupError(f"grid_statistics must be one of {', '.join(GRID_STATISTICS)}; got {statistics!r}")
        if statistics == "mean-max":
            self.pool, channels = GridMeansAndMaxes(pool_grid), 2 * channels
        else:
            # a grid by matmul (GridMeans); the global mean stays torch's pooling, fast already and part of the
            # shipped references' key
            self.pool = nn.AdaptiveAvgPool2d(1) if pool_grid == 1 else GridMeans(pool_grid)
        self.out_dim = channels * pool_grid**2

    def forward_features(self, x):
        return self.features(x)

    def forward(self, x):
        return self.pool(self.features(x)).flatten(1)


READ_OUTS = ("last", "every-conv")


class SmallConvNet(GridPooled):
    """A VGG-style convnet for 28x28 / 32x32 images, cheap enough for a CPU:
    three stages (32, 64, 128 channels by default), each two 3x3 convs with
    batch norm, max-pooled between stages, the last conv giving ``out_dim``
    channels (the factory's ``out_channels``; default 8 x width = 256), read
    out globally by default or over a grid, the spatial read-out Coates et al.
    probe k-means features with (their quadrants: 2). ``read_out="every-conv"``
    pools every conv's map over that grid and concatenates them, the
    multi-layer read-out Exemplar-CNN (Dosovitskiy et al. 2014) probes its
    network with; ``forward_features`` stays the last map.
    ``grid_statistics="mean-max"`` reads each region's maximum beside its
    mean (twice the features): the spatial pyramid's max pooling (Yang et
    al. 2009) with the grid's averages kept."""

    def __init__(self, in_channels: int = 1, width: int = 32, out_dim: int | None = None, pool_grid: int = 1,
                 read_out: str = "last", grid_statistics: str = "mean"):
        super().__init__()
        w = width
        if out_dim is not None:
            _whole("out_channels", out_dim, what=" (the last conv's channels)")
        if read_out not in READ_OUTS:
            raise UnsupError(f"read_out must be one of {', '.join(READ_OUTS)}; got {read_out!r}")
        self.features = nn.Sequential(
            conv_bn(in_channels, w), conv_bn(w, w), nn.MaxPool2d(2),
            conv_bn(w, 2 * w), conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            conv_bn(2 * w, 4 * w), conv_bn(4 * w, out_dim or 8 * w),
        )
        self.every_conv = read_out == "every-conv"
        convs = [block[0].out_channels for block in self.features if isinstance(block, nn.Sequential)]
        self.read_out(sum(convs) if self.every_conv else convs[-1], pool_grid, grid_statistics)

    def extra_repr(self) -> str:
        # in the repr that keys the cached random-encoder reference: the read-outs' weights are the same
        return "read_out='every-conv'" if self.every_conv else ""

    def forward(self, x):
        if not self.every_conv:
            return super().forward(x)
        pooled = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.Sequential):  # a conv block (conv, batch norm, ReLU)
                pooled.append(self.pool(x).flatten(1))
        return torch.cat(pooled, 1)


class SingleLayerNet(GridPooled):
    """The single-layer network of Coates, Lee & Ng, "An Analysis of
    Single-Layer Networks in Unsupervised Feature Learning", AISTATS 2011, as
    a backbone any method can train: ``filters`` receptive fields of
    ``patch_size`` px applied at stride 1 (no padding), batch norm and ReLU,
    read out over a 3x3 grid by default (their quadrants: 2; 3 as the
    ``kmeans`` method's default). Many filters at full
    resolution with a spatial read-out is what makes their k-means features
    strong on small images; here the filters are learned by the method's loss
    instead of by k-means on whitened patches."""

    def __init__(self, in_channels: int = 1, filters: int = 512, patch_size: int = 6, pool_grid: int = 3):
        super().__init__()
        _whole("filters", filters)
        _whole("patch_size", patch_size)
        self.features = conv_bn(in_channels, filters, kernel=patch_size, padding=0)
        self.read_out(filters, pool_grid)


class SmallStemResNet(torchvision.models.ResNet):
    """torchvision's ResNet-18 with the small-image stem (3x3 conv, stride 1,
    no max-pool) used by SimCLR for CIFAR; the classifier is removed. Its
    tensors are named as in ``torchvision.models.resnet18()``."""

    def __init__(self, in_channels: int = 3):
        super().__init__(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2])
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.maxpool = nn.Identity()
        self.fc = nn.Identity()
        self.out_dim = 512

    def forward_features(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# --- the factories: (in_channels, image_size, **options) -> backbone --------
def small_convnet(in_channels: int, image_size: int, width: int = 32, pool_grid: int = 1,
                  out_channels: int | None = None, read_out: str = "last", grid_statistics: str = "mean") -> SmallConvNet:
    return SmallConvNet(in_channels, width, out_channels, pool_grid, read_out, grid_statistics)


def single_layer(in_channels: int, image_size: int, filters: int = 512, patch_size: int = 6,
                 pool_grid: int = 3) -> SingleLayerNet:
    if isinstance(patch_size, int) and patch_size > image_size:
        raise UnsupError(f"patch_size {patch_size} is larger than the {image_size}x{image_size} images")
    return SingleLayerNet(in_channels, filters, patch_size, pool_grid)


def resnet18_small(in_channels: int, image_size: int) -> SmallStemResNet:
    return SmallStemResNet(in_channels)


def vit_tiny(in_channels: int, image_size: int, patch_size: int | None = None, depth: int = 12, embed_dim: int = 192,
             num_heads: int = 3, pool: str = "token", pos_embed: str = "sincos", dynamic_size: bool = False) -> nn.Module:
    from .vit import ViT  # timm is imported only by runs that use a ViT

    return ViT(in_channels, image_size, patch_size, depth, embed_dim, num_heads, pool, pos_embed, dynamic_size)


def frame_convnet(in_channels: int, image_size: int, width: int = 16) -> nn.Module:
    from .frames import FrameConvNet  # frames.py imports conv_bn from here

    return FrameConvNet(in_channels, width)


def prednet(in_channels: int, image_size: int) -> nn.Module:
    # the network of the prednet method, by name, so its supervised reference can build it
    from ..methods.video.prednet import prednet_features

    return prednet_features(in_channels)


BACKBONES = {
    "small-convnet": small_convnet,
    "single-layer": single_layer,
    "resnet18": resnet18_small,
    "vit-tiny": vit_tiny,
    "frame-convnet": frame_convnet,
    "prednet": prednet,
}
MIN_SIZE = {"small-convnet": 8, "single-layer": 4, "resnet18": 8, "vit-tiny": 14, "frame-convnet": 16, "prednet": 16}


def _factory(name: str):
    if name not in BACKBONES:
        raise UnsupError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def backbone_options(name: str, options: dict | None = None) -> dict:
    """``options`` checked against the factory's keyword arguments, without
    those equal to their defaults: what distinguishes this backbone from the
    default one of its name."""
    params = list(inspect.signature(_factory(name)).parameters.values())[2:]
    defaults = {p.name: p.default for p in params}
    if options is not None and not isinstance(options, dict):
        raise UnsupError(f"backbone_options must be a mapping, e.g. {{depth: 6}}; got {options!r}")
    unknown = sorted(set(options or {}) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise UnsupError(f"unknown backbone option(s) {', '.join(unknown)} for {name}; valid: {valid}")
    return {k: v for k, v in (options or {}).items() if v != defaults[k]}


def build_backbone(name: str, in_channels: int, image_size: int, options: dict | None = None) -> nn.Module:
    """The backbone ``name`` for ``(in_channels, image_size, image_size)`` images, built with ``options``."""
    options = backbone_options(name, options)
    if image_size < MIN_SIZE.get(name, 1):
        raise UnsupError(f"images of {image_size}x{image_size} are too small for {name} (needs at least {MIN_SIZE[name]})")
    return BACKBONES[name](in_channels, image_size, **options)


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

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise UnsupError(f"encoder expects images (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalise(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's unpooled features: a spatial map or a token sequence."""
        if not hasattr(self.net, "forward_features"):
            raise UnsupError(f"{type(self.net).__name__} gives pooled features only (no forward_features)")
        return self.net.forward_features(self.normalise(x))


def build_encoder(backbone: str, in_channels: int, image_size: int, options: dict | None = None) -> Encoder:
    """The backbone ``backbone`` (built with ``options``) behind the default normalisation."""
    return Encoder(build_backbone(backbone, in_channels, image_size, options), in_channels, image_size)


from .heads import projection_mlp  # noqa: E402,F401  (the heads live in nets/heads.py)
