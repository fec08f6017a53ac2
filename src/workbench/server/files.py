"""`/v1/files`: uploads kept under ROOT/files/<id>.jsonl, and batch files exposed as files.

File ids are opaque and never become paths unchecked: an id is only turned into a path
after it fully matches one of two patterns — `file-<32 hex>` (an upload) or
`file-<job id>-input|output|errors` (a batch job's own files, so a job submitted from a
notebook is readable over HTTP too).

As at OpenAI: a `purpose=batch` upload is stored as it is (only a binary file, which is
no JSONL at all, is refused), and its lines are checked when a batch is created from it:
broken lines give a `failed` batch with OpenAI's error codes and line numbers (see
`batch_errors`). A client that prefers the earlier refusal asks for it with
`POST /v1/files?validate=true`: the file is then validated whole on arrival and a bad one
is refused (400, every problem by line) with nothing stored. The
output and error files of a settled batch are files of purpose `batch_output`, listed
and deletable; every file has an `expires_at` (uploads: `expires_after`, default 30 days;
outputs: the batch's `output_expires_after`, default the store's retention) and is
deleted once it passes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from workbench.api import Workbench
from workbench.batch.format import validate_file
from workbench.errors import DiskFull, InvalidInput, JobNotFound
from workbench.server import tables
from workbench.server.errors import APIError
from workbench.server.keys import Caller, KeyStore, owned_sql
from workbench.server.schemas import FileDeleted, FileList, FileObject
from workbench.store import disk
from workbench.store.status import FINISHED

log = logging.getLogger("workbench.server")

UPLOAD_ID = re.compile(r"file-[0-9a-f]{32}")
JOB_FILE_ID = re.compile(r"file-(batch_[0-9a-f]{1,40})-(input|output|errors)")
JOB_FILES = {"input": "input.jsonl", "output": "output.jsonl", "errors": "errors.jsonl"}
#: uploads with purpose `batch` expire after 30 days at OpenAI unless `expires_after` says
UPLOAD_TTL_S = 30 * 86400
CHUNK = 1 << 20


def copy_capped(src: BinaryIO, dest: BinaryIO, limit: int, so_far: int = 0,
                param: str = "file") -> int:
    """Copy an upload in chunks, refusing it (413) once the total passes `limit` bytes.

    Returns the new total; `so_far` counts what earlier files of the same request took.
    """
    total = so_far
    while chunk := src.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise APIError(413, f"upload larger than {limit:,} bytes (WORKBENCH_MAX_UPLOAD_BYTES)",
                           param=param, code="file_too_large")
        dest.write(chunk)
    return total
#: batches whose output/error files are final: offered as `batch_output` files
SETTLED = tuple(FINISHED)


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(root: Path) -> list[Path]:
    """Partial uploads left by a server that died mid-upload (kill -9, a crash).

    Upload parts (`files/.<id>.<pid>.part`) and multipart upload folders
    (`uploads/<pid>-<hex>`) carry the pid of the server writing them: those of a process
    that no longer runs are removed (at server start), those of a live server sharing
    the root are left alone. Returns what was removed.
    """
    gone: list[Path] = []
    for part in (root / "files").glob(".file-*.part"):
        pid = part.name.rsplit(".", 2)[-2]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            part.unlink(missing_ok=True)
            gone.append(part)
    uploads = root / "uploads"
    for folder in uploads.iterdir() if uploads.is_dir() else ():
        pid = folder.name.split("-", 1)[0]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            gone.append(folder)
    if gone:
        log.info("removed %d partial upload(s) left by a server that stopped", len(gone))
    return gone


def looks_binary(path: Path) -> bool:
    """A NUL byte in the first 8 KiB: not JSONL text (an image, an archive, a model...)."""
    with open(path, "rb") as f:
        return b"\x00" in f.read(8192)


class FileStore:
    def __init__(self, wb: Workbench, max_upload_bytes: int, keys: KeyStore) -> None:
        self.wb, self.keys = wb, keys
        self.max_upload = max_upload_bytes
        self.dir = wb.root / "files"
        self.dir.mkdir(exist_ok=True)
        tables.ensure(wb.store)

    @property
    def db(self) -> sqlite3.Connection:
        return self.wb.store.conn

    # -- uploads ---------------------------------------------------------------------------
    def save(self, src: BinaryIO, filename: str, purpose: str,
             expires_after_s: int | None = None, *, who: Caller,
             validate: bool = False) -> FileObject:
        """Copy an upload into the store as `who`'s file. A binary file is refused; with
        `validate` every line is checked now and a bad file is refused whole."""
        if purpose != "batch":
            raise APIError(400, f"purpose {purpose[:40]!r} is not supported here: this server "
                           "only runs batches (purpose 'batch')", param="purpose",
                           code="invalid_value")
        file_id = f"file-{uuid.uuid4().hex}"
        final = self.dir / f"{file_id}.jsonl"
        tmp = self.dir / f".{file_id}.{os.getpid()}.part"  # the pid: see remove_leftovers
        disk.check_space(self.wb.root, submit=True)
        name = (filename or "upload.jsonl")[:255]
        try:
            with open(tmp, "wb") as out:
                size = copy_capped(src, out, self.max_upload)
            self._validate(tmp, name, validate)
            os.replace(tmp, final)
            now = time.time()
            expires = now + (expires_after_s or UPLOAD_TTL_S)
            self.db.execute("INSERT INTO server_files (id, filename, purpose, bytes, created_at,"
                            " expires_at) VALUES (?,?,?,?,?,?)",
                            (file_id, name, purpose, size, now, expires))
            self.keys.own(who, file_id)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            if disk.is_disk_full(e) and not isinstance(e, DiskFull):
                raise disk.disk_full(self.wb.root, submit=True) from e
            raise
        return FileObject(id=file_id, bytes=size, created_at=int(now), filename=name,
                          purpose="batch", expires_at=int(expires))

    @staticmethod
    def _validate(path: Path, name: str, lines: bool) -> None:
        """Refuse a binary file; with `lines`, a malformed batch input too, with every
        problem (line, field, why)."""
        if looks_binary(path):
            raise APIError(400, f"{name}: a binary file, not JSONL text; a batch input is one "
                           "JSON request per line (UTF-8)", param="file", code="invalid_file")
        if not lines:
            return
        try:
            validate_file(path)
        except InvalidInput as e:
            raise APIError.refused(f"{name}: batch input", e.problems, e.total_problems,
                                   code="invalid_file", param="file") from None

    # -- lookups ---------------------------------------------------------------------------
    def _object(self, r: sqlite3.Row) -> FileObject:
        size = r["bytes"]
        if r["job_id"] is not None:  # a resumed batch may have grown its file since
            path = self.wb.store.job_dir(r["job_id"]) / JOB_FILES[r["id"].rsplit("-", 1)[1]]
            size = complete_lines_length(path) if path.exists() else 0
        return FileObject(id=r["id"], bytes=size, created_at=int(r["created_at"]),
                          filename=r["filename"], purpose=r["purpose"],
                          expires_at=int(r["expires_at"]) if r["expires_at"] else None)

    def locate(self, file_id: str, who: Caller) -> tuple[FileObject, Path]:
        """The file object and its path on disk; 404 for anything unknown, malformed,
        expired, or made with another key (a batch's files belong to the batch's key)."""
        self.sync()
        if UPLOAD_ID.fullmatch(file_id):
            r = self.db.execute("SELECT * FROM server_files WHERE id=?", (file_id,)).fetchone()
            path = self.dir / f"{file_id}.jsonl"
            if r is None or not path.exists() or not self.keys.sees(who, file_id):
                raise not_found(file_id)
            return self._object(r), path
        m = JOB_FILE_ID.fullmatch(file_id)
        if m is None:
            raise not_found(file_id)
        job_id, which = m.groups()
        if not self.keys.sees(who, job_id):
            raise not_found(file_id)
        try:
            job = self.wb.store.get(job_id)
        except JobNotFound:
            raise not_found(file_id) from None
        path = self.wb.store.job_dir(job_id) / JOB_FILES[which]
        if job.kind != "batch" or not path.exists():
            raise not_found(file_id)
        r = self.db.execute("SELECT * FROM server_files WHERE id=?", (file_id,)).fetchone()
        if r is not None:
            if r["deleted_at"] is not None:
                raise not_found(file_id)
            return self._object(r), path
        size = path.stat().st_size if which == "input" else complete_lines_length(path)
        obj = FileObject(id=file_id, bytes=size, created_at=int(job.created_at),
                         filename=f"{job_id}_{JOB_FILES[which]}",
                         purpose="batch" if which == "input" else "batch_output")
        return obj, path

    def upload_path(self, file_id: str, who: Caller) -> tuple[FileObject, Path]:
        """An uploaded file usable as a batch input (purpose `batch`)."""
        try:
            obj, path = self.locate(file_id, who)
        except APIError:
            raise APIError(404, f"input_file_id {file_id[:100]!r}: no such uploaded file",
                           param="input_file_id", code="file_not_found") from None
        if obj.purpose != "batch":
            raise APIError(400, f"file {file_id} has purpose {obj.purpose!r}; a batch input "
                           "needs purpose 'batch'", param="input_file_id", code="invalid_value")
        return obj, path

    def list(self, *, after: str | None, limit: int, order: str,
             purpose: str | None, who: Caller) -> FileList:
        """`who`'s uploads and batch outputs (the admin: all), newest first by default;
        `after` is the last id of the previous page."""
        self.sync()
        mine, owner = owned_sql(who, "COALESCE(job_id, id)")
        where, args = ["deleted_at IS NULL" + mine], list(owner)
        desc = order == "desc"
        if purpose is not None:
            where.append("purpose=?")
            args.append(purpose)
        if after is not None:
            r = self.db.execute(f"SELECT created_at FROM server_files WHERE id=?{mine}",
                                [after, *owner]).fetchone()
            if r is None:
                raise APIError(404, f"after: no file with id {after[:100]!r}", param="after",
                               code="file_not_found")
            where.append(f"(created_at, id) {'<' if desc else '>'} (?, ?)")
            args += [r["created_at"], after]
        direction = "DESC" if desc else "ASC"
        rows = self.db.execute(f"SELECT * FROM server_files WHERE {' AND '.join(where)} ORDER BY"
                               f" created_at {direction}, id {direction} LIMIT ?",
                               [*args, limit + 1]).fetchall()
        data = [self._object(r) for r in rows[:limit]]
        return FileList(data=data, first_id=data[0].id if data else None,
                        last_id=data[-1].id if data else None, has_more=len(rows) > limit)

    def delete(self, file_id: str, who: Caller) -> FileDeleted:
        """Delete an upload, or a batch's output/error file. A batch's input goes with the
        job (retention), not here."""
        obj, path = self.locate(file_id, who)
        if UPLOAD_ID.fullmatch(file_id):
            self.db.execute("DELETE FROM server_files WHERE id=?", (obj.id,))
            path.unlink(missing_ok=True)
            return FileDeleted(id=obj.id, deleted=True)
        if obj.purpose != "batch_output":
            raise APIError(400, f"{file_id} is a batch's input; it is removed with the job's "
                           "files (retention), not deleted on its own", param="file_id",
                           code="invalid_value")
        self._forget_output(file_id, path)
        return FileDeleted(id=obj.id, deleted=True)

    def _forget_output(self, file_id: str, path: Path | None) -> None:
        now = time.time()
        job_id = file_id.removeprefix("file-").rsplit("-", 1)[0]
        self.db.execute(
            "INSERT INTO server_files (id, filename, purpose, bytes, created_at, job_id,"
            " deleted_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
            " deleted_at=excluded.deleted_at", (file_id, file_id, "batch_output", 0, now,
                                                job_id, now))
        if path is not None:
            path.unlink(missing_ok=True)

    # -- lifecycle -------------------------------------------------------------------------
    def sync(self, now: float | None = None) -> None:
        """Register the files of newly settled batches; delete what has expired or was purged.

        Cheap when nothing changed (two indexed queries); run before every read. On a full
        disk it waits for space (reads go on answering what is registered).
        """
        try:
            self._sync(now)
        except Exception as e:
            if not disk.is_disk_full(e):
                raise
            log.warning("file list not refreshed: %s", disk.disk_full(self.wb.root))

    def _sync(self, now: float | None) -> None:
        now = now or time.time()
        self.wb.batch.expire_overdue()
        marks = ",".join("?" * len(SETTLED))
        new = self.db.execute(
            f"SELECT j.id, j.finished_at, b.output_expires_s FROM jobs j LEFT JOIN"
            f" server_batches b ON b.job_id = j.id WHERE j.kind='batch' AND j.status IN ({marks})"
            " AND j.purged_at IS NULL AND j.id NOT IN (SELECT job_id FROM server_registered)",
            [s.value for s in SETTLED]).fetchall()
        keep_s = self.wb.store.limits.retention_days * 86400
        for r in new:
            created = r["finished_at"] or now
            expires = created + (r["output_expires_s"] or keep_s)
            for which in ("output", "errors"):
                path = self.wb.store.job_dir(r["id"]) / JOB_FILES[which]
                size = complete_lines_length(path) if path.exists() else 0
                if size:
                    self.db.execute(
                        "INSERT OR IGNORE INTO server_files (id, filename, purpose, bytes,"
                        " created_at, job_id, expires_at) VALUES (?,?,?,?,?,?,?)",
                        (job_file_id(r["id"], which), f"{r['id']}_{JOB_FILES[which]}",
                         "batch_output", size, created, r["id"], expires))
            self.db.execute("INSERT OR IGNORE INTO server_registered (job_id) VALUES (?)",
                            (r["id"],))
        for r in self.db.execute(
                "SELECT f.id, f.job_id FROM server_files f LEFT JOIN jobs j ON j.id = f.job_id"
                " WHERE f.deleted_at IS NULL AND (f.expires_at < ? OR (f.job_id IS NOT NULL AND"
                " (j.id IS NULL OR j.purged_at IS NOT NULL OR j.status NOT IN"
                f" ({marks}))))", [now, *(s.value for s in SETTLED)]).fetchall():
            self._expire(r["id"], r["job_id"])

    def _expire(self, file_id: str, job_id: str | None) -> None:
        if job_id is None:
            self.db.execute("DELETE FROM server_files WHERE id=?", (file_id,))
            (self.dir / f"{file_id}.jsonl").unlink(missing_ok=True)
            return
        try:
            status = self.wb.store.get(job_id).status
        except JobNotFound:
            status = None
        if status is not None and status not in SETTLED:  # resumed: offered again when settled
            self.db.execute("DELETE FROM server_files WHERE id=?", (file_id,))
            self.db.execute("DELETE FROM server_registered WHERE job_id=?", (job_id,))
            return
        which = file_id.rsplit("-", 1)[1]
        self._forget_output(file_id, self.wb.store.job_dir(job_id) / JOB_FILES[which]
                            if status is not None else None)

