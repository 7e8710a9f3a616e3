"""The joint-embedding losses as pure functions of embeddings.

Every function takes the embeddings of this process's share of the batch and
is distributed-aware where its paper computes over the whole batch: under
``torchrun`` the contrastive losses take their negatives, and Barlow Twins
and VICReg their batch statistics, from every process
(``unsup.train.distributed.gather_with_grad``); without a process group they
are the single-process formulas. Stop-gradients are the caller's choice (the
methods detach their targets), so each function is differentiable in every
input. Half-precision inputs (bf16 autocast) are computed in float32;
float64 stays float64 (gradient checks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .train import distributed as dist


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al., ICML 2020, eq. 1), averaged over the 2N views.

    Each view of ``z1``/``z2`` (rows are paired) must pick its partner among
    the 2N - 1 other views of the global batch, by cosine similarity over
    ``temperature``; local views are the queries, every process's views the keys.
    """
    b = len(z1)
    q = F.normalize(_wide(torch.cat([z1, z2])), dim=1)
    k1 = dist.gather_with_grad(F.normalize(_wide(z1), dim=1))
    k2 = dist.gather_with_grad(F.normalize(_wide(z2), dim=1))
    keys = torch.cat([k1, k2])
    big_b = len(k1)
    logits = q @ keys.T / temperature
    local = torch.arange(b, device=q.device) + dist.rank() * b
    self_idx = torch.cat([local, local + big_b])
    pos_idx = torch.cat([local + big_b, local])
    logits[torch.arange(2 * b, device=q.device), self_idx] = float("-inf")
    return F.cross_entropy(logits, pos_idx)


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float, queue: torch.Tensor | None = None) -> torch.Tensor:
    """MoCo's InfoNCE (He et al., CVPR 2020, eq. 1): query ``q[i]`` must pick its key ``k[i]``.

    With ``queue`` (M, D) (MoCo v1/v2) the negatives are the queued keys of
    earlier batches: logits ``[q.k+, q.queue]``, the positive first. Without it
    (MoCo v3, Chen, Xie & He, ICCV 2021) the negatives are the other keys of
    the global batch, gathered from every process. Vectors are L2-normalised
    here; the queue is used as given (it holds normalised keys).
    """
    q = F.normalize(_wide(q), dim=1)
    k = F.normalize(_wide(k), dim=1)
    if queue is not None:
        pos = (q * k).sum(1, keepdim=True)
        logits = torch.cat([pos, q @ queue.to(q.dtype).T], dim=1) / temperature
        target = torch.zeros(len(q), dtype=torch.long, device=q.device)
    else:
        logits = q @ dist.gather_with_grad(k).T / temperature
        target = torch.arange(len(q), device=q.device) + dist.rank() * len(q)
    return F.cross_entropy(logits, target)


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean of ``-cos(p[i], z[i])``: SimSiam's D (Chen & He, CVPR 2021, eq. 1).

    BYOL's normalised squared error (Grill et al., NeurIPS 2020, eq. 2) is
    ``2 + 2 * negative_cosine(p, z)``. Per-pair, so nothing to gather.
    """
    return -F.cosine_similarity(_wide(p), _wide(z), dim=1, eps=1e-8).mean()


def _standardise(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Zero mean, unit (biased) variance per dimension over the rows: a
    non-affine BatchNorm in training mode."""
    mean = z.mean(0)
    var = z.var(0, unbiased=False)
    return (z - mean) / torch.sqrt(var + eps)


def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins (Zbontar et al., ICML 2021, eq. 1-2).

    The cross-correlation ``C`` of the two views' embeddings, each
    standardised per dimension over the global batch (the official code's
    non-affine BatchNorm, with its ``eps``), is driven to the identity:
    ``sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2``.
    """
    a = _standardise(dist.gather_with_grad(_wide(z1)), eps)
    b = _standardise(dist.gather_with_grad(_wide(z2)), eps)
    c = a.T @ b / len(a)
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag


def _variance_term(z: torch.Tensor, eps: float) -> torch.Tensor:
    std = torch.sqrt(z.var(0) + eps)
    return F.relu(1 - std).mean()


def _covariance_term(z: torch.Tensor) -> torch.Tensor:
    n, d = z.shape
    z = z - z.mean(0)
    cov = z.T @ z / (n - 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VICReg's three terms (Bardes, Ponce & LeCun, ICLR 2022, eq. 1-5), over the global batch.

    invariance: mean squared distance between paired embeddings; variance: the
    hinge ``relu(1 - sqrt(var + eps))`` on each dimension's (unbiased) standard
    deviation, averaged over dimensions and over the two branches; covariance:
    the squared off-diagonal covariances divided by the dimension, summed over
    the two branches (the paper's code).
    """
    a, b = dist.gather_with_grad(_wide(z1)), dist.gather_with_grad(_wide(z2))
    invariance = F.mse_loss(a, b)
    variance = (_variance_term(a, eps) + _variance_term(b, eps)) / 2
    covariance = _covariance_term(a) + _covariance_term(b)
    return invariance, variance, covariance


def vicreg(z1: torch.Tensor, z2: torch.Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0,
           eps: float = 1e-4) -> torch.Tensor:
    """VICReg's loss: ``sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance``
    (the paper's 25 / 25 / 1); see ``vicreg_terms``."""
    inv, var, cov = vicreg_terms(z1, z2, eps)
    return sim_coeff * inv + std_coeff * var + cov_coeff * cov


def cross_view_cross_entropy(targets: list[torch.Tensor], logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """``-sum_k t_i[k] log softmax(s_v / temperature)[k]``, averaged over the
    batch and over every pair of a target view ``i`` and a different view
    ``v``: SwAV's swapped prediction and DINO's loss. ``targets`` (each
    ``(B, K)``, rows summing to 1) belong to the first ``len(targets)`` views
    of ``logits``; a view never predicts its own target."""
    log_p = [F.log_softmax(s.float() / temperature, dim=1) for s in logits]
    terms = [-(t.float() * lp).sum(1).mean() for i, t in enumerate(targets) for v, lp in enumerate(log_p) if v != i]
    return torch.stack(terms).mean()


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's codes (Caron et al., "Unsupervised Learning of Visual Features by
    Contrasting Cluster Assignments", NeurIPS 2020, section 3.1 and eq. 3).

    ``scores`` (B, K) are this process's samples against K prototypes; the
    codes ``Q`` maximise ``Tr(Q^T scores) + epsilon H(Q)`` under the
    equipartition constraint over the global batch (every prototype gets
    B_global / K samples), solved approximately by ``iterations`` rounds of
    Sinkhorn-Knopp: prototype sums are all-reduced across processes, sample
    sums are local. Returned rows sum to 1 (soft assignments, the paper's
    choice over rounding to one-hot). The scores are shifted by their maximum
    over the global batch before the exponential, against overflow; the first
    normalisation removes that one constant (a shift per sample or per process
    would change the result of a finite number of iterations).
    """
    scores = scores.float()
    top = dist.gather_with_grad(scores.max().view(1)).max()
    q = torch.exp((scores - top) / epsilon)
    n_global = len(q) * dist.world_size()  # every process holds an equal share of the batch
    k = q.shape[1]
    q /= dist.all_reduce_sum(q.sum())
    for _ in range(iterations):
        q /= dist.all_reduce_sum(q.sum(0, keepdim=True)) * k  # each prototype's mass -> 1 / K
        q /= q.sum(1, keepdim=True) * n_global  # each sample's mass -> 1 / B_global
    return q * n_global


def swav_loss(scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float = 0.1) -> torch.Tensor:
    """SwAV's swapped prediction (Caron et al., NeurIPS 2020, eq. 1-2): the code
    of each global view (``codes[i]``, from ``sinkhorn_knopp``) is predicted
    from every other view's prototype scores ``scores[v]`` (global and local
    crops) by a softmax at ``temperature``; averaged over pairs."""
    return cross_view_cross_entropy(codes, scores, temperature)


def dino_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor,
              student_temp: float = 0.1, teacher_temp: float = 0.04) -> torch.Tensor:
    """DINO's loss (Caron et al., "Emerging Properties in Self-Supervised Vision
    Transformers", ICCV 2021, eq. 3 and algorithm 1): the teacher's outputs of
    the global views, centred (minus ``center``) and sharpened (softmax at the
    low ``teacher_temp``), are the targets of the student's outputs (softmax at
    ``student_temp``) of every other view; cross-entropy averaged over pairs.
    The teacher's side carries no gradient."""
    targets = [F.softmax((t.detach().float() - center) / teacher_temp, dim=1) for t in teacher]
    return cross_view_cross_entropy(targets, student, student_temp)


@torch.no_grad()
def dino_center(center: torch.Tensor, teacher: torch.Tensor, momentum: float = 0.9) -> torch.Tensor:
    """DINO's centre update (eq. 4): ``momentum * center + (1 - momentum) *
    mean(teacher)``, the mean over the teacher's outputs of the whole global
    batch (summed across processes)."""
    total = dist.all_reduce_sum(teacher.float().sum(0, keepdim=True))
    return center * momentum + total / (len(teacher) * dist.world_size()) * (1 - momentum)

