"""k-means feature learning: Coates, Lee & Ng, "An Analysis of Single-Layer
Networks in Unsupervised Feature Learning", AISTATS 2011.

Random patches, each normalised (mean removed, divided by sqrt(var + 10) on
the 0-255 scale), ZCA-whitened (epsilon 0.1), clustered by k-means; the
encoder computes the "triangle" activation f_k = max(0, mean(z) - z_k) with z
the distances of a whitened patch to the centroids, densely (stride 1), then
sums it over regions of the feature map. The choices that matter, per the
paper: whitening and the triangle activation. Scaled to 28x28: 6x6 patches
(as in the paper), 512 centroids instead of 1,600: on Fashion-MNIST more
centroids measured no better (3x3 pooling, 20k images: 512 vs 1,024 centroids
85.1% vs 85.1% at 100 labels per class, 92.1% vs 92.1% with all labels; with
2x2 pooling 1,600 vs 1,024: 83.3% either way) and the probe's cost grows with
the feature size.

One departure, measured: the paper sums over the four quadrants (2x2,
``pool_grid=2``); the default here is a 3x3 grid (9K features, 4,608 for 512 centroids), because
Fashion-MNIST's garments fill the frame and differ in their spatial layout:
linear probe at 100 labels per class 85.3% (3x3) vs 83.3% (2x2), 3 seeds
(benchmarks/RESULTS.md). ``--option pool_grid=2`` gives the paper's pooling.
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
from ...train.loop import Interval, Stopped, StopSignals
from ..base import Method, MethodConfig
from .kmeans_core import kmeans, triangle


@dataclass
class KMeansConfig(MethodConfig):
    patch_size: int = 6
    num_centroids: int = 512
    num_patches: int = 200_000
    iterations: int = 10  # passes of mini-batch k-means over the patches
    kmeans_batch: int = 50_000
    norm_eps: float = 10.0  # per-patch normalisation, on the 0-255 scale
    zca_eps: float = 0.1
    pool_grid: int = 3  # sum pooling over a grid x grid layout of regions (the paper: 2, its four quadrants)


def normalise_patches(p: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-patch brightness and contrast normalisation (rows are patches, 0-255 scale)."""
    p = p - p.mean(1, keepdim=True)
    # the unbiased variance of centred rows, as one sum of squares (torch's var took 3x longer here)
    var = p.pow(2).sum(1, keepdim=True) / max(1, p.shape[1] - 1)
    return p / torch.sqrt(var + eps)


class PatchTriangleEncoder(nn.Module):
    """Dense whitened patches -> triangle activation against centroids -> sum pooling over a grid of regions."""

    def __init__(self, in_channels: int, patch_size: int, num_centroids: int, norm_eps: float, pool_grid: int):
        super().__init__()
        self.pool_grid = pool_grid
        d = in_channels * patch_size * patch_size
        self.patch_size, self.norm_eps, self.in_channels = patch_size, norm_eps, in_channels
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("whiten", torch.eye(d))
        self.register_buffer("centroids", torch.zeros(num_centroids, d))
        self.out_dim = pool_grid * pool_grid * num_centroids
        self.chunk = 4

    def whitened_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        _b, _c, h, w = x.shape
        p = self.patch_size
        if h < p or w < p:
            raise UnsupError(f"patch size {p} is larger than the {h}x{w} images; choose --option patch_size<={min(h, w)}")
        cols = F.unfold(x * 255.0, p)  # (B, C*p*p, L)
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        rows = normalise_patches(rows, self.norm_eps)
        return (rows - self.mean) @ self.whiten, h - p + 1, w - p + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a few images at a time, in place: the (patches x centroids) distance
        # matrix is the whole cost and is memory-bound (measured 5x faster)
        p = self.patch_size
        pool = self.pool_matrix(max(1, x.shape[2] - p + 1), max(1, x.shape[3] - p + 1), x.device)  # once per call
        return torch.cat([self._features(x[i : i + self.chunk], pool) for i in range(0, len(x), self.chunk)])

    def _features(self, x: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        rows, oh, ow = self.whitened_patches(x)
        f = triangle(rows, self.centroids).view(x.shape[0], oh * ow, -1)
        return (pool @ f).flatten(1)  # (b, regions * K), region-major

    def pool_matrix(self, oh: int, ow: int, device) -> torch.Tensor:
        """(regions, oh * ow) 0/1 membership of each map position in each of the
        grid x grid regions: sum pooling as one matmul (3x faster than slicing)."""
        g = self.pool_grid
        # region i spans rows [oh * i // g, oh * (i + 1) // g)
        ys = torch.bucketize(torch.arange(oh), torch.tensor([oh * i // g for i in range(1, g)]), right=True).to(device)
        xs = torch.bucketize(torch.arange(ow), torch.tensor([ow * i // g for i in range(1, g)]), right=True).to(device)
        region = (ys[:, None] * g + xs[None, :]).flatten()
        return (region[None, :] == torch.arange(g * g, device=device)[:, None]).float()


@register
class KMeans(Method):
    name = "kmeans"
    family = "clustering"
    paper = "Coates, Lee & Ng 2011, An Analysis of Single-Layer Networks in Unsupervised Feature Learning"
    Config = KMeansConfig
    uses_gradients = False

    def __init__(self, cfg: KMeansConfig, shape):
        super().__init__(cfg, shape)
        c, h, w = self.shape
        if cfg.patch_size > h:
            raise UnsupError(f"patch size {cfg.patch_size} is larger than the {h}x{w} images; choose a patch size <= {h}")
        self.encoder = PatchTriangleEncoder(c, cfg.patch_size, cfg.num_centroids, cfg.norm_eps, cfg.pool_grid)

    def random_patches(self, images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
        """``n`` random patches (rows, 0-255 scale, normalised) from uint8 images."""
        g = torch.Generator().manual_seed(seed)
        c, h, w = self.shape
        p = self.cfg.patch_size
        img = torch.randint(0, len(images), (n,), generator=g)
        ys = torch.randint(0, h - p + 1, (n,), generator=g)
        xs = torch.randint(0, w - p + 1, (n,), generator=g)
        grid = torch.arange(p)
        rows_idx = (ys[:, None] + grid)[:, :, None].expand(n, p, p)
        cols_idx = (xs[:, None] + grid)[:, None, :].expand(n, p, p)
        dev = images.device
        patches = images[img.to(dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                         rows_idx.to(dev)[:, None], cols_idx.to(dev)[:, None]]
        return normalise_patches(patches.reshape(n, -1).float(), self.cfg.norm_eps)

    def fit_whitening(self, rows: torch.Tensor) -> torch.Tensor:
        """ZCA from summed statistics (so torchrun processes agree), returns whitened rows."""
        n = dist.all_reduce_sum(torch.tensor([float(len(rows))], device=rows.device, dtype=torch.float64))
        s = dist.all_reduce_sum(rows.double().sum(0))
        mean = s / n
        xc = rows.double() - mean
        cov = dist.all_reduce_sum(xc.T @ xc) / (n - 1)
        if float(torch.diagonal(cov).sum()) < 1e-8:
            raise UnsupError("k-means: all patches are identical (a constant image set?); nothing to learn")
        evals, evecs = torch.linalg.eigh(cov)
        whiten = evecs @ torch.diag(1.0 / torch.sqrt(evals.clamp_min(0) + self.cfg.zca_eps)) @ evecs.T
        self.encoder.mean.copy_(mean.float())
        self.encoder.whiten.copy_(whiten.float())
        return (rows - self.encoder.mean) @ self.encoder.whiten

    def fit(self, data, budget, ctx) -> None:
        """Patches, whitening, then ``iterations`` passes of k-means, with a checkpoint after a pass
        whenever ``ctx.checkpoint_every`` has passed (an image interval counts patches assigned), after
        the last pass and on SIGTERM/SIGINT. A resumed fit redraws the same patches and whitening (seeded)
        and continues the passes from the checkpoint: the same centroids as the uninterrupted fit."""
        cfg = self.cfg
        start = time.perf_counter()
        images = data.images
        if len(images) == 0 or bool((images == images[:1]).all()):
            raise UnsupError("k-means: the image set is empty or constant; nothing to learn")
        if budget.kind == "images":
            images = images[: int(min(len(images), budget.value))]
        per_process = cfg.num_patches // dist.world_size()
        rows = self.random_patches(images, per_process, ctx.seed + dist.rank())
        white = self.fit_whitening(rows)
        state = ctx.resume_state()
        resume = state.get("kmeans") if state is not None else None
        if resume is not None:
            start -= state["seconds"]  # the seconds of the attempts before count too
            if not ctx.quiet and dist.is_main():
                print(f"resuming k-means after pass {resume['passes']} of {cfg.iterations}")
        done = resume["passes"] if resume is not None else 0
        interval = Interval(ctx.checkpoint_interval(), done * cfg.num_patches, time.perf_counter() - start)
        advice = "start again with --overwrite"

        with StopSignals() as stop:
            def on_pass(st: dict) -> None:
                seconds = time.perf_counter() - start
                patches = st["passes"] * cfg.num_patches
                if interval.due(patches, seconds) or stop.name or st["passes"] == cfg.iterations:
                    self.encoder.centroids.copy_(st["centroids"])
                    ctx.save_state({"method": self.state_dict(), "kmeans": st, "step": st["passes"],
                                    "images_seen": len(images), "seconds": seconds},
                                   {"centroids": st["centroids"]}, {"counts": st["counts"]}, advice)
                    interval.mark(patches, seconds)
                if stop.name:
                    raise Stopped(f"stopped by {stop.name} after k-means pass {st['passes']}; checkpoint written"
                                  f"{f' in {ctx.run.path}' if ctx.run is not None else ''}, continue with --resume")

            centroids = kmeans(white, cfg.num_centroids, cfg.iterations, cfg.kmeans_batch, seed=ctx.seed,
                               on_pass=on_pass, resume=resume)
        self.encoder.centroids.copy_(centroids)
        seconds = time.perf_counter() - start
        ctx.log({"step": cfg.iterations, "images_seen": len(images), "seconds": round(seconds, 2), "patches": cfg.num_patches})
        if ctx.monitor is not None:
            ctx.monitor(self.encoder, cfg.iterations, len(images), seconds, ctx)

    def random_encoder(self) -> nn.Module:
        """Random centroids (Gaussian, in the whitened space) with the learned whitening."""
        enc = PatchTriangleEncoder(self.shape[0], self.cfg.patch_size, self.cfg.num_centroids, self.cfg.norm_eps, self.cfg.pool_grid)
        enc.load_state_dict(self.encoder.state_dict())
        scale = self.encoder.centroids.norm(dim=1).mean().clamp_min(1e-3)
        rand = torch.randn(enc.centroids.shape)  # the caller's seed: each initialisation of the reference differs
        enc.centroids.copy_(F.normalize(rand, dim=1) * scale.cpu())
        return enc

    def figures(self, data, out_dir: Path) -> list[Path]:
        from ...report.figures import save_image_grid

        c, p = self.shape[0], self.cfg.patch_size
        filt = self.encoder.centroids[:256].detach().cpu().view(-1, c, p, p)
        lo = filt.flatten(1).min(1).values.view(-1, 1, 1, 1)
        hi = filt.flatten(1).max(1).values.view(-1, 1, 1, 1)
        path = Path(out_dir) / "filters.png"
        save_image_grid((filt - lo) / (hi - lo + 1e-8), path, nrow=16, title="k-means centroids (whitened space)")
        return [path]
