"""Few-label splits: N labelled images per class, drawn by a seed.

The draw depends only on (labels, N, seed), so every method and every
reference sees the very same labelled images.
"""

from __future__ import annotations

import torch

from ..errors import UnsupError


def few_label_indices(labels: torch.Tensor, per_class: int | str, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` images of each class (``"all"``: every image)."""
    labels = labels.cpu()
    if per_class == "all":
        return torch.arange(len(labels))
    g = torch.Generator().manual_seed(int(seed))
    picked = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < per_class:
            raise UnsupError(f"class {c} has only {len(idx)} training images; cannot draw {per_class} per class")
        picked.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.sort(torch.cat(picked)).values


def parse_label_budgets(text: str) -> list[int | str]:
    """``"1,10,100,all"`` -> ``[1, 10, 100, "all"]``."""
    out: list[int | str] = []
    for part in str(text).split(","):
        part = part.strip()
        if part == "all":
            out.append("all")
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise UnsupError(f"bad label budget {part!r}; use positive integers or 'all', e.g. 1,10,100,all")
    return out
