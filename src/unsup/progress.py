"""Progress bars for every long stage (pretraining, features, probes,
references): tqdm on stderr, silent when the caller passes no label
(``--quiet``). A bar redraws itself every ``HEARTBEAT`` seconds even when no
step finished (one all-label fit can take a minute), so a log never goes quiet
for longer than that."""

from __future__ import annotations

import threading

from tqdm.auto import tqdm

HEARTBEAT = 5.0  # seconds


class _Bar(tqdm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stop = threading.Event()
        if not self.disable:
            threading.Thread(target=self._beat, daemon=True).start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            self.refresh()

    def close(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()
        super().close()


# a time budget advances by fractions of a second: whole seconds on screen, not 10.690488378000737/600.0
_SECONDS_FORMAT = "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"


def bar(label: str | None, total: float, unit: str) -> tqdm:
    return _Bar(total=total, desc=label, unit=unit, disable=label is None, leave=False, mininterval=2.0, dynamic_ncols=True,
                bar_format=_SECONDS_FORMAT if unit == "s" else None)
