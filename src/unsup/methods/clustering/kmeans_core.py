"""Mini-batch k-means on the device (Sculley 2010), shared by ``kmeans``,
``conv-clustering`` and ``deepcluster``.

Each step assigns a batch to its nearest centroids and moves every centroid
towards the mean of its points with a per-centroid rate 1/count. Under
``torchrun`` each process assigns its own shard and the per-centroid sums and
counts are summed with ``all_reduce``, so the result equals the
single-process result on the concatenated batch. Centroids that stay empty
are re-seeded from random points of the batch.
"""

from __future__ import annotations

import torch

from ...errors import UnsupError
from ...train import distributed as dist


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row and the squared distance to it."""
    c2 = (centroids * centroids).sum(1)
    labels, dists = [], []
    for i in range(0, len(x), chunk):
        xb = x[i : i + chunk]
        d = (xb * xb).sum(1, keepdim=True) - 2 * xb @ centroids.T + c2
        best, lab = d.min(1)
        labels.append(lab)
        dists.append(best.clamp_min(0))
    return torch.cat(labels), torch.cat(dists)


def inertia(x: torch.Tensor, centroids: torch.Tensor) -> float:
    """Sum of squared distances to the nearest centroid (summed over processes)."""
    total = assign(x, centroids)[1].sum().double()
    return float(dist.all_reduce_sum(total))


def kmeans(x: torch.Tensor, k: int, iterations: int = 10, batch_size: int | None = None, seed: int = 0,
           init: torch.Tensor | None = None) -> torch.Tensor:
    """Centroids ``(k, D)`` of the rows of ``x`` (local shard under torchrun).

    ``iterations`` passes over the data; ``batch_size=None`` (or >= len(x))
    makes each step a full Lloyd iteration.
    """
    n = len(x)
    total = int(dist.all_reduce_sum(torch.tensor([n], device=x.device)).item())
    if k > total:
        raise UnsupError(f"k-means: {k} centroids need at least {k} points, got {total}; lower the number of centroids or add data")
    g = torch.Generator(device="cpu").manual_seed(seed)
    if init is None:
        centroids = x[torch.randperm(n, generator=g)[:k].to(x.device)].clone()
        if len(centroids) < k:  # a tiny shard: pad with noise, fixed by the broadcast below
            centroids = torch.cat([centroids, torch.randn(k - len(centroids), x.shape[1], generator=g).to(x)])
        dist.broadcast(centroids)
    else:
        centroids = init.clone()
    counts = torch.zeros(k, device=x.device, dtype=x.dtype)
    batch = n if batch_size is None else min(batch_size, n)
    for _ in range(iterations):
        order = torch.randperm(n, generator=g).to(x.device) if batch < n else torch.arange(n, device=x.device)
        for i in range(0, n - batch + 1, batch):
            xb = x[order[i : i + batch]]
            labels, _ = assign(xb, centroids)
            sums = torch.zeros_like(centroids).index_add_(0, labels, xb)
            n_c = torch.bincount(labels, minlength=k).to(x.dtype)
            dist.all_reduce_sum(sums)
            dist.all_reduce_sum(n_c)
            if batch == n:  # Lloyd: replace by the means
                centroids = torch.where(n_c[:, None] > 0, sums / n_c.clamp_min(1)[:, None], centroids)
            else:
                counts += n_c
                rate = (n_c / counts.clamp_min(1))[:, None]
                centroids += rate * (sums / n_c.clamp_min(1)[:, None] - centroids) * (n_c[:, None] > 0)
            empty = n_c == 0
            if empty.any():  # re-seed empty centroids from random points of this batch
                pick = torch.randint(0, len(xb), (int(empty.sum()),), generator=g).to(x.device)
                fresh = xb[pick]
                dist.broadcast(fresh)
                centroids[empty] = fresh
                counts[empty] = 0
    return centroids
