"""The store: one SQLite database (WAL) under a root folder, plus one folder per job.

Modelled on huey's SQLite storage: a single readable class owns every SQL statement.
Each thread gets its own connection; writes that must be atomic across processes run in
`BEGIN IMMEDIATE` transactions, so two processes never interleave a check and a write.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.config import Limits, WorkerTiming
from workbench.errors import IllegalTransition, JobNotFound, QueueFull
from workbench.store import liveness
from workbench.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    JobRow,
    job_from_row,
    new_job_id,
    run_migrations,
    where,
)
from workbench.store.status import (
    FINISHED,
    INITIAL,
    RUNNING,
    WAITING,
    Status,
    check_transition,
)


class Store:
    """All persistent state of one workbench root."""

    def __init__(self, root: str | os.PathLike[str], limits: Limits | None = None,
                 stale_after_s: float | None = None) -> None:
        self.root = Path(root).resolve()
        #: when a silent worker counts as dead for every reader (WORKBENCH_STALE_AFTER_S)
        self.stale_after_s = (stale_after_s if stale_after_s is not None
                              else WorkerTiming().stale_after_s)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "jobs").mkdir(exist_ok=True)
        (self.root / "staging").mkdir(exist_ok=True)
        self.db_path = self.root / "workbench.db"
        self.limits = limits or Limits()
        self._local = threading.local()
        self._migrate()

    # -- connections -------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA busy_timeout=60000")
            c.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = c
        return c

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: takes the write lock up front, so check-then-write is atomic."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        else:
            c.execute("COMMIT")

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def _migrate(self) -> None:
        with self.transaction() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                run_migrations(c, MIGRATIONS, version)
                c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def ensure_tables(self, component: str, migrations: list[str]) -> None:
        """Per-kind tables (grid cells, phased items): the kind's own migration list.

        `components` records how many of a component's migrations ran, like user_version
        does for the core schema; both live in code and run once per root.
        """
        done = getattr(self, "_components_done", set())
        if component in done:
            return
        with self.transaction() as c:
            r = c.execute("SELECT version FROM components WHERE name=?", (component,)).fetchone()
            run_migrations(c, migrations, r[0] if r else 0)
            c.execute("INSERT INTO components (name, version) VALUES (?, ?) ON CONFLICT(name)"
                      " DO UPDATE SET version=excluded.version", (component, len(migrations)))
        done.add(component)
        self._components_done = done

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    # -- paths -------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def staging_dir(self) -> Path:
        """A private folder to build a job's files in before it exists in the database."""
        d = self.root / "staging" / uuid.uuid4().hex
        d.mkdir(parents=True)
        return d

    # -- queue limits ------------------------------------------------------------------
    def queue_usage(self, c: sqlite3.Connection | None = None) -> dict[str, int]:
        c = c or self.conn
        marks = ",".join("?" * len(WAITING | RUNNING))
        jobs_waiting = c.execute(
            f"SELECT COUNT(*) FROM jobs WHERE status IN ({','.join('?' * len(WAITING))})",
            [s.value for s in WAITING],
        ).fetchone()[0]
        requests = c.execute(
            f"SELECT COALESCE(SUM(total - completed - failed), 0) FROM jobs WHERE status IN ({marks})",
            [s.value for s in WAITING | RUNNING],
        ).fetchone()[0]
        return {"queued_jobs": int(jobs_waiting), "queued_requests": int(requests)}

    def _check_limits(self, c: sqlite3.Connection, total: int) -> None:
        lim = self.limits
        if total > lim.max_requests_per_job:
            raise QueueFull("max_requests_per_job", 0, total, lim.max_requests_per_job)
        use = self.queue_usage(c)
        if use["queued_jobs"] + 1 > lim.max_queued_jobs:
            raise QueueFull("max_queued_jobs", use["queued_jobs"], 1, lim.max_queued_jobs)
        if use["queued_requests"] + total > lim.max_queued_requests:
            raise QueueFull(
                "max_queued_requests", use["queued_requests"], total, lim.max_queued_requests
            )

    # -- jobs --------------------------------------------------------------------------
    def create_job(
        self,
        kind: str,
        spec: dict[str, Any],
        total: int,
        *,
        staged: Path | None = None,
        status: Status = Status.QUEUED,
        group_id: str | None = None,
        job_id: str | None = None,
        message: str = "",
        window_s: float | None = None,
        name: str | None = None,
        tags: list[str] | tuple[str, ...] = (),
    ) -> str:
        """Insert a job and move its staged files into place, atomically.

        The limit check, the insert and the folder rename happen inside one write
        transaction: if any fails, nothing is queued and the staged files are removed.
        `window_s`: the job's completion window; `deadline_at` = creation + window.
        """
        if status not in INITIAL:
            raise ValueError(f"a job starts as one of {sorted(INITIAL)}, not {status}")
        job_id = job_id or new_job_id(kind)
        now = time.time()
        target = self.job_dir(job_id)
        try:
            with self.transaction() as c:
                self._check_limits(c, total)
                c.execute(
                    "INSERT INTO jobs (id, kind, status, spec, total, created_at, updated_at,"
                    " group_id, message, deadline_at, name, tags)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (job_id, kind, status.value, json.dumps(spec), total, now, now, group_id,
                     message or status.value, None if window_s is None else now + window_s,
                     name, json.dumps(list(tags))),
                )
                if staged is not None:
                    staged.rename(target)
                else:
                    target.mkdir(parents=True)
        except BaseException:
            if staged is not None and staged.exists():
                shutil.rmtree(staged, ignore_errors=True)
            raise
        self.add_event(job_id, "created", {"kind": kind, "total": total})
        return job_id

    def get(self, job_id: str, *, check_lease: bool = True) -> JobRow:
        """The job as it is; a job whose worker died reads `interrupted` (store.liveness)."""
        r = self.conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if r is None:
            raise JobNotFound(job_id)
        row = job_from_row(r)
        return liveness.as_seen(self, row) if check_lease else row

    def list_jobs(self, kind: str | None = None, status: str | None = None,
                  group_id: str | None = None, limit: int | None = None, *,
                  name: str | None = None, tag: str | None = None,
                  error_prefix: str | None = None) -> list[JobRow]:
        """Jobs oldest first; `name` matches exactly, `tag` any one of a job's tags,
        `error_prefix` the start of the error (e.g. the disk-full pause, which an idle
        worker checks on every poll: the filter runs in SQL, not over every row)."""
        cond, args = where(kind=kind, status=status, group_id=group_id, name=name)
        if tag is not None:
            cond += (" AND " if cond else " WHERE ") + (
                "EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE json_each.value=?)")
            args.append(tag)
        if error_prefix is not None:
            cond += (" AND " if cond else " WHERE ") + "substr(error, 1, ?) = ?"
            args += [len(error_prefix), error_prefix]
        sql = "SELECT * FROM jobs" + cond + " ORDER BY created_at, id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [liveness.as_seen(self, job_from_row(r)) for r in self.conn.execute(sql, args)]

    def transition(self, job_id: str, target: Status | str, *, worker: str | None = None,
                   retry_failed: bool = False, **fields: Any) -> JobRow:
        """The one place statuses change. Raises IllegalTransition for illegal moves.

        With `worker`, the move only happens while that worker still holds the lease
        (a worker that was declared dead must not overwrite its successor's state).
        `retry_failed` also allows the moves only `Job.retry_failed()` may make.
        """
        with self.transaction() as c:
            r = c.execute("SELECT status, worker, purged_at FROM jobs WHERE id=?",
                          (job_id,)).fetchone()
            if r is None:
                raise JobNotFound(job_id)
            if worker is not None and r["worker"] != worker:
                raise IllegalTransition(job_id, r["status"], f"{target} (lease lost)")
            tgt = check_transition(job_id, r["status"], str(target), retry_failed=retry_failed)
            if tgt is Status.QUEUED and r["purged_at"] is not None:
                raise IllegalTransition(job_id, r["status"], "queued (its files were purged by "
                                        "retention; submit it again)")
            self._apply(c, job_id, tgt, fields)
        self.add_event(job_id, "status", {"to": tgt.value})
        return self.get(job_id)

    def _apply(self, c: sqlite3.Connection, job_id: str, tgt: Status, fields: dict[str, Any]) -> None:
        now = time.time()
        sets = {"status": tgt.value, "updated_at": now, **fields}
        if tgt in FINISHED:
            sets.setdefault("finished_at", now)
            sets.setdefault("worker", None)
        if tgt is Status.QUEUED:
            sets.update(finished_at=None, error=None, worker=None, heartbeat_at=None)
        if tgt is Status.INTERRUPTED:
            sets.update(worker=None, heartbeat_at=None)
        for k in ("spec", "metrics"):
            if k in sets and not isinstance(sets[k], str):
                sets[k] = json.dumps(sets[k])
        cols = ", ".join(f"{k}=?" for k in sets)
        c.execute(f"UPDATE jobs SET {cols} WHERE id=?", [*sets.values(), job_id])

    def update(self, job_id: str, **fields: Any) -> None:
        """Counters, progress, message and metrics; never the status.

        While a job is `cancelling`, a message that does not say so leaves the current one
        (a runner's progress line written before it saw the cancel must not hide it).
        """
        if "status" in fields:
            raise ValueError("use transition() to change a status")
        fields["updated_at"] = time.time()
        if "metrics" in fields:
            fields["metrics"] = json.dumps(fields["metrics"])
        if "spec" in fields:
            fields["spec"] = json.dumps(fields["spec"])
        cols = ", ".join(f"{k}=?" if k != "message" else
                         "message=CASE WHEN status='cancelling' AND ? NOT LIKE 'cancel%'"
                         " THEN message ELSE ? END" for k in fields)
        values = [x for k, v in fields.items() for x in ((v, v) if k == "message" else (v,))]
        self.conn.execute(f"UPDATE jobs SET {cols} WHERE id=?", [*values, job_id])

    # -- workers -----------------------------------------------------------------------
    def sweep_dead_workers(self, stale_after_s: float, c: sqlite3.Connection | None = None, *,
                           job_id: str | None = None, readers: bool = False) -> list[str]:
        """Jobs whose worker died (`store.liveness`) → interrupted, with the reason in words.

        A job that was being cancelled when its worker died is simply cancelled.
        """
        own = c is None
        if own:
            self.conn.execute("BEGIN IMMEDIATE")
            c = self.conn
        try:
            swept = liveness.sweep(self, c, stale_after_s, job_id, readers)
            if own:
                c.execute("COMMIT")
        except BaseException:
            if own:
                c.execute("ROLLBACK")
            raise
        for jid, to, worker in swept:
            self.add_event(jid, "worker_lost", {"worker": worker})
            self.add_event(jid, "status", {"to": to})
        return [jid for jid, _, _ in swept]

    def claim(self, worker: str, kinds: list[str] | None = None,
              stale_after_s: float = 30.0) -> JobRow | None:
        """Atomically take the oldest waiting job (queued or interrupted) for `worker`."""
        with self.transaction() as c:
            self.sweep_dead_workers(stale_after_s, c)
            # an interrupted job with an error is held for the user (status.held)
            sql = "SELECT id, status FROM jobs WHERE (status=? OR (status=? AND error IS NULL))"
            args: list[Any] = [Status.QUEUED.value, Status.INTERRUPTED.value]
            if kinds is not None:
                sql += f" AND kind IN ({','.join('?' * len(kinds))})"
                args += kinds
            r = c.execute(sql + " ORDER BY created_at, id LIMIT 1", args).fetchone()
            if r is None:
                return None
            now = time.time()
            check_transition(r["id"], r["status"], Status.IN_PROGRESS)
            c.execute(
                "UPDATE jobs SET status=?, worker=?, heartbeat_at=?, updated_at=?,"
                " started_at=COALESCE(started_at, ?), attempts=attempts+1, message=? WHERE id=?",
                (Status.IN_PROGRESS.value, worker, now, now, now,
                 "resuming" if r["status"] == Status.INTERRUPTED else "started", r["id"]),
            )
        self.add_event(r["id"], "claimed", {"worker": worker, "from": r["status"]})
        return self.get(r["id"])

    def heartbeat(self, job_id: str, worker: str) -> Status | None:
        """Renew the lease; returns the job's status, or None if the lease was lost."""
        now = time.time()
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE jobs SET heartbeat_at=? WHERE id=? AND worker=?", (now, job_id, worker)
            )
            if cur.rowcount == 0:
                return None
            return Status(c.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()[0])

    # -- retention and deadlines -------------------------------------------------------
    def purge(self, older_than_days: float | None = None, now: float | None = None) -> list[str]:
        """Remove the files of jobs finished more than N days ago (`store.retention`)."""
        from workbench.store.retention import purge

        return purge(self, older_than_days, now)

    def overdue(self, kind: str | None = None, now: float | None = None) -> list[JobRow]:
        """Waiting jobs (queued, interrupted) whose completion window has closed."""
        sql = ("SELECT * FROM jobs WHERE deadline_at IS NOT NULL AND deadline_at < ?"
               " AND status IN (?, ?)")
        args: list[Any] = [now or time.time(), Status.QUEUED.value, Status.INTERRUPTED.value]
        if kind is not None:
            sql += " AND kind=?"
            args.append(kind)
        return [job_from_row(r) for r in self.conn.execute(sql + " ORDER BY created_at", args)]

    # -- events and stats --------------------------------------------------------------
    def add_event(self, job_id: str | None, name: str, data: dict[str, Any] | None = None) -> None:
        self.conn.execute(
            "INSERT INTO events (job_id, at, name, data) VALUES (?,?,?,?)",
            (job_id, time.time(), name, json.dumps(data or {})),
        )

    def events(self, job_id: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        cond, args = where(job_id=job_id, name=name)
        return [
            {**dict(r), "data": json.loads(r["data"])}
            for r in self.conn.execute("SELECT * FROM events" + cond + " ORDER BY id", args)
        ]

    def get_stat(self, key: str, default: Any = None) -> Any:
        r = self.conn.execute("SELECT value FROM stats WHERE key=?", (key,)).fetchone()
        return default if r is None else json.loads(r[0])

    def set_stat(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT INTO stats (key, value, updated_at) VALUES (?,?,?) ON CONFLICT(key)"
            " DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (key, json.dumps(value), time.time()),
        )
