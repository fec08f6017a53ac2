"""The `phased_items` table: one row per recording, addressable by (job, item id).

States: `queued` (not in a batch yet) → `assigned` (its batch is fixed) → `transcribing`
→ `transcribed` → `evaluating` → `done`, or `failed` at either phase — or at intake: a
file that cannot be read is created `failed` (no batch), so it fails alone and at once. A batch is formed
only when its STT phase is about to start, from the oldest queued items, so recordings
added while earlier batches run simply join the next batch.

`output.jsonl` / `errors.jsonl` stay the exactly-once truth for finished items; this
table mirrors them (and `reconcile()` repairs it after a crash between the two writes).
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel

from workbench.phased.links import LINK_MIGRATION, fill_missing, new_token
from workbench.store import Store

MIGRATIONS = [
    """
    CREATE TABLE phased_items (
        job_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        audio_s REAL,
        batch INTEGER,
        state TEXT NOT NULL,
        added_at REAL NOT NULL,
        stt_started REAL,
        stt_finished REAL,
        transcript TEXT,
        eval_started REAL,
        eval_finished REAL,
        result TEXT,
        error TEXT,
        PRIMARY KEY (job_id, item_id)
    );
    CREATE UNIQUE INDEX phased_items_seq ON phased_items(job_id, seq);
    CREATE TABLE phased_jobs (
        job_id TEXT PRIMARY KEY,
        accepting INTEGER NOT NULL DEFAULT 1,
        batch_size INTEGER NOT NULL,
        next_batch INTEGER NOT NULL DEFAULT 0,
        phase TEXT,
        phase_batch INTEGER,
        phase_started REAL
    )
    """,
    "ALTER TABLE phased_items ADD COLUMN error_code TEXT",
    # 3: each student's private page (`phased.links`): a random token per item
    LINK_MIGRATION,
]

FINISHED = ("done", "failed")


class Item(BaseModel):
    job_id: str
    item_id: str
    seq: int
    name: str
    path: str
    sha256: str
    size: int
    audio_s: float | None
    batch: int | None
    state: str
    added_at: float
    stt_started: float | None
    stt_finished: float | None
    transcript: dict[str, Any] | None
    eval_started: float | None
    eval_finished: float | None
    result: dict[str, Any] | None
    error: str | None
    error_code: str | None = None
    #: the token of the student's page (`phased.links`)
    link: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


class JobState(BaseModel):
    job_id: str
    accepting: bool
    batch_size: int
    next_batch: int
    phase: str | None
    phase_batch: int | None
    phase_started: float | None


def _item(r: Any) -> Item:
    d = dict(r)
    for k in ("transcript", "result"):
        d[k] = json.loads(d[k]) if d[k] else None
    return Item(**d)


class Items:
    """Every query and write on the phased tables, in one place."""

    def __init__(self, store: Store) -> None:
        store.ensure_tables("phased", MIGRATIONS)
        self.store = store
        if not getattr(store, "_phased_links_filled", False):
            fill_missing(store)  # items from before links existed get theirs once
            store._phased_links_filled = True  # type: ignore[attr-defined]

    @property
    def conn(self) -> Any:
        return self.store.conn

    # -- jobs ---------------------------------------------------------------------------
    def create_job(self, job_id: str, batch_size: int) -> None:
        self.conn.execute("INSERT INTO phased_jobs (job_id, batch_size) VALUES (?, ?)",
                          (job_id, batch_size))

    def job(self, job_id: str) -> JobState:
        r = self.conn.execute("SELECT * FROM phased_jobs WHERE job_id=?", (job_id,)).fetchone()
        if r is None:
            raise KeyError(f"{job_id} is not a phased job")
        return JobState(**{**dict(r), "accepting": bool(r["accepting"])})

    def set_phase(self, job_id: str, phase: str | None, batch: int | None) -> None:
        self.conn.execute("UPDATE phased_jobs SET phase=?, phase_batch=?, phase_started=?"
                          " WHERE job_id=?", (phase, batch, time.time() if phase else None, job_id))

    # -- items --------------------------------------------------------------------------
    def add(self, job_id: str, rows: list[dict[str, Any]], *, check_accepting: bool = True) -> list[str]:
        """Insert items after the existing ones; refused whole if the job stopped accepting."""
        with self.store.transaction() as c:
            if check_accepting:
                r = c.execute("SELECT accepting FROM phased_jobs WHERE job_id=?",
                              (job_id,)).fetchone()
                if r is None or not r["accepting"]:
                    raise ValueError(f"job {job_id} has finished its last batch and takes no"
                                     " more recordings; submit a new job")
            seq = c.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM phased_items WHERE job_id=?",
                            (job_id,)).fetchone()[0]
            taken = {x[0] for x in c.execute("SELECT item_id FROM phased_items WHERE job_id=?",
                                             (job_id,))}
            clash = sorted(taken & {r["item_id"] for r in rows})
            if clash:
                raise ValueError(f"item ids already in job {job_id}: {clash[:10]}")
            now = time.time()
            for i, r in enumerate(rows):
                failed = bool(r.get("error"))
                c.execute("INSERT INTO phased_items (job_id, item_id, seq, name, path, sha256,"
                          " size, audio_s, state, added_at, error, error_code, link)"
                          " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                          (job_id, r["item_id"], seq + i, r["name"], r["path"], r["sha256"],
                           r["size"], r.get("audio_s"), "failed" if failed else "queued", now,
                           r.get("error"), r.get("error_code"), new_token()))
            total = c.execute("SELECT COUNT(*) FROM phased_items WHERE job_id=?",
                              (job_id,)).fetchone()[0]
            c.execute("UPDATE jobs SET total=?, updated_at=? WHERE id=?", (total, now, job_id))
        return [r["item_id"] for r in rows]

    def intake_failures(self, job_id: str) -> list[Item]:
        """Items that failed before any batch (unreadable file, no audio track)."""
        return [_item(r) for r in self.conn.execute(
            "SELECT * FROM phased_items WHERE job_id=? AND state='failed' AND batch IS NULL"
            " ORDER BY seq", (job_id,))]

    def all(self, job_id: str) -> list[Item]:
        return [_item(r) for r in self.conn.execute(
            "SELECT * FROM phased_items WHERE job_id=? ORDER BY seq", (job_id,))]

    def batch(self, job_id: str, batch: int) -> list[Item]:
        return [_item(r) for r in self.conn.execute(
            "SELECT * FROM phased_items WHERE job_id=? AND batch=? ORDER BY seq", (job_id, batch))]

    def open_batch(self, job_id: str) -> int | None:
        """The lowest formed batch that still has unfinished items (resume lands here)."""
        r = self.conn.execute(
            "SELECT MIN(batch) FROM phased_items WHERE job_id=? AND batch IS NOT NULL"
            " AND state NOT IN ('done', 'failed')", (job_id,)).fetchone()
        return r[0]

    def form_next_batch(self, job_id: str) -> int | None:
        """Put the oldest queued items into the next batch; None (and stop accepting) if none.

        One write transaction, so an `add()` racing with the end of the job either lands in
        a batch or is refused; it is never left behind.
        """
        with self.store.transaction() as c:
            j = c.execute("SELECT batch_size, next_batch FROM phased_jobs WHERE job_id=?",
                          (job_id,)).fetchone()
            ids = [r[0] for r in c.execute(
                "SELECT item_id FROM phased_items WHERE job_id=? AND state='queued'"
                " ORDER BY seq LIMIT ?", (job_id, j["batch_size"]))]
            if not ids:
                c.execute("UPDATE phased_jobs SET accepting=0 WHERE job_id=?", (job_id,))
                return None
            b = int(j["next_batch"])
            c.executemany("UPDATE phased_items SET batch=?, state='assigned' WHERE job_id=?"
                          " AND item_id=?", [(b, job_id, i) for i in ids])
            c.execute("UPDATE phased_jobs SET next_batch=? WHERE job_id=?", (b + 1, job_id))
        return b

    def update(self, job_id: str, item_id: str, **fields: Any) -> None:
        for k in ("transcript", "result"):
            if k in fields and fields[k] is not None and not isinstance(fields[k], str):
                fields[k] = json.dumps(fields[k])
        cols = ", ".join(f"{k}=?" for k in fields)
        self.conn.execute(f"UPDATE phased_items SET {cols} WHERE job_id=? AND item_id=?",
                          [*fields.values(), job_id, item_id])

    def reconcile(self, job_id: str, outputs: dict[str, dict[str, Any]],
                  errors: dict[str, dict[str, Any]]) -> None:
        """After a crash: finished items from the result files, unfinished work rewound."""
        with self.store.transaction() as c:
            for iid, rec in outputs.items():
                c.execute("UPDATE phased_items SET state='done', result=?, error=NULL WHERE"
                          " job_id=? AND item_id=? AND state!='done'",
                          (json.dumps(rec.get("evaluation")), job_id, iid))
            for iid, rec in errors.items():
                msg = (rec.get("error") or {}).get("message", "failed")
                c.execute("UPDATE phased_items SET state='failed', error=? WHERE job_id=?"
                          " AND item_id=? AND state!='failed'", (msg, job_id, iid))
            c.execute("UPDATE phased_items SET state='assigned', stt_started=NULL WHERE"
                      " job_id=? AND state='transcribing'", (job_id,))
            c.execute("UPDATE phased_items SET state='transcribed', eval_started=NULL WHERE"
                      " job_id=? AND state='evaluating'", (job_id,))
            c.execute("UPDATE phased_jobs SET phase=NULL, phase_batch=NULL, phase_started=NULL"
                      " WHERE job_id=?", (job_id,))
