"""The core schema: the migrations of the jobs/events/stats tables, and a job's row.

Migrations are code, applied in order; PRAGMA user_version holds how many ran (per-kind
tables use the same runner with their own list, counted in `components`).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from typing import Any

from pydantic import BaseModel

from workbench.store.status import Status

#: Schema migrations, applied in order; PRAGMA user_version holds how many ran.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        spec TEXT NOT NULL DEFAULT '{}',
        total INTEGER NOT NULL DEFAULT 0,
        completed INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        progress REAL NOT NULL DEFAULT 0,
        message TEXT NOT NULL DEFAULT '',
        error TEXT,
        metrics TEXT NOT NULL DEFAULT '{}',
        group_id TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        worker TEXT,
        heartbeat_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_status_created ON jobs(status, created_at);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT,
        at REAL NOT NULL,
        name TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_job ON events(job_id, id);
    CREATE TABLE stats (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE components (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    );
    """,
    # 2: OpenAI's lifecycle. `deadline_at`: when the job's completion window closes (it
    # then becomes `expired`); `purged_at`: when retention removed its files (the status
    # stays what it was; before this, a purge turned the status into `expired`).
    """
    ALTER TABLE jobs ADD COLUMN deadline_at REAL;
    ALTER TABLE jobs ADD COLUMN purged_at REAL;
    UPDATE jobs SET purged_at = updated_at, status = COALESCE(
        (SELECT json_extract(e.data, '$.to') FROM events e WHERE e.job_id = jobs.id
         AND e.name = 'status' AND json_extract(e.data, '$.to') != 'expired'
         ORDER BY e.id DESC LIMIT 1), 'completed')
        WHERE status = 'expired' AND message = 'files purged by retention';
    CREATE INDEX jobs_deadline ON jobs(deadline_at) WHERE deadline_at IS NOT NULL;
    """,
    # 3: names for jobs. `name`: an optional label chosen at submit; `tags`: a JSON list
    # of strings. Both are shown on the dashboard and filter `wb.jobs()`.
    """
    ALTER TABLE jobs ADD COLUMN name TEXT;
    ALTER TABLE jobs ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
    CREATE INDEX jobs_name ON jobs(name) WHERE name IS NOT NULL;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class JobRow(BaseModel):
    """One job as the store holds it."""

    id: str
    kind: str
    status: Status
    spec: dict[str, Any]
    total: int
    completed: int
    failed: int
    progress: float
    message: str
    error: str | None
    metrics: dict[str, Any]
    group_id: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    worker: str | None
    heartbeat_at: float | None
    attempts: int
    #: when the completion window closes (epoch seconds); None: no deadline
    deadline_at: float | None = None
    #: when retention removed the job's files; None: still there
    purged_at: float | None = None
    #: the label given at submit (`name=`), if any
    name: str | None = None
    #: labels to group and filter jobs by (`tags=`)
    tags: list[str] = []

    @property
    def done(self) -> int:
        return self.completed + self.failed


def job_from_row(r: sqlite3.Row) -> JobRow:
    d = dict(r)
    d["spec"] = json.loads(d["spec"])
    d["metrics"] = json.loads(d["metrics"])
    if "tags" in d:
        d["tags"] = json.loads(d["tags"] or "[]")
    return JobRow(**d)


def run_migrations(c: sqlite3.Connection, migrations: list[str], done: int) -> None:
    """Run migrations[done:] on `c` (inside the caller's transaction)."""
    for migration in migrations[done:]:
        for statement in migration.split(";"):
            if statement.strip():
                c.execute(statement)


def where(**equal: Any) -> tuple[str, list[Any]]:
    """(" WHERE a=? AND b=?", [a, b]) for the filters that are not None ("" when none are)."""
    used = {k: v for k, v in equal.items() if v is not None}
    sql = " WHERE " + " AND ".join(f"{k}=?" for k in used) if used else ""
    return sql, list(used.values())


def new_job_id(kind: str) -> str:
    """Sortable by creation time, unique across processes."""
    return f"{kind}_{int(time.time() * 1000):x}{uuid.uuid4().hex[:8]}"
