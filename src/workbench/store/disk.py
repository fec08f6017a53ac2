"""The store's disk: free space, the floor below which jobs pause, and a small reserve.

A full disk is a state, never a crashed worker or a torn file (DESIGN.md). Three parts:

- **the floor** (`WORKBENCH_MIN_FREE_MB`, default 200): a running job pauses *before* the
  disk is full (its context checks at every counter update), a worker claims nothing
  while the disk is below it, and a submission is refused;
- **the errors**: `ENOSPC`, `EDQUOT` and SQLite's "database or disk is full" anywhere in
  the write path mean the same thing (`is_disk_full`), and end in the same state;
- **the reserve** (`WORKBENCH_DISK_RESERVE_MB`, default 4): a worker keeps a file of that
  size in the store and deletes it when the disk fills, so the few SQLite pages that
  record the pause can still be written (measured: on a full tmpfs the heartbeat's
  COMMIT failed with "database or disk is full"). It is made again when space is back.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.errors import DiskFull

MIB = 1 << 20
#: the message of a job paused by a full disk starts with this (the worker resumes those)
PAUSED = "paused: disk full"
RESERVE_NAME = ".disk-reserve"


def min_free_bytes() -> int:
    return int(float(os.environ.get("WORKBENCH_MIN_FREE_MB", 200)) * MIB)


def reserve_bytes() -> int:
    return int(float(os.environ.get("WORKBENCH_DISK_RESERVE_MB", 4)) * MIB)


def free_bytes(folder: str | os.PathLike[str]) -> int:
    return shutil.disk_usage(folder).free


def is_disk_full(exc: BaseException | None) -> bool:
    """ENOSPC / EDQUOT / SQLite "disk is full", on `exc` or anything it was raised from."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, DiskFull):
            return True
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.Error) and "disk is full" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def disk_full(folder: str | os.PathLike[str], *, submit: bool = False) -> DiskFull:
    """The error in words for `folder` as it is now."""
    return DiskFull(str(folder), free_bytes(folder), min_free_bytes(), submit=submit)


def below_floor(folder: str | os.PathLike[str]) -> bool:
    return free_bytes(folder) < min_free_bytes()


def check_space(folder: str | os.PathLike[str], *, submit: bool = False) -> None:
    """Raise DiskFull when the free space on `folder`'s disk is below the floor."""
    if below_floor(folder):
        raise disk_full(folder, submit=submit)


class Reserve:
    """A file of `reserve_bytes()` in the store root, given back when the disk fills."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = Path(root) / RESERVE_NAME

    def ensure(self) -> bool:
        """Make the reserve if it is missing and the disk has room above the floor for it."""
        size = reserve_bytes()
        if size <= 0 or (self.path.exists() and self.path.stat().st_size >= size):
            return True
        if free_bytes(self.path.parent) < min_free_bytes() + size:
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        except OSError:
            self.path.unlink(missing_ok=True)
            return False
        return True

    def release(self) -> bool:
        """Delete the reserve; True if there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


@contextmanager
def refused_when_full(folder: str | os.PathLike[str]) -> Iterator[None]:
    """A submission into the store at `folder`: refused in words when the disk is below
    the floor, or when it fills while the input is copied (the caller removes what it
    staged; nothing is queued)."""
    check_space(folder, submit=True)
    try:
        yield
    except Exception as e:
        if is_disk_full(e) and not isinstance(e, DiskFull):
            raise disk_full(folder, submit=True) from e
        raise
