"""Mini-batch k-means on the device (Sculley 2010), shared by ``kmeans``,
``conv-clustering`` and ``deepcluster``.

Each step assigns a batch to its nearest centroids and moves every centroid
towards the mean of its points with a per-centroid rate 1/count; a batch as
large as the data makes each step a full Lloyd iteration.

Under ``torchrun`` each process holds a shard; the data are the shards
concatenated in rank order. Every random choice (initial centroids, batch
order, re-seeding) is drawn over *global* indices with the same generator on
every process, each process contributes the rows it holds, and the
per-centroid sums and counts are summed with ``all_reduce``: the result equals
the single-process result on the concatenated data (up to float summation
order). Centroids that stay empty are re-seeded from random points of the batch.
"""

from __future__ import annotations

import torch

from ...errors import UnsupError
from ...train import distributed as dist


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int | None = None, need_dist: bool = True
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Nearest centroid of each row and (optionally) the squared distance to it.

    Rows go in chunks whose (rows x centroids) distance block stays in cache on
    a CPU (256k floats: 1.2x faster than 16k-row chunks at k=256) and is large
    on a GPU, where each chunk costs kernel launches."""
    if chunk is None:
        chunk = 65536 if x.is_cuda else max(256, 2**18 // len(centroids))
    c2 = (centroids * centroids).sum(1)
    labels, dists = [], []
    for i in range(0, len(x), chunk):
        xb = x[i : i + chunk]
        d = torch.addmm(c2, xb, centroids.T, alpha=-2.0)  # |c|^2 - 2 x.c : the argmin needs no |x|^2
        best, lab = d.min(1)
        labels.append(lab)
        if need_dist:
            dists.append((best + (xb * xb).sum(1)).clamp_min(0))
    return torch.cat(labels), (torch.cat(dists) if need_dist else None)


def inertia(x: torch.Tensor, centroids: torch.Tensor) -> float:
    """Sum of squared distances to the nearest centroid (summed over processes)."""
    total = assign(x, centroids)[1].sum().double()
    return float(dist.all_reduce_sum(total))


class _Layout:
    """Where this process's rows sit in the concatenation of all shards."""

    def __init__(self, x: torch.Tensor):
        counts = torch.zeros(dist.world_size(), dtype=torch.long, device=x.device)
        counts[dist.rank()] = len(x)
        dist.all_reduce_sum(counts)
        self.x, self.n = x, len(x)
        self.offset = int(counts[: dist.rank()].sum())
        self.total = int(counts.sum())

    def local(self, idx: torch.Tensor) -> torch.Tensor:
        """The rows of global indices ``idx`` held here."""
        if dist.world_size() == 1:
            return self.x.index_select(0, idx)  # 2x faster than x[idx] on a CPU
        mine = (idx >= self.offset) & (idx < self.offset + self.n)
        return self.x[idx[mine] - self.offset]

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows at global indices ``idx``, assembled on every process."""
        if dist.world_size() == 1:
            return self.x.index_select(0, idx)
        mine = (idx >= self.offset) & (idx < self.offset + self.n)
        out = torch.zeros(len(idx), self.x.shape[1], device=self.x.device, dtype=self.x.dtype)
        out[mine] = self.x[idx[mine] - self.offset]
        return dist.all_reduce_sum(out)


def kmeans_plus_plus(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) on the rows of ``x``: each
    next centroid is drawn with probability proportional to the squared distance
    to the nearest one so far. Distances by |x|^2 - 2 x.c + |c|^2 (one
    matrix-vector product per pick) and the draw by inverse CDF on the device,
    with the uniforms drawn up front from ``g`` (the same on every process)."""
    n = len(x)
    x2 = (x * x).sum(1)
    uniforms = torch.rand(k, generator=g, dtype=torch.float64).tolist()

    def dist_to(i: int) -> torch.Tensor:
        return torch.addmv(x2, x, x[i], alpha=-2.0).add_(x2[i]).clamp_min_(0)

    picks = [int(torch.randint(0, n, (1,), generator=g))]
    d = dist_to(picks[0])
    for j in range(1, k):
        cdf = d.double().cumsum_(0)
        total = float(cdf[-1])
        if total > 0:  # first index whose cumulative weight exceeds u * total: a zero-weight row is never picked
            i = min(int(torch.searchsorted(cdf, uniforms[j] * total, right=True)), n - 1)
        else:  # every row sits on a centroid already
            i = int(uniforms[j] * n)
        picks.append(i)
        d = torch.minimum(d, dist_to(i))
    return x[torch.tensor(picks, device=x.device)].clone()


def kmeans(x: torch.Tensor, k: int, iterations: int = 10, batch_size: int | None = None, seed: int = 0,
           init: torch.Tensor | str = "random", init_size: int | None = None, on_pass=None,
           resume: dict | None = None) -> torch.Tensor:
    """Centroids ``(k, D)`` of the rows of ``x`` (the local shard under torchrun).

    ``iterations`` passes over the data; ``batch_size=None`` (or >= the data)
    makes each step a full Lloyd iteration; ``batch_size`` is the global batch.
    ``init``: "random" (k distinct points), "k-means++" (on ``init_size``
    random points, default ``max(3 * batch, 3 * k)``, as scikit-learn does),
    or a tensor of centroids.

    ``on_pass(state)``, if given, is called after each pass with everything the
    remaining passes depend on (``passes`` done, ``centroids``, ``counts``, the
    generator's ``rng``); ``resume=state`` continues from such a state, with the
    same result as the uninterrupted call.
    """
    lay = _Layout(x)
    total = lay.total
    if k < 1:
        raise UnsupError(f"k-means: the number of centroids must be at least 1, got {k}")
    if k > total:
        raise UnsupError(f"k-means: {k} centroids need at least {k} points, got {total}; lower the number of centroids or add data")
    g = torch.Generator(device="cpu").manual_seed(seed)
    batch = total if batch_size is None else min(batch_size, total)
    dev = x.device
    if isinstance(init, torch.Tensor):
        centroids = init.clone().to(x)
    elif init == "k-means++":
        m = min(total, init_size or max(3 * batch if batch < total else 0, 3 * k, 10_000))
        sample = lay.rows(torch.randperm(total, generator=g)[:m].to(dev))
        centroids = kmeans_plus_plus(sample, k, g)
    elif init == "random":
        centroids = lay.rows(torch.randperm(total, generator=g)[:k].to(dev)).clone()
    else:
        raise UnsupError(f"k-means: unknown init {init!r}; choose random or k-means++")
    counts = torch.zeros(k, device=dev, dtype=x.dtype)
    done = 0
    if resume is not None:
        centroids, counts = resume["centroids"].to(x).clone(), resume["counts"].to(x).clone()
        g.set_state(resume["rng"])
        done = int(resume["passes"])
    for it in range(done, iterations):
        order = torch.randperm(total, generator=g).to(dev) if batch < total else None
        for i in range(0, total - batch + 1, batch):
            gidx = order[i : i + batch] if order is not None else None
            xb = lay.local(gidx) if gidx is not None else x
            labels, _ = assign(xb, centroids, need_dist=False)
            sums = torch.zeros_like(centroids).index_add_(0, labels, xb)
            n_c = torch.bincount(labels, minlength=k).to(x.dtype)
            dist.all_reduce_sum(sums)
            dist.all_reduce_sum(n_c)
            if gidx is None:  # Lloyd: replace by the means
                centroids = torch.where(n_c[:, None] > 0, sums / n_c.clamp_min(1)[:, None], centroids)
            else:
                counts += n_c
                rate = (n_c / counts.clamp_min(1))[:, None]
                centroids += rate * (sums / n_c.clamp_min(1)[:, None] - centroids) * (n_c[:, None] > 0)
            empty = n_c == 0
            if empty.any():  # re-seed empty centroids from random points of this batch
                pick = torch.randint(0, batch, (int(empty.sum()),), generator=g).to(dev)
                centroids[empty] = lay.rows(gidx[pick] if gidx is not None else pick)
                counts[empty] = 0
        if on_pass is not None:
            on_pass({"passes": it + 1, "centroids": centroids, "counts": counts, "rng": g.get_state()})
    return centroids


def triangle(rows: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Coates et al.'s "triangle" activation f_k = max(0, mean(z) - z_k), z the
    distances of each row to the centroids; (..., N, D) x (..., K, D) -> (..., N, K).
    The (rows x centroids) matrix is the whole cost and memory-bound, so it is
    made in one matmul (both squared norms ride along as an extra column) and
    then touched as few times as possible."""
    c = centroids
    ones = torch.ones_like(c[..., :1])
    rows_aug = torch.cat([rows, (rows * rows).sum(-1, keepdim=True)], -1)  # [r, |r|^2] . [-2c, 1] + |c|^2 = |r - c|^2
    cent_aug = torch.cat([c * -2.0, ones], -1)
    z = torch.baddbmm((c * c).sum(-1)[..., None, :], rows_aug, cent_aug.transpose(-1, -2)) if rows.ndim == 3 \
        else torch.addmm((c * c).sum(-1), rows_aug, cent_aug.T)
    z.clamp_min_(0).sqrt_()
    return (z.mean(-1, keepdim=True) - z).clamp_min_(0)
