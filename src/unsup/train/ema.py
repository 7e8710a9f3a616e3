"""The momentum (exponential moving average) encoder, written once.

BYOL (Grill et al., 2020, eq. 3 and section 3.2) raises the target's momentum
from ``base`` to 1 on a cosine schedule over training; MoCo, DINO, I-JEPA and
the future-features target use the same update, the improved GAN uses a
constant rate (Polyak averaging).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's schedule: ``1 - (1 - base) (cos(pi p) + 1) / 2`` for progress p in [0, 1]."""
    p = min(max(progress, 0.0), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * p) + 1) / 2


Modules = nn.Module | Sequence[nn.Module]


def _modules(m: Modules) -> list[nn.Module]:
    return [m] if isinstance(m, nn.Module) else list(m)


@torch.no_grad()
def ema_update(target: Modules, online: Modules, momentum: float, buffers: bool = True) -> None:
    """``target <- momentum * target + (1 - momentum) * online`` for every
    floating parameter (one fused foreach call); buffers (batch-norm running
    statistics, counters) are copied, as the papers' code does, unless
    ``buffers=False``. ``target`` and ``online`` are modules of the same
    structure, or equal-length sequences of them (an encoder and its head)."""
    targets, onlines = _modules(target), _modules(online)
    t_params = [p for m in targets for p in m.parameters()]
    o_params = [p.detach() for m in onlines for p in m.parameters()]
    if len(targets) != len(onlines) or len(t_params) != len(o_params):
        raise ValueError("ema_update: target and online modules differ in structure")
    if t_params:
        torch._foreach_lerp_(t_params, o_params, 1.0 - momentum)
    if buffers:
        for tm, om in zip(targets, onlines):
            for tb, ob in zip(tm.buffers(), om.buffers()):
                tb.copy_(ob)


def momentum_copy(online: nn.Module) -> nn.Module:
    """A frozen copy of ``online`` to be updated only by ``ema_update``."""
    import copy

    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target
