"""Training curves of a run from its ``metrics.jsonl`` records: a figure
(loss vs images seen, learning rate, k-NN monitor accuracy vs wall-clock
seconds) and a one-line summary, for ``unsup show``."""

from __future__ import annotations

from pathlib import Path


def _rows(records: list[dict], key: str) -> list[dict]:
    """The records holding a number under ``key`` (the done event and other kinds are left out)."""
    return [r for r in records if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)]


def summary(records: list[dict]) -> str:
    """One line: steps, images seen, final loss, best monitor accuracy, wall-clock."""
    steps = max((r["step"] for r in _rows(records, "step")), default=0)
    images = max((r["images_seen"] for r in _rows(records, "images_seen")), default=0)
    seconds = max([r["seconds"] for r in _rows(records, "seconds")] + [r["pretrain_seconds"] for r in _rows(records, "pretrain_seconds")],
                  default=0.0)
    losses = _rows(records, "loss")
    monitor = _rows(records, "knn_monitor")
    parts = [f"{steps} steps", f"{images} images seen", f"final loss {losses[-1]['loss']:.4f}" if losses else "no loss logged"]
    if monitor:
        parts.append(f"best k-NN monitor {max(r['knn_monitor'] for r in monitor):.3f}")
    parts.append(f"{seconds:.1f} s wall-clock")
    return "training: " + ", ".join(parts)


def plot_curves(records: list[dict], out: str | Path) -> Path | None:
    """Draw the curves to ``out`` (PNG); None when the records hold no loss, rate or monitor row."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the figure goes to a file
    import matplotlib.pyplot as plt

    panels = [(key, x, label) for key, x, label in (("loss", "images_seen", "loss"), ("lr", "images_seen", "learning rate"),
                                                     ("knn_monitor", "seconds", "k-NN monitor accuracy"))
              if _rows(records, key) and all(x in r for r in _rows(records, key))]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (key, x, label) in zip(axes[0], panels):
        rows = _rows(records, key)
        ax.plot([r[x] for r in rows], [r[key] for r in rows], marker="o" if len(rows) < 20 else None, markersize=3)
        ax.set_xlabel("images seen" if x == "images_seen" else "wall-clock seconds")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def time_to_accuracy(records: list[dict]) -> dict | None:
    """The k-NN monitor's trace (training seconds, images seen, accuracy) and
    when it first reached raw pixels' k-NN accuracy on the same images
    (``seconds_to_raw``, None: not reached); None for a run without a monitor."""
    trace = [[r["seconds"], r.get("images_seen"), r["knn_monitor"]] for r in _rows(records, "knn_monitor") if "seconds" in r]
    if not trace:
        return None
    raw = next((r["knn_monitor_raw"] for r in _rows(records, "knn_monitor_raw")), None)
    reached = next((t for t in trace if raw is not None and t[2] >= raw), None)
    return {"trace": trace, "raw_pixels": raw, "seconds_to_raw": reached[0] if reached else None,
            "images_to_raw": reached[1] if reached else None}
