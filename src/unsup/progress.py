"""Progress bars for the long stages around training (features, probes,
references): tqdm on stderr, refreshed at most every 2 s, and silent when the
caller passes no label (``--quiet``)."""

from __future__ import annotations

from tqdm.auto import tqdm


def bar(label: str | None, total: int, unit: str) -> tqdm:
    return tqdm(total=total, desc=label, unit=unit, disable=label is None, leave=False, mininterval=2.0, dynamic_ncols=True)
