"""Phases: one model family per device at a time, with memory proven back (invariant 4).

A phase is: acquire the device lock (`runtime.lock`) → load the model → work → unload →
measure memory (`runtime.device_memory`) → release. This module holds the phase and its
table; the lock, the engines in or out of process (`runtime.child`) and the memory probes
have their own modules.

Where the model runs (`isolation`):

- `"inline"`: in this process; unload is `del` + `gc.collect()` + `malloc_trim(0)`.
- `"process"`: in a child process started for this phase (`workbench.runtime.child`),
  driven over a socket; unload is the child's exit, which returns everything the model
  held. The child dies with its parent (PDEATHSIG).
- `"auto"`: inline, unless the last inline run of this model on this device left more
  than `residue_bound` behind; then in a child process (the design's "a phase that
  cannot get its memory back runs its model in a child process next time").

Every phase is a row in the `phases` table: timestamps of request, lock, load, work,
unload and release (the timeline the exclusivity test reads), and memory before load,
after load and after unload (RSS of this process and its children on CPU; used device
memory from NVML on CUDA). `residue = after - before`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

from pydantic import BaseModel

from workbench.engines.memory import trim
from workbench.runtime.child import ChildEngine, EngineSpec, InlineEngine
from workbench.runtime.device_memory import MiB, memory_in_use
from workbench.runtime.lock import PhaseLock
from workbench.store import Store
from workbench.store.schema import where

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

DEFAULT_RESIDUE_BOUND = 128 * MiB


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
    cond, args = where(job_id=job_id, device=device)
    out = []
    for r in store.conn.execute("SELECT * FROM phases" + cond + " ORDER BY id", args):
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
