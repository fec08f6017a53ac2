"""`/v1/files`: uploads kept under ROOT/files/<id>.jsonl, and batch files exposed as files.

File ids are opaque and never become paths unchecked: an id is only turned into a path
after it fully matches one of two patterns — `file-<32 hex>` (an upload) or
`file-<job id>-input|output|errors` (a batch job's own files, so a job submitted from a
notebook is readable over HTTP too).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from workbench.api import Workbench
from workbench.errors import JobNotFound
from workbench.server import tables
from workbench.server.errors import APIError
from workbench.server.schemas import FileDeleted, FileList, FileObject

UPLOAD_ID = re.compile(r"file-[0-9a-f]{32}")
JOB_FILE_ID = re.compile(r"file-(batch_[0-9a-f]{1,40})-(input|output|errors)")
JOB_FILES = {"input": "input.jsonl", "output": "output.jsonl", "errors": "errors.jsonl"}
#: uploads with purpose `batch` expire after 30 days at OpenAI; we report the same date
UPLOAD_TTL_S = 30 * 86400
CHUNK = 1 << 20


def complete_lines_length(path: Path) -> int:
    """Bytes up to the last newline: while a worker appends, a reader never gets (or is
    promised, in Content-Length) the half-written line at the end."""
    end = path.stat().st_size
    with open(path, "rb") as f:
        while end > 0:
            start = max(0, end - CHUNK)
            f.seek(start)
            i = f.read(end - start).rfind(b"\n")
            if i >= 0:
                return start + i + 1
            end = start
    return 0


def iter_bytes(path: Path, length: int) -> Iterator[bytes]:
    """The first `length` bytes of `path`, in chunks (bounded memory for any file size)."""
    with open(path, "rb") as f:
        left = length
        while left > 0 and (chunk := f.read(min(CHUNK, left))):
            left -= len(chunk)
            yield chunk


def job_file_id(job_id: str, which: str) -> str:
    return f"file-{job_id}-{which}"


def not_found(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id[:100]}", param="file_id",
                    code="file_not_found")


class FileStore:
    def __init__(self, wb: Workbench, max_upload_bytes: int) -> None:
        self.wb = wb
        self.max_upload = max_upload_bytes
        self.dir = wb.root / "files"
        self.dir.mkdir(exist_ok=True)
        tables.ensure(wb.store)

    @property
    def db(self) -> sqlite3.Connection:
        return self.wb.store.conn

    # -- uploads ---------------------------------------------------------------------------
    def save(self, src: BinaryIO, filename: str, purpose: str) -> FileObject:
        """Copy an upload into the store, refusing it past the size cap (nothing kept)."""
        if purpose != "batch":
            raise APIError(400, f"purpose {purpose[:40]!r} is not supported here: this server "
                           "only runs batches (purpose 'batch')", param="purpose",
                           code="invalid_value")
        file_id = f"file-{uuid.uuid4().hex}"
        final = self.dir / f"{file_id}.jsonl"
        tmp = self.dir / f".{file_id}.part"
        size = 0
        try:
            with open(tmp, "wb") as out:
                while chunk := src.read(CHUNK):
                    size += len(chunk)
                    if size > self.max_upload:
                        raise APIError(413, f"upload larger than {self.max_upload:,} bytes "
                                       "(WORKBENCH_MAX_UPLOAD_BYTES)", param="file",
                                       code="file_too_large")
                    out.write(chunk)
            os.replace(tmp, final)
            now = time.time()
            name = (filename or "upload.jsonl")[:255]
            self.db.execute("INSERT INTO server_files (id, filename, purpose, bytes, created_at)"
                            " VALUES (?,?,?,?,?)", (file_id, name, purpose, size, now))
        except BaseException:
            tmp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            raise
        return self._upload_object(file_id, name, purpose, size, now)

    @staticmethod
    def _upload_object(file_id: str, filename: str, purpose: str, size: int,
                       created: float) -> FileObject:
        return FileObject(id=file_id, bytes=size, created_at=int(created), filename=filename,
                          purpose=purpose, expires_at=int(created + UPLOAD_TTL_S))

    # -- lookups ---------------------------------------------------------------------------
    def locate(self, file_id: str) -> tuple[FileObject, Path]:
        """The file object and its path on disk; 404 for anything unknown or malformed."""
        if UPLOAD_ID.fullmatch(file_id):
            r = self.db.execute("SELECT * FROM server_files WHERE id=?", (file_id,)).fetchone()
            path = self.dir / f"{file_id}.jsonl"
            if r is None or not path.exists():
                raise not_found(file_id)
            return (self._upload_object(r["id"], r["filename"], r["purpose"], r["bytes"],
                                        r["created_at"]), path)
        m = JOB_FILE_ID.fullmatch(file_id)
        if m is None:
            raise not_found(file_id)
        job_id, which = m.groups()
        try:
            job = self.wb.store.get(job_id)
        except JobNotFound:
            raise not_found(file_id) from None
        path = self.wb.store.job_dir(job_id) / JOB_FILES[which]
        if job.kind != "batch" or not path.exists():
            raise not_found(file_id)
        size = path.stat().st_size if which == "input" else complete_lines_length(path)
        obj = FileObject(id=file_id, bytes=size, created_at=int(job.created_at),
                         filename=f"{job_id}_{JOB_FILES[which]}",
                         purpose="batch" if which == "input" else "batch_output")
        return obj, path

    def upload_path(self, file_id: str) -> tuple[FileObject, Path]:
        """An uploaded file usable as a batch input (purpose `batch`)."""
        try:
            obj, path = self.locate(file_id)
        except APIError:
            raise APIError(404, f"input_file_id {file_id[:100]!r}: no such uploaded file",
                           param="input_file_id", code="file_not_found") from None
        if obj.purpose != "batch":
            raise APIError(400, f"file {file_id} has purpose {obj.purpose!r}; a batch input "
                           "needs purpose 'batch'", param="input_file_id", code="invalid_value")
        return obj, path

    def list(self, *, after: str | None, limit: int, order: str,
             purpose: str | None) -> FileList:
        """Uploaded files, newest first by default; `after` is the last id of the previous page."""
        where, args = [], []
        desc = order == "desc"
        if purpose is not None:
            where.append("purpose=?")
            args.append(purpose)
        if after is not None:
            r = self.db.execute("SELECT created_at FROM server_files WHERE id=?",
                                (after,)).fetchone()
            if r is None:
                raise APIError(404, f"after: no file with id {after[:100]!r}", param="after",
                               code="file_not_found")
            where.append(f"(created_at, id) {'<' if desc else '>'} (?, ?)")
            args += [r["created_at"], after]
        sql = "SELECT * FROM server_files" + (" WHERE " + " AND ".join(where) if where else "")
        direction = "DESC" if desc else "ASC"
        sql += f" ORDER BY created_at {direction}, id {direction} LIMIT ?"
        rows = self.db.execute(sql, [*args, limit + 1]).fetchall()
        data = [self._upload_object(r["id"], r["filename"], r["purpose"], r["bytes"],
                                    r["created_at"]) for r in rows[:limit]]
        return FileList(data=data, first_id=data[0].id if data else None,
                        last_id=data[-1].id if data else None, has_more=len(rows) > limit)

    def delete(self, file_id: str) -> FileDeleted:
        """Delete an upload. A batch's own files go with the job (retention), not here."""
        obj, path = self.locate(file_id)
        if not UPLOAD_ID.fullmatch(file_id):
            raise APIError(400, f"{file_id} belongs to batch job; it is removed with the job's "
                           "files (retention), not deleted on its own", param="file_id",
                           code="invalid_value")
        self.db.execute("DELETE FROM server_files WHERE id=?", (obj.id,))
        path.unlink(missing_ok=True)
        return FileDeleted(id=obj.id, deleted=True)
