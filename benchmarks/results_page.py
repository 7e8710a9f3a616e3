"""A results page: tables the benchmark generates, then a hand-written
reading below ``READING_MARK`` that a rewrite of the tables keeps."""

from __future__ import annotations

from pathlib import Path

READING_MARK = "<!-- reading (hand-written, kept when the tables are rewritten) -->"


def write_results(path: Path, tables: str) -> None:
    """Write ``tables`` to ``path``, keeping the reading of the page already there."""
    old = path.read_text() if path.exists() else ""
    reading = old[old.index(READING_MARK):] if READING_MARK in old else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tables.rstrip("\n") + "\n\n" + reading if reading else tables)
