"""Latent vector arithmetic (Radford et al. 2015, Fig. 7) on a measurable
attribute: brightness. Codes are averaged over three exemplars per concept,
as in the paper: z(light A) - z(dark A) + z(dark B) should decode to a
light B. Concepts come from class labels (real images through an inverse
encoder) or from class guesses on samples."""

from __future__ import annotations

from pathlib import Path

import torch


def ink_brightness(images01: torch.Tensor, thresh: float = 0.1) -> torch.Tensor:
    """Mean intensity of the object's pixels (those above ``thresh``)."""
    x = images01.float().flatten(1)
    ink = (x > thresh).float()
    return (x * ink).sum(1) / ink.sum(1).clamp(min=1)


@torch.no_grad()
def brightness_arithmetic(decode, z: torch.Tensor, images01: torch.Tensor, classes: torch.Tensor, names,
                          path: Path, label: str, pairs: int = 4, k: int = 3) -> tuple[Path, float]:
    """Rows: light A | dark A | dark B | light A - dark A + dark B. Returns the
    figure and the mean brightness gain of the result over dark B."""
    from ...report.figures import save_image_grid

    bright = ink_brightness(images01)
    counts = torch.bincount(classes.cpu(), minlength=len(names) or int(classes.max()) + 1)
    order = [int(c) for c in torch.argsort(counts, descending=True) if counts[c] >= 2 * k]
    rows, gains, titles = [], [], []
    for i in range(min(pairs, len(order) // 2)):
        a, b = order[2 * i], order[2 * i + 1]
        ia = torch.nonzero(classes.cpu() == a).flatten()
        ib = torch.nonzero(classes.cpu() == b).flatten()
        sa, sb = ia[torch.argsort(bright[ia])], ib[torch.argsort(bright[ib])]
        light_a, dark_a, dark_b = z[sa[-k:]].mean(0), z[sa[:k]].mean(0), z[sb[:k]].mean(0)
        result = light_a - dark_a + dark_b
        imgs = decode(torch.stack([light_a, dark_a, dark_b, result]))
        rows.append(imgs)
        gains.append(float(ink_brightness(imgs[3:4]) - ink_brightness(imgs[2:3])))
        titles.append(f"{names[a] if names else a}->{names[b] if names else b}")
    if not rows:
        return path, float("nan")
    gain = sum(gains) / len(gains)
    save_image_grid(torch.cat(rows).cpu(), path, nrow=4,
                    title=f"{label}: light A - dark A + dark B (rows {', '.join(titles)}); brightness gain {gain:+.3f}")
    return path, gain
