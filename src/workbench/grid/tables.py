"""The grid's tables in the store: one row per model/judge call, uploaded files, transcripts.

A call row is written once, when the call is finished (answer or error), with
`INSERT OR IGNORE`: the first write wins, so a resume or a re-run never re-sends a call
that has a row, and a call is never recorded twice. Uploaded Gemini files and media
transcripts are keyed by content hash and shared by every job of the root.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel

from workbench.engines.base import Outcome
from workbench.engines.gemini_files import GeminiFile
from workbench.store import Store

MIGRATIONS = [
    """
    CREATE TABLE grid_calls (
        job_id TEXT NOT NULL,
        call_id TEXT NOT NULL,
        cell_id TEXT NOT NULL,
        role TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        ok INTEGER NOT NULL,
        text TEXT NOT NULL DEFAULT '',
        parsed TEXT,
        error TEXT,
        error_code TEXT,
        input_kind TEXT NOT NULL,
        mode TEXT NOT NULL,
        batch_name TEXT,
        latency_s REAL,
        wait_s REAL NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        total_tokens INTEGER NOT NULL DEFAULT 0,
        finish_reason TEXT,
        finished_at REAL NOT NULL,
        PRIMARY KEY (job_id, call_id)
    );
    CREATE INDEX grid_calls_cell ON grid_calls(job_id, cell_id);
    CREATE TABLE gemini_files (
        endpoint TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        name TEXT NOT NULL,
        uri TEXT NOT NULL,
        mime_type TEXT NOT NULL,
        size_bytes INTEGER NOT NULL DEFAULT 0,
        expires_at REAL,
        state TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (endpoint, sha256)
    );
    CREATE TABLE media_transcripts (
        sha256 TEXT NOT NULL,
        stt_model TEXT NOT NULL,
        text TEXT NOT NULL,
        language TEXT,
        duration_s REAL,
        created_at REAL NOT NULL,
        PRIMARY KEY (sha256, stt_model)
    );
    CREATE TABLE grid_batches (
        job_id TEXT NOT NULL,
        name TEXT NOT NULL,
        stage TEXT NOT NULL,
        model TEXT NOT NULL,
        call_ids TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (job_id, name)
    );
    """,
]


def ensure(store: Store) -> None:
    store.ensure_tables("grid", MIGRATIONS)


class CallRow(Outcome):
    """One finished model or judge call: its outcome, and which cell and model it was."""

    call_id: str
    cell_id: str
    role: str  # "model" | "judge"
    model: str  # the model's label
    provider: str
    input_kind: str = "media"  # "media" | "transcript" | "text"
    mode: str = "realtime"
    batch_name: str | None = None
    finished_at: float = 0.0

    @classmethod
    def of(cls, out: Outcome, **where: Any) -> CallRow:
        """The row of outcome `out` (any Outcome, e.g. a GeminiCall); `where` adds the ids."""
        return cls(**{**out.model_dump(include=set(Outcome.model_fields)), **where})

    def record(self) -> dict[str, Any]:
        """The row as the grid_calls columns hold it (and as `GridJob.calls()` shows it)."""
        d = self.model_dump()
        return {c: (self.ok if c == "ok" else d[c]) for c in COLUMNS}


#: grid_calls' columns in table order; `ok` is stored (for SQL) and derived (error is None).
COLUMNS = ["call_id", "cell_id", "role", "model", "provider", "ok", "text", "parsed", "error",
           "error_code", "input_kind", "mode", "batch_name", "latency_s", "wait_s", "attempts",
           "prompt_tokens", "completion_tokens", "total_tokens", "finish_reason", "finished_at"]
_COLS = [c for c in COLUMNS if c != "ok"]


def insert_call(store: Store, job_id: str, row: CallRow) -> bool:
    """Record a finished call; False if it was already recorded (the first write wins)."""
    d = row.record()
    d["finished_at"] = d["finished_at"] or time.time()
    d["parsed"] = json.dumps(d["parsed"]) if d["parsed"] is not None else None
    d["ok"] = int(d["ok"])
    cols = ["job_id", *COLUMNS]
    cur = store.conn.execute(
        f"INSERT OR IGNORE INTO grid_calls ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
        [job_id, *(d[c] for c in COLUMNS)])
    return cur.rowcount == 1


def calls(store: Store, job_id: str) -> list[CallRow]:
    ensure(store)
    rows = store.conn.execute(
        f"SELECT {','.join(_COLS)} FROM grid_calls WHERE job_id=? ORDER BY finished_at, call_id",
        (job_id,)).fetchall()
    out = []
    for r in rows:
        d = dict(r)
        d["parsed"] = json.loads(d["parsed"]) if d["parsed"] else None
        out.append(CallRow(**d))
    return out


def forget_calls(store: Store, job_id: str, call_ids: list[str]) -> int:
    """Delete these rows (a resume sends those calls again)."""
    with store.transaction() as c:
        return sum(c.execute("DELETE FROM grid_calls WHERE job_id=? AND call_id=?",
                             (job_id, cid)).rowcount for cid in call_ids)


def forget_failed_calls(store: Store, job_id: str) -> int:
    """Delete a job's error rows so the next run sends those calls again."""
    cur = store.conn.execute("DELETE FROM grid_calls WHERE job_id=? AND ok=0", (job_id,))
    return cur.rowcount


# -- uploaded Gemini files (shared by all jobs of the root) --------------------------------
class StoreFileCache:
    """`FileCache` in the store: content hash → uploaded file, reused until near expiry."""

    def __init__(self, store: Store) -> None:
        self.store = store
        ensure(store)

    def get(self, endpoint: str, sha256: str) -> GeminiFile | None:
        r = self.store.conn.execute(
            "SELECT sha256, name, uri, mime_type, size_bytes, expires_at, state FROM gemini_files"
            " WHERE endpoint=? AND sha256=?", (endpoint, sha256)).fetchone()
        return GeminiFile(**dict(r)) if r else None

    def put(self, endpoint: str, f: GeminiFile) -> None:
        self.store.conn.execute(
            "INSERT INTO gemini_files (endpoint, sha256, name, uri, mime_type, size_bytes,"
            " expires_at, state, updated_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(endpoint,"
            " sha256) DO UPDATE SET name=excluded.name, uri=excluded.uri, mime_type="
            "excluded.mime_type, size_bytes=excluded.size_bytes, expires_at=excluded.expires_at,"
            " state=excluded.state, updated_at=excluded.updated_at",
            (endpoint, f.sha256, f.name, f.uri, f.mime_type, f.size_bytes, f.expires_at, f.state,
             time.time()))

    def drop(self, endpoint: str, sha256: str) -> None:
        self.store.conn.execute("DELETE FROM gemini_files WHERE endpoint=? AND sha256=?",
                                (endpoint, sha256))


# -- transcripts (shared by all jobs of the root) ------------------------------------------
def get_transcript(store: Store, sha256: str, stt_model: str) -> str | None:
    r = store.conn.execute("SELECT text FROM media_transcripts WHERE sha256=? AND stt_model=?",
                           (sha256, stt_model)).fetchone()
    return None if r is None else str(r[0])


def put_transcript(store: Store, sha256: str, stt_model: str, text: str,
                   language: str | None, duration_s: float | None) -> None:
    store.conn.execute(
        "INSERT OR REPLACE INTO media_transcripts (sha256, stt_model, text, language, duration_s,"
        " created_at) VALUES (?,?,?,?,?,?)",
        (sha256, stt_model, text, language, duration_s, time.time()))


# -- Gemini batch jobs of a grid job -------------------------------------------------------
class BatchRow(BaseModel):
    name: str
    stage: str
    model: str
    call_ids: list[str]
    state: str


def add_batch(store: Store, job_id: str, b: BatchRow) -> None:
    now = time.time()
    store.conn.execute(
        "INSERT INTO grid_batches (job_id, name, stage, model, call_ids, state, created_at,"
        " updated_at) VALUES (?,?,?,?,?,?,?,?)",
        (job_id, b.name, b.stage, b.model, json.dumps(b.call_ids), b.state, now, now))


def set_batch_state(store: Store, job_id: str, name: str, state: str) -> None:
    store.conn.execute("UPDATE grid_batches SET state=?, updated_at=? WHERE job_id=? AND name=?",
                       (state, time.time(), job_id, name))


def batches(store: Store, job_id: str) -> list[BatchRow]:
    rows = store.conn.execute(
        "SELECT name, stage, model, call_ids, state FROM grid_batches WHERE job_id=?"
        " ORDER BY created_at", (job_id,)).fetchall()
    return [BatchRow(name=r["name"], stage=r["stage"], model=r["model"],
                     call_ids=json.loads(r["call_ids"]), state=r["state"]) for r in rows]
