"""Small figure helpers shared by methods, evaluation and the report.

Every helper draws on a private matplotlib ``Figure`` with the Agg canvas (no
pyplot, so the caller's backend and global state are left alone) and writes
atomically: a temporary file in the target folder, then ``os.replace``. A
reader never sees half a PNG, and an existing file survives a failed write.
matplotlib, torchvision and scikit-learn are imported only when a helper runs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it into place.

    On an exception the temporary file is removed and ``path`` is untouched.
    The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _new_figure(figsize: tuple[float, float], layout: str | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib ``Figure`` as PNG atomically (tight bounding box)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------- image grid


def save_image_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    nrow: int = 8,
    title: str | None = None,
    padding: int = 2,
    scale: int = 1,
) -> Path:
    """Tile ``images`` into one PNG with ``torchvision.utils.make_grid``.

    ``images`` is ``(N, C, H, W)`` (C in {1, 3}; a ``(N, H, W)`` batch is taken
    as grayscale), either float in [0, 1] (clamped) or uint8. ``nrow`` is the
    number of images per row. Without a title the PNG is the grid itself,
    pixel for pixel (``scale`` > 1 enlarges it by nearest neighbour), so its
    size is ``(ceil(N/nrow)*(H+padding)+padding, min(N,nrow)*(W+padding)+padding)``
    times ``scale``. With a title, the grid is drawn under the title by matplotlib.
    """
    from PIL import Image
    from torchvision.utils import make_grid

    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"save_image_grid expects a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"save_image_grid expects 1 or 3 channels, got {images.shape[1]}")
    images = images.detach().cpu()
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    else:
        images = images.float().nan_to_num(0.0).clamp(0.0, 1.0)
    grid = make_grid(images, nrow=max(1, int(nrow)), padding=padding, pad_value=1.0)  # (3, H', W')
    array = (grid.permute(1, 2, 0).mul(255.0).round().clamp(0, 255).to(torch.uint8)).numpy()
    if scale > 1:
        array = array.repeat(scale, axis=0).repeat(scale, axis=1)
    if images.shape[1] == 1:
        array = array[:, :, 0]

    if title is None:
        with atomic_path(path) as tmp:
            Image.fromarray(array).save(tmp, format="PNG")
        return Path(path)

    h, w = array.shape[:2]
    # about 3 screen pixels per grid pixel at dpi 120, between 3 and 12 inches on the long side
    long_side = min(12.0, max(3.0, 3.0 * max(w, h) / 120.0))
    fig = _new_figure((long_side * w / max(w, h), long_side * h / max(w, h) + 0.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- embedding plot


def save_embedding_plot(
    features: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str] | None,
    path: str | os.PathLike,
    title: str = "",
    max_points: int = 2000,
    seed: int = 0,
) -> Path:
    """A 2-D t-SNE map of ``features`` ``(N, D)`` coloured by ``labels`` ``(N,)``.

    At most ``max_points`` points are embedded (a fixed random subset drawn
    from ``seed``); t-SNE uses ``init='pca'`` and a perplexity that fits small
    sets. ``class_names[k]`` names label ``k`` in the legend (``None``: the
    label number).
    """
    from sklearn.manifold import TSNE

    x = _to_numpy(features).astype(np.float32).reshape(len(features), -1)
    y = _to_numpy(labels).astype(np.int64).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"save_embedding_plot: {len(x)} feature rows but {len(y)} labels")
    if len(x) < 3:
        raise ValueError(f"save_embedding_plot needs at least 3 points, got {len(x)}")
    if len(x) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), size=max_points, replace=False))
        x, y = x[keep], y[keep]
    x = np.nan_to_num(x)
    perplexity = float(min(30.0, max(1.0, (len(x) - 1) / 3.0)))
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
    # scikit-learn's Barnes-Hut t-SNE spins OpenMP threads; on a small or busy
    # machine that is tens of times slower than one thread (300 points: 45 s vs
    # 1 s on 2 shared cores), so use at most half the cores, at most 4.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits={"openmp": max(1, min(4, (os.cpu_count() or 1) // 2))}):
        xy = tsne.fit_transform(x)

    import matplotlib

    classes = np.unique(y)
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    fig = _new_figure((6.5, 5.5))
    ax = fig.add_subplot(1, 1, 1)
    for i, k in enumerate(classes):
        m = y == k
        name = class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k)
        ax.scatter(xy[m, 0], xy[m, 1], s=6, color=cmap(i % cmap.N), label=name, alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, markerscale=2.5, frameon=False)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- curves


def save_curve(
    xs: Sequence[float],
    ys_dict: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    logx: bool = False,
) -> Path:
    """One line per entry of ``ys_dict`` (name -> values at ``xs``) in one PNG.

    A value may be ``None`` or NaN (a gap). A name's values may also be
    shorter than ``xs`` (a run still in progress): the first ``len`` xs are used.
    """
    fig = _new_figure((6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    xs = [float(v) for v in xs]
    for name, ys in ys_dict.items():
        vals = [np.nan if v is None else float(v) for v in ys]
        ax.plot(xs[: len(vals)], vals, marker="o" if len(vals) <= 30 else None, markersize=3, label=str(name))
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ys_dict:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


@dataclass
class Series:
    """One curve of an accuracy plot: ``points`` are ``(x, y, spread)``.

    ``band=False`` draws a line with error bars of ``spread``; ``band=True``
    shades ``y ± spread`` around a thin line (a distribution, e.g. random inits).
    ``style`` goes to matplotlib (color, linestyle, marker, linewidth, alpha).
    """

    label: str
    points: list[tuple[float, float, float]]
    band: bool = False
    style: dict = field(default_factory=dict)


def save_accuracy_curves(
    series: Sequence[Series],
    ticks: Sequence[tuple[float, str]],
    path: str | os.PathLike,
    title: str = "",
    xlabel: str = "labelled images per class",
    ylabel: str = "test accuracy (%)",
    figsize: tuple[float, float] = (7.5, 4.8),
    legend_inside: bool = False,
) -> Path:
    """Accuracy against a log x axis with the given ``(x, label)`` ticks; the legend on the right,
    or inside the axes where it hides the fewest points."""
    fig = _new_figure(figsize)
    ax = fig.add_subplot(1, 1, 1)
    _draw_accuracy(ax, series, ticks, xlabel, ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if legend_inside:
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return save_figure(fig, path)


def save_accuracy_panels(
    panels: Sequence[tuple[str, Sequence[Series]]],
    ticks: Sequence[tuple[float, str]],
    path: str | os.PathLike,
    title: str = "",
    columns: int = 3,
    xlabel: str = "labelled images per class",
    ylabel: str = "test accuracy (%)",
) -> Path:
    """Small multiples: one accuracy plot (as ``save_accuracy_curves``) per ``(panel title, series)``, on a
    shared y axis, each with its own legend: many methods stay readable where one plot would repeat colours."""
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    fig = _new_figure((4.6 * columns, 3.4 * rows + 0.4), layout="constrained")
    first = None
    for i, (name, series) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, i + 1, sharey=first)
        first = first or ax
        _draw_accuracy(ax, series, ticks, xlabel if i >= len(panels) - columns else "", ylabel if i % columns == 0 else "")
        ax.set_title(name, fontsize=10)
        ax.legend(loc="best", fontsize=7, framealpha=0.85)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def _draw_accuracy(ax, series: Sequence[Series], ticks: Sequence[tuple[float, str]], xlabel: str, ylabel: str) -> None:
    for s in series:
        if not s.points:
            continue
        xs, ys, spread = (list(v) for v in zip(*sorted(s.points)))
        if s.band:
            style = {"alpha": 0.25, **s.style}
            line = {k: v for k, v in style.items() if k not in ("alpha", "marker")}
            ax.fill_between(xs, [y - e for y, e in zip(ys, spread)], [y + e for y, e in zip(ys, spread)],
                            color=style.get("color"), alpha=style["alpha"], linewidth=0, label=s.label)
            ax.plot(xs, ys, **{"linewidth": 1.0, **line})
        else:
            ax.errorbar(xs, ys, yerr=spread, capsize=3, markersize=4, label=s.label, **s.style)
    ax.set_xscale("log")
    if ticks:
        ax.set_xticks([x for x, _ in ticks])
        ax.set_xticklabels([label for _, label in ticks])
        ax.minorticks_off()
        lo, hi = min(x for x, _ in ticks), max(x for x, _ in ticks)
        ax.set_xlim(lo / 1.5, hi * 1.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
