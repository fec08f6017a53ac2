"""Engine noise goes to the job's log file, not into the notebook.

vLLM and torch talk while they start: FutureWarnings, "Triton not available", NUMA
binding, safetensors progress bars, INFO lines. A worker thread in a notebook kernel
shares the kernel's stdout/stderr, so all of it landed in whatever cell was running;
`VLLM_LOGGING_LEVEL=ERROR` does not reach the C++ prints nor the warnings.

`quiet_output(path)` sends it to `path` (the job's `engine.log`) while a job runs:

- **Python level**, per thread: `sys.stdout`/`sys.stderr` become routers that send what
  the job's thread writes (print, warnings, logging handlers, tqdm bars; also its
  `asyncio.to_thread` helpers, which inherit its context) to the log and everything else
  (the user's cells, the main thread) where it went before. Logging handlers that hold
  the old stream object (torch's, created when a cell imported it) are pointed at the
  router meanwhile. A logging
  handler created while routed keeps the router, so later engine logs follow the job too.
- **File-descriptor level**, process-wide: fds 1 and 2 point at the log (`os.dup2`), for
  C/C++ prints and child processes started meanwhile (a phase's engine process). Python
  writes of other threads that were fd-backed (a terminal's sys.stderr, e.g. the demo's
  progress bar) keep their original destination through a duplicate of the old fd.

- **Rich displays**, in a kernel: what a routed context would display (tqdm.auto's notebook
  bar while vLLM loads weights) is dropped.

Nested and concurrent uses are counted: the first to enter redirects the fds, the last to
leave restores them.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import io
import logging
import os
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TextIO

#: the job's log file, in its folder: what the engine said while the job ran
ENGINE_LOG = "engine.log"

_lock = threading.RLock()
_depth = 0
_saved_fds: dict[int, int] = {}
_log_fd: int | None = None
#: where this context's writes go: set in the job's thread, inherited by
#: `asyncio.to_thread` workers (they copy the context), not by other threads
_route: contextvars.ContextVar[TextIO | None] = contextvars.ContextVar("workbench_quiet",
                                                                      default=None)
_originals: dict[str, TextIO] = {}  # sys.stdout/sys.stderr before the first entry
_copies: dict[str, TextIO] = {}  # streams on copies of the old fds (fd-backed originals)
_routers: weakref.WeakSet[_Router] = weakref.WeakSet()


class _Router(io.TextIOBase):
    """A sys.stdout/sys.stderr that sends each thread's writes where that thread belongs."""

    def __init__(self, default: TextIO, name: str) -> None:
        self.default = default
        self.name = name
        _routers.add(self)

    def _target(self) -> TextIO:
        return _route.get() or self.default

    def write(self, s: str) -> int:
        target = self._target()
        n = target.write(s)
        if target is not self.default:
            target.flush()
        return n if isinstance(n, int) else len(s)

    def flush(self) -> None:
        for t in {id(x): x for x in (self._target(), self.default)}.values():
            with contextlib.suppress(Exception):
                t.flush()

    def isatty(self) -> bool:
        if self._target() is not self.default:
            return False
        try:
            return bool(self.default.isatty())
        except ValueError:  # the stream was closed (atexit hooks ask after pytest closed it)
            return False

    def fileno(self) -> int:
        return self.default.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.default, "encoding", "utf-8") or "utf-8"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.default, name)


def _libc_flush() -> None:
    """Push C stdio buffers out before an fd changes, so nothing lands on the wrong side."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


def _fd_backed(stream: Any, fd: int) -> bool:
    try:
        return isinstance(stream, io.TextIOWrapper) and stream.fileno() == fd
    except (OSError, ValueError):
        return False


def _handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers]


def _repoint_handlers(old: object, new: Any) -> None:
    """Logging handlers made before (e.g. torch's, when it was imported by a cell) write
    to the old stream object: point them at `new` (the router, or back)."""
    for h in _handlers():
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is old:
            with contextlib.suppress(AttributeError):  # the last-resort handler: read-only
                h.setStream(new)


def _hold_displays() -> None:
    """In a kernel, rich displays from a routed context (the notebook progress bar vLLM's
    tqdm.auto makes while loading weights) are dropped instead of landing in a cell."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    pub = getattr(shell, "display_pub", None)
    if pub is None or getattr(pub.publish, "_workbench_quiet", False):
        return
    publish, clear = pub.publish, pub.clear_output

    def quiet_publish(*args: Any, **kwargs: Any) -> Any:
        return None if _route.get() is not None else publish(*args, **kwargs)

    def quiet_clear(*args: Any, **kwargs: Any) -> Any:
        return None if _route.get() is not None else clear(*args, **kwargs)

    quiet_publish._workbench_quiet = True  # type: ignore[attr-defined]
    pub.publish, pub.clear_output = quiet_publish, quiet_clear


def _install(log_path: Path) -> None:
    """First entry: fds 1/2 → the log; sys.stdout/sys.stderr → routers."""
    global _log_fd
    _hold_displays()
    _libc_flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    _log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        current = getattr(sys, name)
        _originals[name] = current
        default: TextIO = current
        try:
            saved = os.dup(fd)
        except OSError:  # no such fd (a daemon without stdio): Python level only
            saved = -1
        if saved >= 0:
            _saved_fds[fd] = saved
            if _fd_backed(current, fd):
                # the other threads' Python writes keep going where they went: the old fd
                default = open(os.dup(saved), "w", buffering=1,  # noqa: SIM115
                               encoding=current.encoding, errors="replace")
                _copies[name] = default
            os.dup2(_log_fd, fd)
        router = _Router(default, name)
        setattr(sys, name, router)
        _repoint_handlers(current, router)


def _uninstall() -> None:
    """Last exit: the fds and sys.stdout/sys.stderr as they were."""
    global _log_fd
    _libc_flush()
    for fd, name in ((1, "stdout"), (2, "stderr")):
        router = getattr(sys, name)
        with contextlib.suppress(Exception):
            router.flush()
        saved = _saved_fds.pop(fd, None)
        if saved is not None:
            os.dup2(saved, fd)
            os.close(saved)
        original = _originals.pop(name, None)
        if original is not None:
            for r in list(_routers):  # a logging handler may keep one: it now writes here
                if r.name == name:
                    r.default = original
                    _repoint_handlers(r, original)
            if isinstance(router, _Router):
                setattr(sys, name, original)  # unless someone replaced it meanwhile
        copy = _copies.pop(name, None)
        if copy is not None:
            with contextlib.suppress(Exception):
                copy.close()
    if _log_fd is not None:
        os.close(_log_fd)
        _log_fd = None


@contextlib.contextmanager
def quiet_output(log_path: str | os.PathLike[str]) -> Iterator[IO[str]]:
    """Route this thread's output (and its `asyncio.to_thread` helpers'), and fds 1/2, to
    `log_path` while the block runs."""
    global _depth
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
    with _lock:
        if _depth == 0:
            _install(path)
        _depth += 1
    token = _route.set(log)
    try:
        yield log
    finally:
        _route.reset(token)
        with _lock:
            _depth -= 1
            if _depth == 0:
                try:
                    _uninstall()
                except Exception:  # never let tidying up the output fail the job
                    logging.getLogger("workbench.quiet").warning("restoring output failed",
                                                                 exc_info=True)
        log.close()
