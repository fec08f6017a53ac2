"""A small real filesystem for disk-full tests: a tmpfs mount, and a filler file that takes
its free space at a chosen moment (RECIPES.md: mounting works as root here and in CI)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

MIB = 1 << 20


@contextlib.contextmanager
def small_fs(size_mib: int = 48) -> Iterator[Path]:
    """A fresh tmpfs of `size_mib`; skips (with the reason) where mounting is refused."""
    mnt = Path(tempfile.mkdtemp(prefix="wb-smallfs-"))
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here (needs root): {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def fill(folder: Path, leave_bytes: int = 0, name: str = "filler") -> Path:
    """Take the free space of `folder`'s filesystem, leaving about `leave_bytes`."""
    path = folder / name
    take = max(0, shutil.disk_usage(folder).free - leave_bytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if take:
            with contextlib.suppress(OSError):
                os.posix_fallocate(fd, os.fstat(fd).st_size, take)
        if leave_bytes == 0:  # the last pages, until the filesystem says it is full
            chunk = b"\0" * 4096
            while True:
                try:
                    os.write(fd, chunk)
                except OSError:
                    break
    finally:
        os.close(fd)
    return path
