"""The device lock: one model family per device at a time, across threads and processes.

A file lock per device (`filelock`), so it holds across threads, processes and workbench
roots on one machine; the kernel frees it if the holder dies, even by `kill -9`. The
holder writes who it is next to the lock, for "waiting for ..." messages.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from workbench.errors import WorkbenchError


class PhaseCancelled(WorkbenchError):
    """Stopped while waiting for the device lock."""


def lock_dir() -> Path:
    """Machine-wide by default (a device is shared by every root); $WORKBENCH_LOCK_DIR overrides."""
    return Path(os.environ.get("WORKBENCH_LOCK_DIR")
                or Path.home() / ".cache" / "workbench" / "locks")


class PhaseLock:
    """One lock per device, across threads and processes. Re-entrant within a thread."""

    def __init__(self, device: str = "cpu", directory: str | os.PathLike[str] | None = None) -> None:
        self.device = device
        d = Path(directory) if directory is not None else lock_dir()
        d.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", device)
        self.path = d / f"device-{safe}.lock"
        self.holder_path = d / f"device-{safe}.holder.json"
        self._lock = FileLock(str(self.path), thread_local=False)

    @property
    def is_locked(self) -> bool:
        return self._lock.is_locked

    def holder(self) -> dict[str, Any] | None:
        """Who holds the device (written by the holder; advisory, for status messages)."""
        try:
            return json.loads(self.holder_path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self, *, timeout: float | None = None, poll_s: float = 0.2,
                should_stop: Callable[[], bool] | None = None,
                on_wait: Callable[[dict[str, Any] | None], None] | None = None,
                holder: dict[str, Any] | None = None) -> None:
        """Block until the device is ours; `should_stop()` True → PhaseCancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waited = False
        while True:
            try:
                self._lock.acquire(timeout=poll_s)
                break
            except Timeout:
                if should_stop is not None and should_stop():
                    raise PhaseCancelled(f"stopped while waiting for device {self.device}") from None
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"device {self.device} still locked after {timeout} s "
                                       f"(held by {self.holder()})") from None
                if on_wait is not None and not waited:
                    on_wait(self.holder())
                waited = True
        self.holder_path.write_text(json.dumps({"pid": os.getpid(), "at": time.time(),
                                                **(holder or {})}))

    def release(self) -> None:
        if self._lock.lock_counter == 1:
            try:
                self.holder_path.unlink()
            except OSError:
                pass
        self._lock.release()

    def __enter__(self) -> PhaseLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
