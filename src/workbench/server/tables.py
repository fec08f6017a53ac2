"""The server's own tables in the store: uploaded files and batch records.

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
]


def ensure(store: Store) -> None:
    store.ensure_tables("server", MIGRATIONS)
