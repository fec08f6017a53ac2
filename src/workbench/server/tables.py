"""The server's own tables in the store: files (uploads and batch outputs), batch records.

A batch created over HTTP is a workbench job (same id) plus one `server_batches` row for
what OpenAI's object carries and a job does not (input file, endpoint, metadata). A batch
whose input file was refused has a row and no job: it exists for the client as `failed`
with line-numbered errors, and nothing was queued.
"""

from __future__ import annotations

from workbench.store import Store

MIGRATIONS = [
    """
    CREATE TABLE server_files (
        id TEXT PRIMARY KEY,
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX server_files_created ON server_files(created_at, id);
    CREATE TABLE server_batches (
        id TEXT PRIMARY KEY,
        job_id TEXT,
        input_file_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        completion_window TEXT NOT NULL,
        metadata TEXT,
        models TEXT NOT NULL DEFAULT '[]',
        errors TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX server_batches_created ON server_batches(created_at, id);
    """,
    # 2: OpenAI's file lifecycle. Output/error files of settled batches are rows too
    # (`job_id` set, purpose batch_output), so they are listed, paged and deletable;
    # `expires_at` (uploads: `expires_after`, default 30 days; outputs: the batch's
    # `output_expires_after`, default the store's retention); `deleted_at` keeps a deleted
    # output from being registered again. `server_registered`: batches whose files were
    # registered. `output_expires_s`: the batch's `output_expires_after.seconds`.
    """
    ALTER TABLE server_files ADD COLUMN expires_at REAL;
    ALTER TABLE server_files ADD COLUMN job_id TEXT;
    ALTER TABLE server_files ADD COLUMN deleted_at REAL;
    UPDATE server_files SET expires_at = created_at + 2592000 WHERE expires_at IS NULL;
    CREATE INDEX server_files_expiry ON server_files(expires_at) WHERE deleted_at IS NULL;
    CREATE TABLE server_registered (job_id TEXT PRIMARY KEY);
    ALTER TABLE server_batches ADD COLUMN output_expires_s REAL;
    ALTER TABLE server_batches ADD COLUMN completion_window_s REAL;
    """,
]


def ensure(store: Store) -> None:
    store.ensure_tables("server", MIGRATIONS)
