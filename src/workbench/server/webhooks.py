"""Webhook deliveries, persisted: the outbox in the store that `workbench serve --webhook`
works through.

Where events come from: every status change is already an `events` row (`store.transition`
writes one, whichever process made the move), and a batch refused at create is a
`server_batches` row without a job. `scan()` reads what is new since its cursor and, in
the same write transaction that moves the cursor, adds one delivery per event and
configured URL. So an event is never lost between "it happened" and "it is queued", and
never queued twice, even with the server killed in between: after a restart the scan
continues from the cursor (the first scan of a new root starts from now: no webhooks for
the past).

Events, as OpenAI sends them: `{"id": "evt_...", "object": "event", "type":
"batch.completed", "created_at": <unix s>, "data": {"id": "<batch id>"}}` for batch jobs
(completed, failed, expired, cancelled); phased and grid jobs send the same with
`job.completed` ... and `data.kind`. Each delivery has its own `webhook-id` (`msg_...`),
kept for every retry, and its exact body, so a receiver can drop a repeat by that id.

A delivery is `pending` (with `next_at`, the attempt count and the last error), then
`delivered`, or `failed` when it gave up (`WORKBENCH_WEBHOOK_GIVE_UP_S`, 72 h as at
OpenAI). `server.webhook_sender` does the sending and the backoff.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pydantic import BaseModel

from workbench.store import Store
from workbench.store.status import FINISHED

MIGRATIONS = [
    """
    CREATE TABLE webhook_cursor (
        source TEXT PRIMARY KEY,
        last INTEGER NOT NULL
    );
    INSERT INTO webhook_cursor (source, last) SELECT 'events', COALESCE(MAX(id), 0) FROM events;
    CREATE TABLE webhook_deliveries (
        webhook_id TEXT PRIMARY KEY,
        event_id TEXT NOT NULL,
        url TEXT NOT NULL,
        type TEXT NOT NULL,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        last_error TEXT,
        last_status INTEGER,
        last_attempt_at REAL,
        delivered_at REAL,
        UNIQUE (event_id, url)
    );
    CREATE INDEX webhook_due ON webhook_deliveries(state, next_at)
    """,
]

#: the job statuses that are events (OpenAI's batch events; the same words for other kinds)
EVENT_STATUSES = tuple(sorted(s.value for s in FINISHED))


class Delivery(BaseModel):
    webhook_id: str
    event_id: str
    url: str
    type: str
    subject: str
    body: str
    created_at: float
    state: str
    attempts: int
    next_at: float
    last_error: str | None
    last_status: int | None
    last_attempt_at: float | None
    delivered_at: float | None


def ensure(store: Store) -> None:
    store.ensure_tables("webhooks", MIGRATIONS)


def event_type(kind: str, status: str) -> str:
    return f"{'batch' if kind == 'batch' else 'job'}.{status}"


def event_body(event_id: str, type_: str, created_at: float, subject: str,
               kind: str) -> str:
    data: dict[str, Any] = {"id": subject}
    if kind != "batch":
        data["kind"] = kind
    return json.dumps({"id": event_id, "object": "event", "type": type_,
                       "created_at": int(created_at), "data": data}, separators=(",", ":"))


def _new_events(c: Any) -> tuple[list[tuple[float, str, str, str]], dict[str, int]]:
    """(created_at, kind, status, subject id) of the events past the cursors."""
    cur = {r[0]: r[1] for r in c.execute("SELECT source, last FROM webhook_cursor")}
    found: list[tuple[float, str, str, str]] = []
    marks = ",".join("?" * len(EVENT_STATUSES))
    rows = c.execute(
        "SELECT e.id, e.at, e.job_id, json_extract(e.data, '$.to') AS st, j.kind FROM events e"
        " JOIN jobs j ON j.id = e.job_id WHERE e.id > ? AND e.name = 'status'"
        f" AND json_extract(e.data, '$.to') IN ({marks}) ORDER BY e.id",
        [cur.get("events", 0), *EVENT_STATUSES]).fetchall()
    found += [(r["at"], r["kind"], r["st"], r["job_id"]) for r in rows]
    top = c.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
    moved = {"events": max(cur.get("events", 0), int(top))}
    has_batches = c.execute("SELECT 1 FROM sqlite_master WHERE type='table'"
                            " AND name='server_batches'").fetchone()
    if has_batches:  # batches refused at create: `failed`, with no job
        top_b = c.execute("SELECT COALESCE(MAX(rowid), 0) FROM server_batches").fetchone()[0]
        last_b = cur.get("refused_batches")
        if last_b is not None:
            found += [(r["created_at"], "batch", "failed", r["id"]) for r in c.execute(
                "SELECT id, created_at FROM server_batches WHERE rowid > ? AND job_id IS NULL"
                " ORDER BY rowid", (last_b,))]
        moved["refused_batches"] = max(last_b or 0, int(top_b))
    return sorted(found), moved


def _anything_new(c: Any) -> bool:
    cur = {r[0]: r[1] for r in c.execute("SELECT source, last FROM webhook_cursor")}
    if c.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0] > cur.get("events", 0):
        return True
    if not c.execute("SELECT 1 FROM sqlite_master WHERE type='table'"
                     " AND name='server_batches'").fetchone():
        return False
    top = c.execute("SELECT COALESCE(MAX(rowid), 0) FROM server_batches").fetchone()[0]
    return "refused_batches" not in cur or top > cur["refused_batches"]


def scan(store: Store, urls: list[str], now: float | None = None) -> int:
    """Queue a delivery per new event and URL, moving the cursors in the same transaction."""
    if not urls:
        return 0
    now = time.time() if now is None else now
    if not _anything_new(store.conn):
        return 0  # the common case, answered without taking the write lock
    n = 0
    with store.transaction() as c:
        found, moved = _new_events(c)
        for at, kind, status, subject in found:
            event_id = f"evt_{uuid.uuid4().hex}"
            type_ = event_type(kind, status)
            body = event_body(event_id, type_, at, subject, kind)
            for url in urls:
                c.execute("INSERT INTO webhook_deliveries (webhook_id, event_id, url, type,"
                          " subject, body, created_at, next_at) VALUES (?,?,?,?,?,?,?,?)",
                          (f"msg_{uuid.uuid4().hex}", event_id, url, type_, subject, body,
                           at, now))
                n += 1
        c.executemany("INSERT INTO webhook_cursor (source, last) VALUES (?, ?) ON CONFLICT"
                      "(source) DO UPDATE SET last=excluded.last", list(moved.items()))
    return n


def claim_due(store: Store, urls: list[str], lease_s: float, limit: int = 20,
              now: float | None = None) -> list[Delivery]:
    """Pending deliveries that are due, to configured URLs; their `next_at` moves past the
    lease, so a second sender (or this one, after a crash) waits that long before retrying."""
    if not urls:
        return []
    now = time.time() if now is None else now
    marks = ",".join("?" * len(urls))
    if not store.conn.execute(f"SELECT 1 FROM webhook_deliveries WHERE state='pending' AND"
                              f" next_at<=? AND url IN ({marks}) LIMIT 1", [now, *urls]
                              ).fetchone():
        return []  # nothing due: no write lock
    with store.transaction() as c:
        rows = c.execute(f"SELECT * FROM webhook_deliveries WHERE state='pending' AND next_at<=?"
                         f" AND url IN ({marks}) ORDER BY next_at, created_at LIMIT ?",
                         [now, *urls, limit]).fetchall()
        c.executemany("UPDATE webhook_deliveries SET next_at=? WHERE webhook_id=?",
                      [(now + lease_s, r["webhook_id"]) for r in rows])
    return [Delivery(**dict(r)) for r in rows]


def record(store: Store, d: Delivery, *, ok: bool, status: int | None, error: str | None,
           next_at: float | None, now: float | None = None) -> None:
    """One attempt's outcome: delivered, pending again at `next_at`, or failed (None)."""
    now = time.time() if now is None else now
    state = "delivered" if ok else "pending" if next_at is not None else "failed"
    store.conn.execute(
        "UPDATE webhook_deliveries SET state=?, attempts=attempts+1, last_status=?,"
        " last_error=?, last_attempt_at=?, next_at=?, delivered_at=? WHERE webhook_id=?",
        (state, status, error, now, next_at if next_at is not None else now,
         now if ok else None, d.webhook_id))


def deliveries(store: Store, state: str | None = None, limit: int = 100) -> list[Delivery]:
    """Newest first: every delivery with its state, attempts and last error."""
    ensure(store)
    sql, args = "SELECT * FROM webhook_deliveries", []
    if state is not None:
        sql += " WHERE state=?"
        args.append(state)
    sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
    return [Delivery(**dict(r)) for r in store.conn.execute(sql, [*args, limit])]


def describe(d: Delivery, now: float | None = None) -> str:
    """One line in words: 'delivered after 3 attempts', 'failing: ... (attempt 2, next in 4 s)'."""
    now = time.time() if now is None else now
    if d.state == "delivered":
        return f"delivered after {d.attempts} attempt{'s' if d.attempts != 1 else ''}"
    if d.state == "failed":
        return f"gave up after {d.attempts} attempts: {d.last_error}"
    if d.attempts == 0:
        return "pending (not sent yet)"
    return (f"failing: {d.last_error} (attempt {d.attempts}, next in "
            f"{max(0.0, d.next_at - now):.0f} s)")
