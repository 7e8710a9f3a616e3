"""The catalogue: method name -> class. Each method module registers itself
with ``@register``; its class carries its family, paper and config dataclass,
the one source of truth for its defaults."""

from __future__ import annotations

import importlib
import pkgutil

from .errors import UnsupError

METHODS: dict[str, type] = {}


def register(cls):
    METHODS[cls.name] = cls
    return cls


def _discover() -> None:
    """Import every module under ``unsup.methods`` so each registers itself."""
    from . import methods

    for info in pkgutil.walk_packages(methods.__path__, methods.__name__ + "."):
        importlib.import_module(info.name)


def get_method(name: str) -> type:
    _discover()
    if name not in METHODS:
        raise UnsupError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def all_methods() -> list[type]:
    _discover()
    from .methods.base import FAMILIES

    def order(cls):
        return (FAMILIES.index(cls.family) if cls.family in FAMILIES else len(FAMILIES), cls.name)

    return sorted(METHODS.values(), key=order)
