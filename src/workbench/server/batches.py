"""`/v1/batches`: OpenAI batch objects over workbench batch jobs (and refused inputs).

Status mapping (workbench → OpenAI):
  validating → validating;  queued → validating (validated, waiting for a worker: OpenAI
  also shows a batch waiting for capacity as `validating`, and `in_progress_at` stays
  empty until a worker really starts it);  in_progress and interrupted → in_progress
  (an interrupted job is resumed by the next worker on its own);  finalizing, completed,
  failed, cancelling, cancelled, expired → the same word. The exact workbench status is
  in the extra `workbench` field of every batch object.

Lifecycle as at OpenAI: `expires_at` is the deadline of the completion window ("24h",
or the extension `completion_window_seconds`); a batch not finished by then is `expired`,
with the unfinished requests in the error file as `batch_expired`. Retention is separate
(`workbench.purged_at`). Lines run on the served model their `body.model` names; an
unserved name is that line's `model_not_found` (404), as in OpenAI's error files.
Partial results (extension): `GET /v1/batches/{id}/output` and `/errors` stream the
complete lines so far, in any status.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from workbench.api import Workbench
from workbench.batch.expiry import window_seconds
from workbench.errors import IllegalTransition, InvalidInput, JobNotFound, QueueFull
from workbench.runtime.jobs import Job
from workbench.server import tables
from workbench.server.batch_errors import batch_errors, scan
from workbench.server.errors import APIError
from workbench.server.files import SETTLED, FileStore, job_file_id
from workbench.server.keys import ADMIN, Caller, owned_sql
from workbench.server.schemas import (
    SUPPORTED_ENDPOINTS,
    BatchCreate,
    BatchError,
    BatchErrors,
    BatchList,
    BatchObject,
    BatchUsage,
    RequestCounts,
    WorkbenchInfo,
)
from workbench.server.served import Served
from workbench.store import JobRow, Status, new_job_id

DAY_S = 24 * 3600

STATUS = {
    Status.VALIDATING: "validating", Status.QUEUED: "validating",
    Status.IN_PROGRESS: "in_progress", Status.INTERRUPTED: "in_progress",
    Status.FINALIZING: "finalizing", Status.COMPLETED: "completed", Status.FAILED: "failed",
    Status.CANCELLING: "cancelling", Status.CANCELLED: "cancelled", Status.EXPIRED: "expired",
}


def server_window_s() -> float:
    """How long a "24h" batch may run here ($WORKBENCH_COMPLETION_WINDOW, default 24h)."""
    return window_seconds(os.environ.get("WORKBENCH_COMPLETION_WINDOW") or "24h") or DAY_S


def window_label(seconds: float) -> str:
    """How a window given in seconds (the extension, a notebook job's) reads on the object."""
    return "24h" if seconds == DAY_S else f"{seconds:g}s"


class BatchService:
    def __init__(self, wb: Workbench, files: FileStore, served: Served, *,
                 engine: dict[str, Any] | None = None, window: int = 5000,
                 completion_window_s: float | None = None,
                 media_dirs: list[str] | None = None) -> None:
        self.wb, self.files, self.served = wb, files, served
        #: folders `/v1/audio/...` lines may name files in (`serve --media-dir`); audio
        #: sent inline as a `data:` URL needs none
        self.media_dirs = list(media_dirs or [])
        self.keys = files.keys
        self.engine, self.window = engine, window
        self.window_s = completion_window_s or server_window_s()
        tables.ensure(wb.store)

    @property
    def db(self) -> sqlite3.Connection:
        return self.wb.store.conn

    # -- create ----------------------------------------------------------------------------
    def create(self, req: BatchCreate, who: Caller) -> BatchObject:
        """Validate the whole input file, then queue it as one job (or record it as failed).

        Request-level mistakes (endpoint and window, checked by the body model; an unknown
        file) and full queues are refused with 4xx and leave nothing behind; a file whose
        lines are broken or do not fit the batch (invalid JSON, a duplicate custom_id,
        another endpoint, too many) becomes a `failed` batch with OpenAI's codes and line
        numbers, and no job. The batch belongs to `who`.
        """
        _, path = self.files.upload_path(req.input_file_id, who)
        mismatched, models = scan(path, req.endpoint)
        if mismatched:
            problems, total = list(mismatched), len(mismatched)
            try:
                self.wb.batch.validate(path)
            except InvalidInput as e:
                problems += e.problems
                total += e.total_problems
            return self._refused(req, problems, total, models, who)
        window_s = min(req.completion_window_seconds or self.window_s, self.window_s)
        try:
            job = self.wb.batch.submit(path, models=self.served.models, window=self.window,
                                       engine=self.engine, completion_window=window_s,
                                       media_dir=self.media_dirs)
        except InvalidInput as e:
            return self._refused(req, e.problems, e.total_problems, models, who)
        except QueueFull as e:
            if e.limit == "max_requests_per_job":
                raise APIError(400, str(e), param="input_file_id", code="too_many_tasks") from e
            raise APIError(429, f"{e}; retry when /health says queue_available", code=e.limit,
                           headers={"Retry-After": "5"}) from e
        self.keys.own(who, job.id)
        created = self.wb.store.get(job.id).created_at
        expiry = req.output_expires_after.seconds if req.output_expires_after else None
        self.db.execute(
            "INSERT INTO server_batches (id, job_id, input_file_id, endpoint, completion_window,"
            " metadata, models, created_at, output_expires_s, completion_window_s)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (job.id, job.id, req.input_file_id, req.endpoint,
             window_label(window_s) if req.completion_window_seconds else req.completion_window,
             json.dumps(req.metadata) if req.metadata is not None else None,
             json.dumps(models), created, expiry, window_s))
        return self.get(job.id, ADMIN)

    def _refused(self, req: BatchCreate, problems: list[Any], total: int,
                 models: list[str], who: Caller) -> BatchObject:
        errors = batch_errors(problems, total)
        batch_id = new_job_id("batch")
        self.keys.own(who, batch_id)
        self.db.execute(
            "INSERT INTO server_batches (id, job_id, input_file_id, endpoint, completion_window,"
            " metadata, models, errors, created_at) VALUES (?,NULL,?,?,?,?,?,?,?)",
            (batch_id, req.input_file_id, req.endpoint, req.completion_window,
             json.dumps(req.metadata) if req.metadata is not None else None, json.dumps(models),
             json.dumps([e.model_dump() for e in errors]), time.time()))
        return self.get(batch_id, ADMIN)

    # -- read ------------------------------------------------------------------------------
    def _load(self, batch_id: str, who: Caller) -> tuple[sqlite3.Row | None, JobRow | None]:
        """The batch's row and job; 404 when unknown or made with another key."""
        if not self.keys.sees(who, batch_id):
            raise APIError(404, f"No such Batch object: {batch_id[:100]}", param="batch_id",
                           code="batch_not_found")
        row = self.db.execute("SELECT * FROM server_batches WHERE id=?", (batch_id,)).fetchone()
        job_id = row["job_id"] if row is not None else batch_id
        job = None
        if job_id is not None:
            try:
                job = self.wb.store.get(job_id)
            except JobNotFound:
                job = None
        if job is not None and job.kind != "batch":
            job = None
        if row is None and job is None:
            raise APIError(404, f"No such Batch object: {batch_id[:100]}", param="batch_id",
                           code="batch_not_found")
        return row, job

    def get(self, batch_id: str, who: Caller) -> BatchObject:
        self.files.sync()  # overdue batches expire, settled outputs become files
        return self._object(*self._load(batch_id, who))

    def list(self, *, after: str | None, limit: int, who: Caller) -> BatchList:
        """The batches `who` made, newest first; the admin sees every batch of the store,
        HTTP ones and those from notebooks."""
        self.files.sync()
        mine, owner = owned_sql(who, "id")
        union = (f"SELECT id, created_at FROM jobs WHERE kind='batch'{mine} UNION ALL "
                 f"SELECT id, created_at FROM server_batches WHERE job_id IS NULL{mine}")
        where, args = "", [*owner, *owner]
        if after is not None:
            r = self.db.execute(f"SELECT created_at FROM ({union}) WHERE id=?",
                                (*args, after)).fetchone()
            if r is None:
                raise APIError(404, f"after: no batch with id {after[:100]!r}", param="after",
                               code="batch_not_found")
            where = " WHERE (created_at, id) < (?, ?)"
            args += [r["created_at"], after]
        ids = [r["id"] for r in self.db.execute(
            f"SELECT id FROM ({union}){where} ORDER BY created_at DESC, id DESC LIMIT ?",
            [*args, limit + 1])]
        data = [self.get(i, ADMIN) for i in ids[:limit]]
        return BatchList(data=data, first_id=data[0].id if data else None,
                         last_id=data[-1].id if data else None, has_more=len(ids) > limit)

    def _object(self, row: sqlite3.Row | None, job: JobRow | None) -> BatchObject:
        models = json.loads(row["models"]) if row is not None else []
        metadata = json.loads(row["metadata"]) if row is not None and row["metadata"] else None
        if job is None:
            assert row is not None
            created = row["created_at"]
            return BatchObject(
                id=row["id"], endpoint=row["endpoint"], input_file_id=row["input_file_id"],
                completion_window=row["completion_window"], status="failed",
                errors=BatchErrors(data=[BatchError(**e) for e in json.loads(row["errors"])]),
                created_at=int(created), failed_at=int(created),
                expires_at=int(created + (row["completion_window_s"] or self.window_s)),
                request_counts=RequestCounts(total=0, completed=0, failed=0),
                metadata=metadata, model=self._model(models),
                workbench=WorkbenchInfo(job_id=None, status="failed", progress=0.0,
                                        message="input file refused; nothing was queued",
                                        requested_models=models))
        window = row["completion_window"] if row is not None else (
            window_label(job.spec["completion_window_s"]) if job.spec.get("completion_window_s")
            else "none")
        marks = self._status_times(job)
        st = job.status
        end = int(job.finished_at) if job.finished_at else None
        job_dir = self.wb.store.job_dir(job.id)

        def offered(which: str, name: str) -> str | None:
            p = job_dir / name
            if st in SETTLED and p.exists() and p.stat().st_size > 0 and not self.db.execute(
                    "SELECT 1 FROM server_files WHERE id=? AND deleted_at IS NOT NULL",
                    (job_file_id(job.id, which),)).fetchone():
                return job_file_id(job.id, which)
            return None

        base = f"/v1/batches/{job.id}"
        usage = job.metrics.get("usage")

        errors = None
        if st is Status.FAILED and job.error:
            errors = BatchErrors(data=[BatchError(code="batch_failed", message=job.error)])
        return BatchObject(
            id=job.id,
            endpoint=row["endpoint"] if row is not None else self._first_url(job_dir),
            input_file_id=row["input_file_id"] if row is not None else job_file_id(job.id, "input"),
            completion_window=window, status=STATUS[st], errors=errors,
            output_file_id=offered("output", "output.jsonl"),
            error_file_id=offered("errors", "errors.jsonl"),
            created_at=int(job.created_at),
            in_progress_at=int(job.started_at) if job.started_at else None,
            expires_at=int(job.deadline_at) if job.deadline_at else None,
            finalizing_at=marks.get(Status.FINALIZING),
            completed_at=end if st is Status.COMPLETED else None,
            failed_at=end if st is Status.FAILED else None,
            expired_at=end if st is Status.EXPIRED else None,
            cancelling_at=marks.get(Status.CANCELLING),
            cancelled_at=end if st is Status.CANCELLED else None,
            request_counts=RequestCounts(total=job.total, completed=job.completed,
                                         failed=job.failed),
            metadata=metadata, model=self._model(models, job),
            usage=BatchUsage.model_validate(usage) if usage else BatchUsage(),
            workbench=WorkbenchInfo(job_id=job.id, status=st.value, progress=job.progress,
                                    message=job.message, requested_models=models,
                                    notes=job.spec.get("notes") or {},
                                    purged_at=int(job.purged_at) if job.purged_at else None,
                                    partial_output=None if job.purged_at else f"{base}/output",
                                    partial_errors=None if job.purged_at else f"{base}/errors"))

    def _model(self, requested: list[str], job: JobRow | None = None) -> str:
        """The served name(s) the batch's lines run on (OpenAI's `model`), never a path.

        A notebook job without names reports its model as it was given."""
        if job is not None and not job.spec.get("models"):
            return str(job.spec.get("model"))
        names = [m for m in requested if m in self.served] or [self.served.default]
        return ",".join(names)

    def _status_times(self, job: JobRow) -> dict[Status, int]:
        """When the job last entered each status (from the store's event log)."""
        marks: dict[Status, int] = {}
        for ev in self.wb.store.events(job.id, "status"):
            to = ev["data"].get("to")
            if to in Status.__members__.values():
                marks[Status(to)] = int(ev["at"])
        return marks

    @staticmethod
    def _first_url(job_dir: Path) -> str:
        """A notebook job has no batch endpoint of its own: report its first line's."""
        try:
            with open(job_dir / "input.jsonl", "rb") as f:
                url = json.loads(f.readline()).get("url")
        except (OSError, ValueError, AttributeError):
            return SUPPORTED_ENDPOINTS[0]
        return url if url in SUPPORTED_ENDPOINTS else SUPPORTED_ENDPOINTS[0]

    # -- cancel ----------------------------------------------------------------------------
    def cancel(self, batch_id: str, who: Caller) -> BatchObject:
        """Queued → cancelled at once; running → cancelling, then cancelled with partial
        results. Cancelling twice is harmless; a finished batch cannot be cancelled (409)."""
        row, job = self._load(batch_id, who)
        if job is None:
            raise APIError(409, f"batch {batch_id} failed validation; there is nothing to "
                           "cancel", code="invalid_state")
        if job.status not in (Status.CANCELLING, Status.CANCELLED):
            try:
                Job(self.wb, job.id).cancel()
            except IllegalTransition:
                raise APIError(409, f"batch {batch_id} is {STATUS[job.status]}; only a "
                               "validating or in_progress batch can be cancelled",
                               code="invalid_state") from None
        return self.get(batch_id, who)
