"""Engines for a phase: built in this process, or in a child process made for the phase.

`EngineSpec` names an engine ("package.module:Class" + keyword arguments) so it can be
built anywhere. `InlineEngine` builds it here; unload is `del` + `gc.collect()` +
`malloc_trim(0)`. `ChildEngine` starts `python -m workbench.runtime.child`, which builds
and loads it there and answers method calls over a socket (iterators stream item by
item); unload is the child's exit, which returns everything the model held. The child
dies with its parent (PDEATHSIG).
"""

from __future__ import annotations

import importlib
import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

import psutil
from pydantic import BaseModel, Field

from workbench.engines.memory import trim
from workbench.errors import WorkbenchError


class PhaseError(WorkbenchError):
    """The phase's engine failed to start, or its process died."""


class RemoteError(PhaseError):
    """An exception from the engine's child process that could not be sent as itself."""


class EngineSpec(BaseModel):
    """How to build an engine anywhere: `target` is "package.module:Class"."""

    target: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    def build(self) -> Any:
        module, _, cls = self.target.partition(":")
        if not cls:
            raise ValueError(f"engine target {self.target!r} is not 'module:Class'")
        return getattr(importlib.import_module(module), cls)(**self.kwargs)

    def key(self) -> str:
        """A stable name for the model (memory statistics are kept per key)."""
        model = self.kwargs.get("model")
        return f"{self.target}:{model}" if model is not None else self.target


def _call_unload(engine: Any) -> Any:
    unload = getattr(engine, "unload", None)
    return unload() if callable(unload) else None


class InlineEngine:
    """The engine itself, in this process."""

    isolation = "inline"

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.engine: Any = spec.build()
        self.pid = os.getpid()

    def load(self) -> None:
        load = getattr(self.engine, "load", None)
        if callable(load):
            load()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["engine"], name)

    def close(self) -> dict[str, Any]:
        report = _call_unload(self.engine)
        self.engine = None
        trim()
        return {"unload": report if isinstance(report, dict) else None}


def _is_stream(value: Any) -> bool:
    return isinstance(value, Iterator) and not isinstance(value, (str, bytes, dict, list))


def _dump_exc(e: BaseException) -> bytes:
    try:
        data = pickle.dumps(e)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(RemoteError(f"{type(e).__name__}: {e}"))


class ChildEngine:
    """The engine in a child process made for this phase; method calls go over a socket.

    A method that returns an iterator (e.g. `chat()`) streams its items back one by one,
    so the caller records each result as it arrives, exactly as with an inline engine.
    """

    isolation = "process"

    def __init__(self, spec: EngineSpec, *, start_timeout_s: float = 600) -> None:
        self.spec = spec
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*paths, *filter(None, [env.get("PYTHONPATH")])]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.runtime.child", "--serve", str(child_sock.fileno()),
             "--parent", str(os.getpid())],
            pass_fds=[child_sock.fileno()], env=env, stdin=subprocess.DEVNULL)
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.pid = self.proc.pid
        self._busy = False
        self._closed = False
        self.conn.send(("build", spec.model_dump()))
        if not self.conn.poll(start_timeout_s):
            self.kill()
            raise PhaseError(f"engine process for {spec.target} did not start in {start_timeout_s} s")
        self._expect("ready")

    def _recv(self) -> tuple[Any, ...]:
        try:
            return self.conn.recv()
        except (EOFError, OSError) as e:
            code = self.proc.poll()
            raise PhaseError(f"engine process {self.pid} for {self.spec.target} died"
                             f" (exit code {code})") from e

    def _expect(self, tag: str) -> Any:
        msg = self._recv()
        if msg[0] == "err":
            raise pickle.loads(msg[1])
        if msg[0] != tag:
            raise PhaseError(f"engine process sent {msg[0]!r}, expected {tag!r}")
        return msg[1] if len(msg) > 1 else None

    def load(self) -> None:
        """Loaded at build time in the child (so its memory is measured there)."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def remote(*args: Any, **kwargs: Any) -> Any:
            if self._busy:
                raise PhaseError("engine process is still streaming a previous call")
            if args and _is_stream(args[0]):  # iterators do not pickle: send the items
                args = (list(args[0]), *args[1:])
            self.conn.send(("call", name, args, kwargs))
            msg = self._recv()
            if msg[0] == "err":
                raise pickle.loads(msg[1])
            if msg[0] == "ok":
                return msg[1]
            return self._stream()

        return remote

    def _stream(self) -> Iterator[Any]:
        self._busy = True
        try:
            while True:
                msg = self._recv()
                if msg[0] == "item":
                    yield msg[1]
                elif msg[0] == "end":
                    self._busy = False
                    return
                elif msg[0] == "err":
                    self._busy = False
                    raise pickle.loads(msg[1])
        finally:
            if self._busy:  # abandoned mid-stream: the child cannot be reused
                self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.conn.close()
        self._closed = True

    def close(self, timeout_s: float = 120, graceful: bool = False) -> dict[str, Any]:
        """Ask the child to exit (after the engine's own unload if `graceful`); kill it if not."""
        if self._closed:
            return {"killed": True}
        report: dict[str, Any] = {}
        try:
            self.conn.send(("close", graceful))
            if self.conn.poll(timeout_s):
                report = self._expect("closed") or {}
        except (OSError, PhaseError, EOFError):
            report = {"killed": True}
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            report["killed"] = True
        self.kill()
        return report


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (even by kill -9)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _exit_now() -> None:
    """Leave without running the engine's teardown: the OS takes back everything at once.

    A model's own unload can take seconds (vLLM: ~3-8 s) and buys nothing when the whole
    process is about to go. Helper processes the engine started are killed first, so
    nothing outlives the phase.
    """
    for p in psutil.Process().children(recursive=True):
        try:
            p.kill()
        except psutil.Error:
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def serve(fd: int, parent_pid: int) -> int:
    """Child side of ChildEngine: build + load, answer calls, unload and exit on 'close'."""
    import resource

    _die_with_parent()
    if parent_pid and not psutil.pid_exists(parent_pid):
        return 1
    conn = Connection(fd)
    engine: Any = None
    try:
        msg = conn.recv()
        spec = EngineSpec(**msg[1])
        try:
            engine = spec.build()
            load = getattr(engine, "load", None)
            if callable(load):
                load()
        except BaseException as e:
            conn.send(("err", _dump_exc(e)))
            return 1
        conn.send(("ready", {"pid": os.getpid(), "rss": psutil.Process().memory_info().rss}))
        while True:
            msg = conn.recv()
            if msg[0] == "close":
                graceful = bool(msg[1]) if len(msg) > 1 else False
                rss_loaded = psutil.Process().memory_info().rss
                report = _call_unload(engine) if graceful else None
                conn.send(("closed", {
                    "rss_loaded": rss_loaded,
                    "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                    "unload": report if isinstance(report, dict) else None}))
                conn.close()
                _exit_now()
            _, name, args, kwargs = msg
            try:
                value = getattr(engine, name)(*args, **kwargs)
                if _is_stream(value):
                    conn.send(("stream",))
                    for item in value:
                        conn.send(("item", item))
                    conn.send(("end",))
                else:
                    conn.send(("ok", value))
            except Exception as e:
                conn.send(("err", _dump_exc(e)))
    except (EOFError, OSError):  # parent went away
        return 1


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="engine host for a phase (internal)")
    p.add_argument("--serve", type=int, required=True)
    p.add_argument("--parent", type=int, default=0)
    a = p.parse_args(argv)
    return serve(a.serve, a.parent)


if __name__ == "__main__":
    sys.exit(main())
