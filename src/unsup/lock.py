"""One writer per run directory: an exclusive lock file, ``RUN/.lock``.

The lock file is created with ``O_CREAT | O_EXCL`` and holds the holder's PID,
host, process start time and the time it was taken. A second writer is
refused with one line naming the holder. A lock whose process is gone (same
host, PID not running, or running but started at another time: a reused PID)
is stale and is taken over, with one line saying so. Taking and taking over
happen under an advisory ``flock`` on the directory itself, so two processes
never both take over the same stale lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import UnsupError

LOCK = ".lock"


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name in parentheses may hold spaces


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def _directory_mutex(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no flock (Windows, some network file systems): O_EXCL alone
            pass
        yield
    finally:
        os.close(fd)  # closing releases the flock


class RunLock:
    """``with RunLock(path):`` holds ``path/.lock`` for the block; ``path`` is created if missing."""

    def __init__(self, path: str | Path, what: str = "a run"):
        self.path = Path(path)
        self.file = self.path / LOCK
        self.what = what
        self.held = False
        self.created = False  # the directory was made here: removed again on release if left empty

    def _info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()),
                "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "what": self.what}

    def _create(self) -> None:
        fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self._info()) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _holder(self) -> dict | None:
        try:
            info = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def _stale(self, holder: dict | None) -> bool:
        if holder is None:  # unreadable: its writer died inside the mutex, between create and write
            return True
        if holder.get("host") != socket.gethostname():
            return False  # a process on another machine cannot be checked from here
        pid = holder.get("pid")
        if not isinstance(pid, int) or not _alive(pid):
            return True
        start = _start_time(pid)
        return holder.get("start") is not None and start is not None and start != holder.get("start")

    def acquire(self) -> None:
        try:
            self.created = not self.path.exists()
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UnsupError(f"{self.path}: cannot create the run directory ({e.strerror}); choose another --out") from None
        if not self.path.is_dir():
            raise UnsupError(f"{self.path}: not a directory; choose another --out")
        with _directory_mutex(self.path):
            try:
                self._create()
            except FileExistsError:
                holder = self._holder()
                if not self._stale(holder):
                    h = holder or {}
                    raise UnsupError(
                        f"{self.path} is in use by {h.get('what', 'another run')} (PID {h.get('pid')} on {h.get('host')}, "
                        f"since {h.get('since')}); wait for it to finish, or delete {self.file} if that process is gone") from None
                self.file.unlink(missing_ok=True)
                self._create()
                who = f"PID {holder.get('pid')} on {holder.get('host')}" if holder else "an unreadable lock"
                print(f"unsup: {self.file}: took over a stale lock ({who} is no longer running)", file=sys.stderr)
            except OSError as e:  # read-only, full, gone
                raise UnsupError(f"{self.path}: cannot write the lock file ({e.strerror}); choose another --out") from None
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = self._holder()
        if holder is None or (holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()):
            self.file.unlink(missing_ok=True)
        if self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty: a refused or failed first run leaves no trace

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
