"""A dead worker is seen by every reader, not only by the next worker.

Before this, only `Store.claim` swept dead workers, so with no other worker running a job
whose worker was killed (kill -9, the kernel's OOM killer, a crash) read `in_progress`
forever: `job.wait()` blocked, `job.resume()` was refused, the dashboard said running.
Now every read of a job that a worker holds checks the lease first:

- the holder ran on this host: dead when its process is gone (or a zombie), at once;
- on another host: when its heartbeat is older than the stale time
  (`WORKBENCH_STALE_AFTER_S`).

Readers trust a live process on this host even if its beats are late (a worker busy
loading a model under load must not be declared dead by every `job.wait()` poll); the
next worker's claim still applies the stale time to it (`lease_lost`), as before.

A lost lease is settled in the store (`interrupted`, or `cancelled` if it was being
cancelled) with the reason in words: which worker, when it was last heard from, and the
last error it logged, if any. If the store cannot be written (a full disk), the reader
still sees the job as interrupted, with the same words; the next write settles it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from workbench.store.leases import holder_is_dead, on_this_host
from workbench.store.schema import JobRow
from workbench.store.status import RUNNING, Status, check_transition


class Store(Protocol):
    """What this module needs of `store.db.Store` (which imports it)."""

    stale_after_s: float

    def _apply(self, c: sqlite3.Connection, job_id: str, tgt: Status,
               fields: dict[str, Any]) -> None: ...

    def sweep_dead_workers(self, stale_after_s: float, c: sqlite3.Connection | None = None, *,
                           job_id: str | None = None, readers: bool = False) -> list[str]: ...

    def get(self, job_id: str, *, check_lease: bool = True) -> JobRow: ...

#: event a worker records (best effort) when it dies of an error it could see
WORKER_ERROR = "worker_error"


def lease_lost(worker: str | None, heartbeat_at: float | None, stale_after_s: float,
               now: float | None = None) -> bool:
    """Whether the worker holding a job is gone: its process on this host, or its beats."""
    now = time.time() if now is None else now
    return holder_is_dead(worker) or (heartbeat_at or 0) < now - stale_after_s


def seen_dead(worker: str | None, heartbeat_at: float | None, stale_after_s: float) -> bool:
    """The readers' test: a process on this host is asked; one elsewhere, its beats.

    A running job with no lease holder at all was put there by hand (tests of the
    lifecycle): readers leave it alone; a claim still sweeps it.
    """
    if not worker:
        return False
    if on_this_host(worker):
        return holder_is_dead(worker)
    return lease_lost(worker, heartbeat_at, stale_after_s)


def describe_worker(worker: str | None) -> str:
    """`worker 1234 on box` from `box:1234:ab12cd`."""
    try:
        host, pid, _ = (worker or "").split(":")
    except ValueError:
        return f"worker {worker or '(unknown)'}"
    return f"worker {pid} on {host}"


def lost_reason(worker: str | None, heartbeat_at: float | None, last_error: str | None,
                now: float | None = None) -> str:
    """The words an interrupted job shows when its worker died."""
    now = time.time() if now is None else now
    if heartbeat_at:
        at = time.strftime("%H:%M:%S", time.localtime(heartbeat_at))
        heard = f"last heard from {now - heartbeat_at:.0f} s ago (at {at})"
    else:
        heard = "never heard from"
    why = (f"its last error: {last_error}" if last_error else
           "it logged no error (killed: kill -9, the out-of-memory killer, a power cut)")
    return (f"interrupted: {describe_worker(worker)} died, {heard}; {why}."
            " Resumable: a running worker takes it up again, or job.resume()")


def last_error(c: sqlite3.Connection, worker: str | None) -> str | None:
    if not worker:
        return None
    r = c.execute("SELECT data FROM events WHERE name=? AND json_extract(data, '$.worker')=?"
                  " ORDER BY id DESC LIMIT 1", (WORKER_ERROR, worker)).fetchone()
    return json.loads(r[0]).get("error") if r else None


def settled(status: Status, worker: str | None, heartbeat_at: float | None,
            error: Callable[[], str | None], now: float | None = None) -> tuple[Status, str]:
    """What a job whose worker is gone becomes, and the words it shows: a cancelling job
    is cancelled; any other is interrupted, with why (`error` is asked only then)."""
    if status is Status.CANCELLING:
        return Status.CANCELLED, f"cancelled; {describe_worker(worker)} died while cancelling"
    return Status.INTERRUPTED, lost_reason(worker, heartbeat_at, error(), now)


def sweep(store: Store, c: sqlite3.Connection, stale_after_s: float,
          job_id: str | None = None, readers: bool = False) -> list[tuple[str, str, str]]:
    """Settle the jobs (or `job_id`) whose worker is gone, inside the caller's transaction.

    `readers`: the readers' test (`seen_dead`) instead of the claim's (`lease_lost`).
    Returns (job_id, new status, worker) of each one settled.
    """
    now = time.time()
    marks = ",".join("?" * len(RUNNING))
    sql = f"SELECT id, status, worker, heartbeat_at FROM jobs WHERE status IN ({marks})"
    args: list[Any] = [s.value for s in RUNNING]
    if job_id is not None:
        sql += " AND id=?"
        args.append(job_id)
    swept: list[tuple[str, str, str]] = []
    for r in c.execute(sql, args).fetchall():
        lost = (seen_dead(r["worker"], r["heartbeat_at"], stale_after_s) if readers
                else lease_lost(r["worker"], r["heartbeat_at"], stale_after_s, now))
        if not lost:
            continue
        tgt, reason = settled(Status(r["status"]), r["worker"], r["heartbeat_at"],
                              partial(last_error, c, r["worker"]), now)
        check_transition(r["id"], r["status"], tgt)
        store._apply(c, r["id"], tgt, {"message": reason})
        swept.append((r["id"], tgt.value, r["worker"]))
    return swept


def as_seen(store: Store, row: JobRow) -> JobRow:
    """`row`, or its settled state if its worker is gone (the read path of every reader)."""
    if row.status not in RUNNING or not seen_dead(row.worker, row.heartbeat_at,
                                                  store.stale_after_s):
        return row
    try:
        store.sweep_dead_workers(store.stale_after_s, job_id=row.id, readers=True)
    except sqlite3.OperationalError:  # the store cannot be written (disk full, locked)
        tgt, reason = settled(row.status, row.worker, row.heartbeat_at, lambda: None)
        return row.model_copy(update={"status": tgt, "worker": None, "message": reason})
    return store.get(row.id, check_lease=False)
