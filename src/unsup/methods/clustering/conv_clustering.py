"""Convolutional clustering: Dundar, Jin & Culurciello, "Convolutional
Clustering for Unsupervised Learning", ICLR workshop 2016 (after
Culurciello's "clustering learning").

A multi-layer network whose filters are all k-means centroids, each layer
learned on the outputs of the layer below. The two choices that matter:
- convolutional k-means: windows twice the filter size are drawn at random;
  in each window only the patch (position) that best matches a centroid is
  assigned to it, then the centroids move to the means of their patches.
  Centroids that are shifted copies of each other stop being learned. Here:
  plain k-means (``kmeans_core``) seeds the centroids, then a few rounds of
  (best position per window -> one Lloyd step on the selected patches).
- non-complete connections between layers: the first layer's maps are split
  into groups of ``group_size`` maps whose squared responses correlate most
  (Coates & Ng 2011's receptive-field grouping, the unsupervised grouping of
  Culurciello's clustering learning), and every second-layer filter sees one
  group only, learned by k-means on patches of that group's maps.
Each layer: contrast-normalised, ZCA-whitened patches -> distances to the
centroids -> triangle activation (Coates et al. 2011) -> 2x2 max pooling
between layers; the encoder's features are the last layer's maps summed over
the four quadrants. Scaled to 28x28: 5x5 filters (64) then 3x3 filters over
16 groups of 4 maps (64 per group, 1,024 maps).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UnsupError
from ...registry import register
from ...train import distributed as dist
from ..base import Method, MethodConfig
from .kmeans_core import assign, kmeans, triangle


@dataclass
class ConvClusteringConfig(MethodConfig):
    depth: int = 2
    filters: tuple[int, ...] = (64, 64)  # layer 1: filters; later layers: filters per group
    patch_sizes: tuple[int, ...] = (5, 3)
    group_size: int = 4  # maps per group seen by a filter of layers >= 2
    num_windows: int = 40_000  # windows (2x the filter size) per layer (per group)
    iterations: int = 10  # k-means passes that seed the centroids
    conv_iterations: int = 5  # rounds of convolutional k-means
    fit_images: int = 10_000  # images whose maps feed the next layer's k-means
    norm_eps: float = 0.05  # per-patch contrast normalisation, relative to the mean patch variance
    zca_eps: float = 0.1


class ClusterLayer(nn.Module):
    """One layer: ``groups`` groups of input maps, each with its own whitening
    and centroids; output maps = triangle activations, all groups stacked."""

    def __init__(self, groups: int, group_size: int, patch: int, k: int):
        super().__init__()
        d = group_size * patch * patch
        self.patch, self.k = patch, k
        self.register_buffer("index", torch.arange(groups * group_size).view(groups, group_size))
        self.register_buffer("eps", torch.ones(()))
        self.register_buffer("mean", torch.zeros(groups, d))
        self.register_buffer("whiten", torch.eye(d).repeat(groups, 1, 1))
        self.register_buffer("centroids", torch.zeros(groups, k, d))

    @property
    def out_channels(self) -> int:
        return self.index.shape[0] * self.k

    def rows(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Whitened patches per group, (G, B*L, d), and the output size."""
        b, _c, h, w = x.shape
        p = self.patch
        if h < p or w < p:
            raise UnsupError(f"conv-clustering: patch size {p} is larger than the {h}x{w} maps; lower patch_sizes")
        g, gs = self.index.shape
        cols = F.unfold(x[:, self.index.flatten()], p)  # (B, G*gs*p*p, L)
        cols = cols.view(b, g, gs * p * p, -1).permute(1, 0, 3, 2).reshape(g, -1, gs * p * p)
        return self.whitened(cols), h - p + 1, w - p + 1

    def normalise(self, r: torch.Tensor) -> torch.Tensor:
        r = r - r.mean(-1, keepdim=True)
        return r / torch.sqrt(r.var(-1, keepdim=True) + self.eps)

    def whitened(self, cols: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.normalise(cols) - self.mean[:, None], self.whiten)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        r, oh, ow = self.rows(x)
        f = triangle(r, self.centroids)  # within each group
        return f.view(-1, b, oh, ow, self.k).permute(1, 0, 4, 2, 3).reshape(b, -1, oh, ow)


class ConvClusterEncoder(nn.Module):
    """Layers with 2x2 max pooling between them; quadrant sum pooling at the end."""

    def __init__(self, layers: list[ClusterLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.depth = len(layers)
        self.chunk = 32

    @property
    def out_dim(self) -> int:
        return 4 * self.layers[self.depth - 1].out_channels

    def maps(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        x = x * 255.0
        for i, layer in enumerate(self.layers[:depth]):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._features(x[i : i + self.chunk]) for i in range(0, len(x), self.chunk)])

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.maps(x, self.depth)
        hh, hw = f.shape[2] // 2, f.shape[3] // 2
        quads = [f[:, :, :hh, :hw], f[:, :, :hh, hw:], f[:, :, hh:, :hw], f[:, :, hh:, hw:]]
        return torch.cat([q.sum((2, 3)) for q in quads], 1)

    def truncated(self, depth: int) -> ConvClusterEncoder:
        import copy

        enc = copy.deepcopy(self)
        enc.depth = depth
        return enc


def zca(rows: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, ZCA matrix) from statistics summed over processes."""
    n = dist.all_reduce_sum(torch.tensor([float(len(rows))], device=rows.device, dtype=torch.float64))
    mean = dist.all_reduce_sum(rows.double().sum(0)) / n
    xc = rows.double() - mean
    cov = dist.all_reduce_sum(xc.T @ xc) / (n - 1)
    evals, evecs = torch.linalg.eigh(cov)
    w = evecs @ torch.diag(1.0 / torch.sqrt(evals.clamp_min(0) + eps)) @ evecs.T
    return mean.float(), w.float()


def group_maps(maps: torch.Tensor, group_size: int, seed: int) -> torch.Tensor:
    """Disjoint groups of maps whose squared responses correlate most (a random
    seed map, then its most correlated free maps), (G, group_size)."""
    c = maps.shape[1]
    e = (maps**2).transpose(0, 1).reshape(c, -1)
    e = e - e.mean(1, keepdim=True)
    e = e / (e.norm(dim=1, keepdim=True) + 1e-8)
    corr = dist.all_reduce_sum(e @ e.T)
    g = torch.Generator().manual_seed(seed)
    free = torch.ones(c, dtype=torch.bool)
    groups = []
    for s in torch.randperm(c, generator=g).tolist():
        if not free[s] or int(free.sum()) < group_size:
            continue
        score = corr[s].cpu().clone()
        score[~free] = -float("inf")
        score[s] = float("inf")
        members = score.topk(group_size).indices
        free[members] = False
        groups.append(members)
    return torch.stack(groups)


@register
class ConvClustering(Method):
    name = "conv-clustering"
    family = "clustering"
    paper = "Dundar, Jin & Culurciello 2015, Convolutional Clustering for Unsupervised Learning"
    Config = ConvClusteringConfig
    uses_gradients = False

    def __init__(self, cfg: ConvClusteringConfig, shape):
        super().__init__(cfg, shape)
        c, h, _ = self.shape
        if cfg.depth < 1 or len(cfg.filters) < cfg.depth or len(cfg.patch_sizes) < cfg.depth:
            raise UnsupError(f"conv-clustering: depth {cfg.depth} needs that many filters and patch_sizes, "
                             f"got filters={cfg.filters} patch_sizes={cfg.patch_sizes}")
        layers, channels, size = [], c, h
        for i in range(cfg.depth):
            p = cfg.patch_sizes[i]
            if i > 0:
                size //= 2
            if p > size:
                raise UnsupError(f"conv-clustering: layer {i + 1} patch size {p} is larger than its {size}x{size} input "
                                 f"(images {h}x{h}); lower patch_sizes or depth")
            gs = channels if i == 0 else cfg.group_size
            if channels % gs:
                raise UnsupError(f"conv-clustering: {channels} maps do not split into groups of {gs}; change group_size")
            layers.append(ClusterLayer(channels // gs, gs, p, cfg.filters[i]))
            channels = layers[-1].out_channels
            size = size - p + 1
        self.encoder = ConvClusterEncoder(layers)

    def windows(self, maps: torch.Tensor, layer: ClusterLayer, group: int, n: int, g: torch.Generator) -> torch.Tensor:
        """Patch columns of ``n`` random windows, twice the filter size, of one
        group's maps: (n, positions, d)."""
        b, _c, h, w = maps.shape
        p = layer.patch
        win = min(2 * p, h, w)
        dev = maps.device
        img = torch.randint(0, b, (n,), generator=g).to(dev)
        ys = torch.randint(0, h - win + 1, (n,), generator=g).to(dev)
        xs = torch.randint(0, w - win + 1, (n,), generator=g).to(dev)
        ar = torch.arange(win, device=dev)
        ch = layer.index[group]
        crops = maps[img[:, None, None, None], ch[None, :, None, None], (ys[:, None] + ar)[:, None, :, None],
                     (xs[:, None] + ar)[:, None, None, :]]  # (n, gs, win, win)
        return F.unfold(crops, p).transpose(1, 2)  # (n, P, gs*p*p)

    def fit_layer(self, layer: ClusterLayer, maps: torch.Tensor, k: int, seed: int) -> None:
        cfg = self.cfg
        g = torch.Generator().manual_seed(seed)
        for gi in range(layer.index.shape[0]):
            cols = self.windows(maps, layer, gi, cfg.num_windows, g)
            if gi == 0:  # contrast-normalisation floor, relative to this layer's patch variance
                var = dist.all_reduce_sum(cols.var(-1).mean().double().reshape(1)) / dist.world_size()
                if float(var) < 1e-10:
                    raise UnsupError("conv-clustering: all patches are identical (a constant image set?); nothing to learn")
                layer.eps.fill_(float(cfg.norm_eps * var))
            rows = layer.normalise(cols)  # (n, P, d)
            mean, w = zca(rows.flatten(0, 1), cfg.zca_eps)
            layer.mean[gi], layer.whiten[gi] = mean, w
            white = (rows - mean) @ w
            n, npos, _d = white.shape
            at = torch.arange(n, device=white.device)
            # seed with plain k-means on one random position per window
            pick = torch.randint(0, npos, (n,), generator=g).to(white.device)
            cent = kmeans(white[at, pick], k, cfg.iterations, None, seed=seed + gi, init="k-means++")
            for _ in range(cfg.conv_iterations):  # convolutional k-means: the best position per window only
                _lab, dd = assign(white.flatten(0, 1), cent)
                chosen = white[at, dd.view(n, npos).argmin(1)]
                cent = kmeans(chosen, k, 1, None, seed=seed + gi, init=cent)
            layer.centroids[gi] = cent

    def fit(self, data, budget, ctx) -> None:
        cfg = self.cfg
        start = time.perf_counter()
        images = data.images
        if len(images) == 0 or bool((images == images[:1]).all()):
            raise UnsupError("conv-clustering: the image set is empty or constant; nothing to learn")
        if budget.kind == "images":
            images = images[: int(min(len(images), budget.value))]
        images = images[: cfg.fit_images]
        x = images.float()
        enc = self.encoder
        for i, layer in enumerate(enc.layers):
            with torch.no_grad():
                maps = torch.cat([enc.maps(x[j : j + 256] / 255.0, i) for j in range(0, len(x), 256)]) if i else x
                if i:
                    maps = F.max_pool2d(maps, 2)
                    layer.index.copy_(group_maps(maps, cfg.group_size, ctx.seed + i).to(layer.index))
            self.fit_layer(layer, maps, cfg.filters[i], ctx.seed * 100 + i)
            ctx.log({"layer": i + 1, "maps": layer.out_channels, "seconds": round(time.perf_counter() - start, 2)})
        seconds = time.perf_counter() - start
        ctx.log({"step": cfg.depth, "images_seen": len(images), "seconds": round(seconds, 2)})
        if ctx.monitor is not None:
            ctx.monitor(self.encoder, cfg.depth, len(images), seconds, ctx)

    def random_encoder(self) -> nn.Module:
        """Random centroids (Gaussian, in each whitened space) with the learned whitening and groups."""
        import copy

        enc = copy.deepcopy(self.encoder)
        for layer in enc.layers:  # the caller's seed decides the draw
            scale = layer.centroids.norm(dim=-1).mean().clamp_min(1e-3)
            rand = torch.randn(layer.centroids.shape)
            layer.centroids.copy_(F.normalize(rand, dim=-1).to(layer.centroids) * scale)
        return enc

    def figures(self, data, out_dir: Path) -> list[Path]:
        from ...report.figures import save_image_grid

        layer = self.encoder.layers[0]
        p = layer.patch
        filt = layer.centroids[0].detach().cpu().view(-1, 1, p, p)
        lo = filt.flatten(1).min(1).values.view(-1, 1, 1, 1)
        hi = filt.flatten(1).max(1).values.view(-1, 1, 1, 1)
        path = Path(out_dir) / "filters.png"
        save_image_grid((filt - lo) / (hi - lo + 1e-8), path, nrow=16, title="conv-clustering: first-layer centroids")
        return [path]
