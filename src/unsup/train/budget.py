"""A pretraining budget: images seen (``100k``, ``60000``, ``5000img``) or
wall-clock seconds (``90s``, ``2m``, ``1h``), so that families compare fairly;
the same syntax gives the checkpoint interval (``--checkpoint-every``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UnsupError

_UNITS = {"s": 1, "m": 60, "h": 3600, "k": 1_000, "M": 1_000_000}


@dataclass(frozen=True)
class Budget:
    kind: str  # "images" | "seconds"
    value: float

    def __str__(self) -> str:
        if self.kind == "seconds":
            return f"{self.value:g}s"
        return f"{self.value / 1000:g}k" if self.value >= 1000 else f"{int(self.value)}"

    def progress(self, images_seen: int, seconds: float) -> float:
        done = images_seen if self.kind == "images" else seconds
        return min(1.0, done / self.value)

    def done(self, images_seen: int, seconds: float) -> bool:
        return self.progress(images_seen, seconds) >= 1.0


def parse_budget(text: str | int | Budget) -> Budget:
    if isinstance(text, Budget):
        return text
    s = str(text).strip()
    # an image count may end in "img" or "images" (5000img, 20k images)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:([smh])|([kM]?)\s*(?:img|images)?)", s)
    if not m or float(m.group(1)) <= 0:
        raise UnsupError(f"bad budget {text!r}; give images seen (50000, 100k, 1M) or time (90s, 2m, 1h)")
    value, unit = float(m.group(1)), m.group(2) or m.group(3)
    kind = "seconds" if unit in ("s", "m", "h") else "images"
    return Budget(kind, value * _UNITS.get(unit, 1))
