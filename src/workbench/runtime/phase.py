"""Phases: one model family per device at a time, with memory proven back (invariant 4).

A phase is: acquire the device lock → load the model → work → unload → measure memory →
release. The lock is a file lock per device (`filelock`), so it holds across threads,
processes and workbench roots on one machine; the kernel frees it if the holder dies,
even by `kill -9`.

Where the model runs (`isolation`):

- `"inline"`: in this process; unload is `del` + `gc.collect()` + `malloc_trim(0)`.
- `"process"`: in a child process started for this phase (`python -m
  workbench.runtime.phase`), driven over a socket; unload is the child's exit, which
  returns everything the model held. The child dies with its parent (PDEATHSIG).
- `"auto"`: inline, unless the last inline run of this model on this device left more
  than `residue_bound` behind; then in a child process (the design's "a phase that
  cannot get its memory back runs its model in a child process next time").

Every phase is a row in the `phases` table: timestamps of request, lock, load, work,
unload and release (the timeline the exclusivity test reads), and memory before load,
after load and after unload (RSS of this process and its children on CPU; used device
memory from NVML on CUDA). `residue = after - before`.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import psutil
from filelock import FileLock, Timeout
from pydantic import BaseModel, Field

from workbench.engines.memory import trim
from workbench.errors import WorkbenchError
from workbench.store import Store

Isolation = Literal["inline", "process", "auto"]

PHASE_MIGRATIONS = [
    """
    CREATE TABLE phases (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device TEXT NOT NULL,
        name TEXT NOT NULL,
        model TEXT NOT NULL,
        isolation TEXT NOT NULL,
        job_id TEXT,
        batch INTEGER,
        pid INTEGER,
        engine_pid INTEGER,
        state TEXT NOT NULL,
        requested_at REAL NOT NULL,
        acquired_at REAL,
        load_start REAL,
        loaded_at REAL,
        unload_start REAL,
        unloaded_at REAL,
        released_at REAL,
        mem_before INTEGER,
        mem_loaded INTEGER,
        mem_after INTEGER,
        residue INTEGER,
        engine_peak_rss INTEGER,
        work TEXT NOT NULL DEFAULT '{}',
        error TEXT
    );
    CREATE INDEX phases_job ON phases(job_id, id);
    CREATE INDEX phases_device ON phases(device, id)
    """,
]

MiB = 1 << 20
DEFAULT_RESIDUE_BOUND = 128 * MiB


class PhaseError(WorkbenchError):
    """The phase's engine failed to start, or its process died."""


class PhaseCancelled(WorkbenchError):
    """Stopped while waiting for the device lock."""


class RemoteError(PhaseError):
    """An exception from the engine's child process that could not be sent as itself."""


# -- device memory --------------------------------------------------------------------------

def process_tree_rss() -> int:
    """RSS of this process plus its live descendants (a model in a child still counts)."""
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            continue
    return int(total)


def gpu_used_bytes(device: str) -> int | None:
    """Used memory of one CUDA device from NVML (or nvidia-smi); None when unreadable."""
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no pynvml or no driver: try the command-line tool
        pass
    try:
        out = subprocess.run(["nvidia-smi", f"--id={index}", "--query-gpu=memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
        return int(float(out.strip().splitlines()[0]) * MiB)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def memory_in_use(device: str) -> int:
    """What a phase compares before load and after unload: device memory, or RSS on CPU."""
    if device.startswith("cuda"):
        used = gpu_used_bytes(device)
        if used is not None:
            return used
    return process_tree_rss()


# -- the lock -------------------------------------------------------------------------------

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


# -- engines, in process or in a child -------------------------------------------------------

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
            [sys.executable, "-m", "workbench.runtime.phase", "--serve", str(child_sock.fileno()),
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


# -- the phase ------------------------------------------------------------------------------

class PhaseRecord(BaseModel):
    id: int
    device: str
    name: str
    model: str
    isolation: str
    job_id: str | None
    batch: int | None
    pid: int | None
    engine_pid: int | None
    state: str
    requested_at: float
    acquired_at: float | None
    load_start: float | None
    loaded_at: float | None
    unload_start: float | None
    unloaded_at: float | None
    released_at: float | None
    mem_before: int | None
    mem_loaded: int | None
    mem_after: int | None
    residue: int | None
    engine_peak_rss: int | None
    work: dict[str, Any]
    error: str | None


def phases(store: Store, *, job_id: str | None = None, device: str | None = None) -> list[PhaseRecord]:
    """The recorded phases (oldest first): the device timeline."""
    store.ensure_tables("phase", PHASE_MIGRATIONS)
    where, args = [], []
    if job_id is not None:
        where.append("job_id=?")
        args.append(job_id)
    if device is not None:
        where.append("device=?")
        args.append(device)
    sql = "SELECT * FROM phases" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
    out = []
    for r in store.conn.execute(sql, args):
        d = dict(r)
        d["work"] = json.loads(d["work"])
        out.append(PhaseRecord(**d))
    return out


def residue_stat_key(name: str, spec: EngineSpec, device: str) -> str:
    return f"phase.inline_residue.{device}.{name}.{spec.key()}"


class Phase:
    """`with Phase(store, "stt", spec, device="cpu") as engine: ...` — one locked phase.

    Entering waits for the device, records the phase, measures memory and loads the
    model (inline or in a child process); leaving unloads it, measures again, records
    the residue and releases the device, whether the work succeeded or not.
    """

    def __init__(self, store: Store, name: str, spec: EngineSpec, *, device: str = "cpu",
                 isolation: Isolation = "auto", job_id: str | None = None,
                 batch: int | None = None, residue_bound: int = DEFAULT_RESIDUE_BOUND,
                 lock: PhaseLock | None = None, should_stop: Callable[[], bool] | None = None,
                 on_wait: Callable[[dict[str, Any] | None], None] | None = None) -> None:
        store.ensure_tables("phase", PHASE_MIGRATIONS)
        self.store, self.name, self.spec, self.device = store, name, spec, device
        self.job_id, self.batch, self.residue_bound = job_id, batch, residue_bound
        self.requested_isolation = isolation
        self.isolation = self.choose_isolation(isolation)
        self.lock = lock or PhaseLock(device)
        self.should_stop, self.on_wait = should_stop, on_wait
        self.engine: InlineEngine | ChildEngine | None = None
        self.work: dict[str, Any] = {}
        self.id: int | None = None

    def choose_isolation(self, isolation: Isolation) -> str:
        if isolation != "auto":
            return isolation
        last = self.store.get_stat(residue_stat_key(self.name, self.spec, self.device))
        return "process" if last is not None and last > self.residue_bound else "inline"

    def _set(self, **fields: Any) -> None:
        if "work" in fields:
            fields["work"] = json.dumps(fields["work"])
        cols = ", ".join(f"{k}=?" for k in fields)
        self.store.conn.execute(f"UPDATE phases SET {cols} WHERE id=?", [*fields.values(), self.id])

    def __enter__(self) -> Any:
        cur = self.store.conn.execute(
            "INSERT INTO phases (device, name, model, isolation, job_id, batch, pid, state,"
            " requested_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (self.device, self.name, self.spec.key(), self.isolation, self.job_id, self.batch,
             os.getpid(), "waiting", time.time()))
        self.id = int(cur.lastrowid or 0)
        try:
            self.lock.acquire(should_stop=self.should_stop, on_wait=self.on_wait,
                              holder={"job_id": self.job_id, "phase": self.name, "batch": self.batch})
        except BaseException as e:
            self._set(state="cancelled", error=f"{type(e).__name__}: {e}")
            raise
        try:
            trim()
            before = memory_in_use(self.device)
            self._set(state="loading", acquired_at=time.time(), load_start=time.time(),
                      mem_before=before)
            if self.isolation == "process":
                self.engine = ChildEngine(self.spec)
            else:
                self.engine = InlineEngine(self.spec)
                self.engine.load()
            self._set(state="working", loaded_at=time.time(), engine_pid=self.engine.pid,
                      mem_loaded=memory_in_use(self.device))
        except BaseException as e:
            self._finish(error=f"{type(e).__name__}: {e}")
            raise
        return self.engine

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._finish(error=None if ev is None else f"{type(ev).__name__}: {ev}")

    def _finish(self, error: str | None) -> None:
        try:
            self._set(state="unloading", unload_start=time.time())
            report: dict[str, Any] = {}
            if self.engine is not None:
                report = self.engine.close()
                self.engine = None
            trim()
            after = memory_in_use(self.device)
            row = self.store.conn.execute("SELECT mem_before FROM phases WHERE id=?",
                                          (self.id,)).fetchone()
            residue = None if row["mem_before"] is None else after - row["mem_before"]
            peak = report.get("peak_rss")
            self._set(state="failed" if error else "done", unloaded_at=time.time(),
                      mem_after=after, residue=residue, engine_peak_rss=peak,
                      work={**self.work, "engine_report": report}, error=error)
            if self.isolation == "inline" and residue is not None:
                self.store.set_stat(residue_stat_key(self.name, self.spec, self.device), residue)
        finally:
            self.lock.release()
            self._set(released_at=time.time())

    @property
    def record(self) -> PhaseRecord:
        return next(p for p in phases(self.store) if p.id == self.id)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="engine host for a phase (internal)")
    p.add_argument("--serve", type=int, required=True)
    p.add_argument("--parent", type=int, default=0)
    a = p.parse_args(argv)
    return serve(a.serve, a.parent)


if __name__ == "__main__":
    sys.exit(main())
