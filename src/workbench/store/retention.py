"""Retention: the files of long-finished jobs are removed; the job's row and status stay.

Retention is not a status. A purge records itself in `purged_at` (and the job's message);
`expired` keeps OpenAI's meaning, a completion window that closed before the job finished.
A purged job cannot be resumed (its input is gone): `Store.transition` refuses it.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from workbench.config import Limits
from workbench.store.status import FINISHED


class _Store(Protocol):
    """What a purge needs of `Store` (which calls it; a Protocol keeps the import one-way)."""

    limits: Limits

    @property
    def conn(self) -> sqlite3.Connection: ...

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def job_dir(self, job_id: str) -> Path: ...

    def add_event(self, job_id: str | None, name: str, data: dict[str, Any] | None = None) -> None: ...


def purge(store: _Store, older_than_days: float | None = None,
          now: float | None = None) -> list[str]:
    """Remove the files of jobs finished more than N days ago (default: the retention).

    The row keeps its status (completed, failed, cancelled, expired); `purged_at` and the
    message say the files are gone. Returns the ids purged by this call (idempotent).
    """
    days = store.limits.retention_days if older_than_days is None else older_than_days
    now = now or time.time()
    marks = ",".join("?" * len(FINISHED))
    finished = [s.value for s in FINISHED]
    rows = store.conn.execute(
        f"SELECT id FROM jobs WHERE status IN ({marks}) AND finished_at < ?"
        " AND purged_at IS NULL", [*finished, now - days * 86400]).fetchall()
    purged = []
    for r in rows:
        with store.transaction() as c:  # a resume may have raced us: re-check inside
            cur = c.execute(
                f"UPDATE jobs SET purged_at=?, updated_at=?, message=? WHERE id=?"
                f" AND status IN ({marks}) AND purged_at IS NULL",
                [now, now, f"files purged by retention (finished over {days:g} days ago)",
                 r["id"], *finished])
        if cur.rowcount == 0:
            continue
        shutil.rmtree(store.job_dir(r["id"]), ignore_errors=True)
        store.add_event(r["id"], "purged", {"older_than_days": days})
        purged.append(r["id"])
    return purged
