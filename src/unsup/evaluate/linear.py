"""Linear probe: multinomial logistic regression in torch (full-batch L-BFGS)
on standardised frozen features. The L2 strength is chosen by
cross-validation inside the labelled subset only: stratified k-fold (k = up to
5) when each class has at least 2 labelled images; for a large labelled set
(all labels), a 10% hold-out of a random subset of ``CV_SUBSET`` images, with
the chosen strength rescaled to the full set (below); with 1 image per class
no split can hold a class out, so the middle of the grid is used (documented
in the protocol).

With fewer labelled images than feature dimensions (n < d, e.g. 1000 labels
of 9,216-d k-means features) the fits run in the row space of the labelled
features: an L2-penalised linear model's optimum lies in that n-dimensional
span (the representer theorem; every CV fold's span is inside it too), so the
result is the same and each L-BFGS step costs n/d as much."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

# part of the cached references' keys: a change to the solver recomputes them
SOLVER = "lbfgs-100-warm-l2-path"
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_L2 = 1e-2
# the grid search for a large labelled set runs on a subset this big: the
# full 60k x 9k-feature search took over 10 minutes on the 2-core CPU
CV_SUBSET = 10_000


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 100,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean cross-entropy + l2 * |w|^2 by L-BFGS from ``init`` (default 0).
    The gradient is written out, not taken by autograd: the fits of the
    cross-validation are small, and autograd's bookkeeping was most of their
    time (measured 2x on the 2-core CPU)."""
    w = (init[0] if init is not None else torch.zeros(x.shape[1], num_classes, dtype=x.dtype, device=x.device)).clone()
    b = (init[1] if init is not None else torch.zeros(num_classes, dtype=x.dtype, device=x.device)).clone()
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        logits = torch.addmm(b, x, w)
        lse = torch.logsumexp(logits, 1, keepdim=True)
        loss = (lse - logits).mul_(onehot).sum() / len(x) + l2 * (w * w).sum()
        residual = logits.sub_(lse).exp_().sub_(onehot).div_(len(x))  # softmax - onehot, per image
        # x.T @ residual, computed as (residual.T @ x).T: with ten output columns BLAS ran the transposed
        # product 18x slower (60k x 3,584 features, one core: 3.0 s against 0.17 s), most of an all-label probe
        w.grad = torch.addmm(w.T, residual.T, x, beta=2 * l2).T.contiguous()
        b.grad = residual.sum(0)
        return loss

    with torch.no_grad():
        opt.step(closure)
    return w, b


def _folds(y: torch.Tensor, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cross-validation folds of ``y``'s positions, drawn on the CPU (the same
    folds whatever device the features are on), returned on ``y``'s device."""
    device, y = y.device, y.cpu()
    counts = torch.bincount(y)
    least = int(counts[counts > 0].min())
    g = torch.Generator().manual_seed(seed)
    if len(y) > 5000:  # a large labelled set: one stratified 10% hold-out is enough
        perm = torch.randperm(len(y), generator=g)
        cut = len(y) // 10
        return [(perm[cut:].to(device), perm[:cut].to(device))]
    k = min(5, least)
    if k < 2:
        return []
    fold_of = torch.empty(len(y), dtype=torch.long)
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        fold_of[idx] = torch.arange(len(idx)) % k
    return [(torch.nonzero(fold_of != f).flatten().to(device), torch.nonzero(fold_of == f).flatten().to(device))
            for f in range(k)]


def choose_l2(x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int = 0) -> float:
    y = y.to(x.device)
    if len(y) > CV_SUBSET:
        # search on a random subset; the loss is a mean over images, so keeping
        # the total penalty n * l2 (the prior's strength) means l2 * subset / n
        sub = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:CV_SUBSET].to(x.device)
        return choose_l2(x[sub], y[sub], num_classes, seed) * CV_SUBSET / len(y)
    folds = _folds(y, seed)
    if not folds:
        return DEFAULT_L2
    # from the strongest penalty to the weakest, each fit starting from the
    # previous one's solution (a warm start: the weak penalties need the most steps)
    scores, grid, previous = {}, sorted(L2_GRID, reverse=True), [None] * len(folds)
    for l2 in grid:
        correct = 0
        for f, (tr, va) in enumerate(folds):
            w, b = previous[f] = fit_logistic(x[tr], y[tr], num_classes, l2, 50 if len(y) > 5000 else 100, previous[f])
            correct += int(((x[va] @ w + b).argmax(1) == y[va]).sum())
        scores[l2] = correct / sum(len(va) for _, va in folds)
    best = max(scores.values())
    # among ties, prefer the strongest regularisation
    return max(l2 for l2, s in scores.items() if s == best)


@contextlib.contextmanager
def threads_for(numel: int):
    """Small problems run on one thread: the many tiny L-BFGS steps are
    dominated by thread hand-offs otherwise (measured 60x slower on 2 cores)."""
    before = torch.get_num_threads()
    if numel < 10_000_000:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def row_space(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both feature sets in an orthonormal basis of the labelled rows' span when
    n < d (exact for the L2-penalised fit: see the module docstring)."""
    if len(train_x) >= train_x.shape[1]:
        return train_x, test_x
    q = torch.linalg.qr(train_x.T).Q  # (d, n), orthonormal columns; coordinates keep w's norm
    return train_x @ q, test_x @ q


def linear_probe_accuracy(train_x, train_y, test_x, test_y, num_classes: int, seed: int = 0) -> tuple[float, float]:
    """Accuracy on the test features and the chosen L2 strength. Features must
    already be standardised (see ``protocol``). The fits run on the features'
    device."""
    train_y, test_y = train_y.to(train_x.device), test_y.to(test_x.device)
    train_x, test_x = row_space(train_x, test_x)
    with threads_for(train_x.numel()):
        l2 = choose_l2(train_x, train_y, num_classes, seed)
        w, b = fit_logistic(train_x, train_y, num_classes, l2)
    acc = float(((test_x @ w + b).argmax(1) == test_y).float().mean())
    return acc, l2
