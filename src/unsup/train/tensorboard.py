"""TensorBoard event files that mirror ``metrics.jsonl``.

Each record the training loop or the k-NN monitor appends to ``metrics.jsonl``
is also written as scalars under ``RUN/tensorboard/``: ``train/<key>`` for the
loss terms, ``lr``, ``images_per_s`` and any other number a method logs, and
``monitor/knn_accuracy`` for the monitor, with the record's step as global
step. Nothing is computed here; ``metrics.jsonl`` stays the source of truth.
Without the ``tensorboard`` package no event file is written.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DIRNAME = "tensorboard"
# the record's position, not a curve
_NOT_SCALARS = {"step", "images_seen", "seconds", "event"}
_RENAMED = {"knn_monitor": "monitor/knn_accuracy"}


def available() -> bool:
    """Whether ``torch.utils.tensorboard`` can write (it needs the ``tensorboard`` package)."""
    return importlib.util.find_spec("tensorboard") is not None


def scalars(record: dict) -> dict[str, float]:
    """The TensorBoard tags and values of one metrics record."""
    out = {}
    for key, value in record.items():
        if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[_RENAMED.get(key, f"train/{key}")] = float(value)
    return out


class TensorBoardLog:
    """Writes metrics records to ``RUN/tensorboard/``; the writer opens on the first record."""

    def __init__(self, run_path: str | Path):
        self.log_dir = Path(run_path) / DIRNAME
        self._writer = None

    def _open(self, first_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a resumed run logged after its last checkpoint, so steps are not doubled
        return SummaryWriter(log_dir=str(self.log_dir), purge_step=first_step)

    def write(self, record: dict) -> None:
        step = record.get("step")
        values = scalars(record)
        if step is None or not values:
            return
        if self._writer is None:
            self._writer = self._open(int(step))
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, global_step=int(step))
        # records come every few steps; flushing keeps the files readable while a run (or a method's own fit) is going
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def open_log(run_path: str | Path | None, enabled: bool = True) -> TensorBoardLog | None:
    """A ``TensorBoardLog`` for a run directory, or None when turned off, in memory or without tensorboard."""
    if not enabled or run_path is None or not available():
        return None
    return TensorBoardLog(run_path)
