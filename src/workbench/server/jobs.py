"""`/v1/jobs`: every kind of job over HTTP (list, poll, cancel, resume, results), and
`/v1/grids` + `/v1/phased` to submit grids and phased jobs with uploaded media.

A front door only: submissions go through the kinds' public APIs (`wb.grid.submit`,
`wb.phased.submit`, `job.add`, `job.item`), so they are checked exactly as in a notebook
(InvalidInput → 400 listing every problem) and nothing is queued unless all is well.
Uploads land in a private folder under the root, the kind stores them content-addressed,
and the folder is removed. Engine import paths ("package.module:Class") name code to run
in the worker, so over HTTP they are refused unless the server allows them
(`allow_engine_imports`, $WORKBENCH_ALLOW_ENGINE_IMPORTS=1).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import UploadFile
from pydantic import BaseModel, ValidationError

from workbench.api import Workbench
from workbench.errors import IllegalTransition, InvalidInput, JobNotFound, QueueFull
from workbench.server.errors import APIError
from workbench.server.files import copy_capped
from workbench.server.job_schemas import (
    GridCreate,
    ItemList,
    ItemObject,
    JobCounts,
    JobList,
    JobObject,
    PhasedCreate,
    ResultRows,
)
from workbench.server.keys import Caller, KeyStore
from workbench.store import JobRow, Status
from workbench.store.status import FINISHED

SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
log = logging.getLogger("workbench.server")


def eta_s(job: JobRow, now: float | None = None) -> float | None:
    """The kind's own ETA when it measures one (batch: `eta_s`), else a straight line
    through the progress since the job started; None when finished or not started."""
    if job.status in FINISHED or job.started_at is None:
        return None
    own = job.metrics.get("eta_s")
    if isinstance(own, int | float) and math.isfinite(own):
        return round(float(own), 1)
    elapsed = (now or time.time()) - job.started_at
    if job.progress <= 0 or elapsed <= 0:
        return None
    return round(elapsed * (100 - job.progress) / job.progress, 1)


def job_object(job: JobRow) -> JobObject:
    ts = {k: int(v) if v else None for k, v in (
        ("started_at", job.started_at), ("finished_at", job.finished_at),
        ("deadline_at", job.deadline_at), ("purged_at", job.purged_at))}
    metrics = {k: v for k, v in job.metrics.items() if isinstance(v, int | float | str | dict)}
    return JobObject(id=job.id, kind=job.kind, status=job.status.value,
                     progress=max(0.0, min(100.0, job.progress)), progress_message=job.message,
                     counts=JobCounts(total=job.total, completed=job.completed, failed=job.failed),
                     eta_s=eta_s(job), created_at=int(job.created_at), error=job.error,
                     metrics=metrics, **ts)


@contextmanager
def quiet() -> Iterator[None]:
    """The kinds warn a notebook user (e.g. recordings that failed at intake); over HTTP the
    job's items say it, so the warnings go to the log, never into an error response."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        log.info("%s", w.message)


def refused(e: InvalidInput, what: str) -> APIError:
    return APIError.refused(what, e.problems, e.total_problems)


def parse_spec(raw: str, model: type[BaseModel], what: str) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        problems = [(0, ".".join(map(str, x["loc"])) or "spec", str(x["msg"]))
                    for x in e.errors()]
        raise APIError.refused(f"{what} spec", problems, len(problems), param="spec") from None


class JobsService:
    def __init__(self, wb: Workbench, max_upload_bytes: int, allow_engine_imports: bool,
                 keys: KeyStore) -> None:
        self.wb, self.keys = wb, keys
        self.max_upload = max_upload_bytes
        self.allow_imports = allow_engine_imports

    # -- reading -------------------------------------------------------------------------
    def row(self, job_id: str, who: Caller) -> JobRow:
        """The job; 404 when unknown or made with another key (the same answer)."""
        try:
            if not self.keys.sees(who, job_id):
                raise JobNotFound(job_id)
            return self.wb.store.get(job_id)
        except JobNotFound:
            raise APIError(404, f"No such job: {job_id[:100]}", param="job_id",
                           code="job_not_found") from None

    def get(self, job_id: str, who: Caller) -> JobObject:
        self.wb.batch.expire_overdue()
        return job_object(self.row(job_id, who))

    def list(self, *, kind: str | None, status: str | None, after: str | None,
             limit: int, who: Caller) -> JobList:
        """`who`'s jobs (the admin: all), newest first, like the other lists; `after` is the
        last id of the previous page."""
        self.wb.batch.expire_overdue()
        if status is not None and status not in Status.__members__.values():
            raise APIError(400, f"status {status[:40]!r} is not one of "
                           f"{', '.join(s.value for s in Status)}", param="status",
                           code="invalid_value")
        rows = self.wb.store.list_jobs(kind=kind, status=status)[::-1]
        mine = self.keys.owned(who)
        if mine is not None:
            rows = [r for r in rows if r.id in mine]
        if after is not None:
            ids = [r.id for r in rows]
            if after not in ids:
                raise APIError(404, f"after: no job with id {after[:100]!r}", param="after",
                               code="job_not_found")
            rows = rows[ids.index(after) + 1:]
        data = [job_object(r) for r in rows[:limit]]
        return JobList(data=data, first_id=data[0].id if data else None,
                       last_id=data[-1].id if data else None, has_more=len(rows) > limit)

    def cancel(self, job_id: str, who: Caller) -> JobObject:
        job = self.row(job_id, who)
        if job.status not in (Status.CANCELLING, Status.CANCELLED):
            try:
                self.wb.job(job_id).cancel()
            except IllegalTransition as e:
                raise APIError(409, f"job {job_id} is {job.status.value}: it cannot be cancelled"
                               f" ({e})", code="invalid_state") from None
        return self.get(job_id, who)

    def resume(self, job_id: str, who: Caller) -> JobObject:
        self.row(job_id, who)
        try:
            self.wb.job(job_id).resume()
        except IllegalTransition as e:
            raise APIError(409, f"{e}; only an interrupted, failed or cancelled job resumes",
                           code="invalid_state") from None
        return self.get(job_id, who)

    def results(self, job_id: str, who: Caller, *, offset: int, limit: int) -> ResultRows:
        """The kind's results DataFrame as JSON rows (what there is so far while it runs)."""
        job = self.row(job_id, who)
        if job.purged_at is not None:
            raise APIError(410, f"job {job_id}'s files were purged by retention",
                           code="files_purged")
        df = self.wb.job(job_id).results()
        page = df.iloc[offset:offset + limit]
        rows = json.loads(page.to_json(orient="records", date_format="iso", default_handler=str))
        return ResultRows(job_id=job_id, kind=job.kind, columns=[str(c) for c in df.columns],
                          data=rows, total=len(df), has_more=offset + limit < len(df))

    # -- phased items --------------------------------------------------------------------
    def phased(self, job_id: str, who: Caller) -> Any:
        job = self.row(job_id, who)
        if job.kind != "phased":
            raise APIError(400, f"job {job_id} is a {job.kind} job; items belong to phased jobs",
                           param="job_id", code="invalid_value")
        return self.wb.phased.job(job_id)

    def item(self, job_id: str, item_id: str, who: Caller) -> ItemObject:
        job = self.phased(job_id, who)
        try:
            st = job.item(item_id)
        except LookupError:  # errors.NotFound names the job's recordings
            raise APIError(404, f"no recording {item_id[:100]!r} in job {job_id}",
                           param="item_id", code="item_not_found") from None
        return ItemObject.model_validate(st.model_dump(mode="json"))

    def items(self, job_id: str, who: Caller) -> ItemList:
        job = self.phased(job_id, who)
        return ItemList(job_id=job_id, data=[ItemObject.model_validate(s.model_dump(mode="json"))
                                             for s in job.items_status()])

    def add_items(self, job_id: str, files: list[UploadFile], item_ids: list[str] | None,
                  who: Caller) -> ItemList:
        job = self.phased(job_id, who)
        with self._uploads(files) as paths, quiet():
            try:
                added = job.add(self._named(paths, item_ids))
            except InvalidInput as e:
                raise refused(e, "recordings") from None
        return ItemList(job_id=job_id, data=[self.item(job_id, i, who) for i in added])

    # -- submitting ----------------------------------------------------------------------
    def submit_phased(self, spec_raw: str, files: list[UploadFile],
                      item_ids: list[str] | None, who: Caller) -> JobObject:
        spec = parse_spec(spec_raw, PhasedCreate, "phased job")
        for part in ("stt", "llm"):
            value = getattr(spec, part)
            engine = value.get("engine") if isinstance(value, dict) else None
            self._check_engine(f"{part}.engine", engine)
        with self._uploads(files) as paths, quiet():
            try:
                job = self.wb.phased.submit(self._named(paths, item_ids), **spec.model_dump())
            except InvalidInput as e:
                raise refused(e, "phased job") from None
            except QueueFull as e:
                raise APIError(429, str(e), code=e.limit) from e
        self.keys.own(who, job.id)
        return self.get(job.id, who)

    def submit_grid(self, spec_raw: str, files: list[UploadFile], who: Caller) -> JobObject:
        spec = parse_spec(spec_raw, GridCreate, "grid")
        for m in [*spec.models, spec.judge]:
            if isinstance(m, dict):
                self._check_engine("models.engine", m.get("engine") if isinstance(
                    m.get("engine"), str) else None)
        with self._uploads(files) as paths:
            media = [{"path": str(p), "name": name} for name, p in paths]
            try:
                job = self.wb.grid.submit(media=media, prompts=spec.prompts, models=spec.models,
                                          judge=spec.judge, pairs=spec.pairs, mode=spec.mode,
                                          **spec.settings)
            except InvalidInput as e:
                raise refused(e, "grid") from None
            except (TypeError, ValueError) as e:
                raise APIError(400, f"grid: {e}", param="spec", code="invalid_value") from None
            except QueueFull as e:
                raise APIError(429, str(e), code=e.limit) from e
        self.keys.own(who, job.id)
        return self.get(job.id, who)

    def _check_engine(self, field: str, engine: str | None) -> None:
        if engine and ":" in engine and not self.allow_imports:
            raise APIError(400, f"{field} {engine[:100]!r} is an import path: code named over "
                           "HTTP is not run unless the server allows it (allow_engine_imports, "
                           "WORKBENCH_ALLOW_ENGINE_IMPORTS=1)", param=field, code="invalid_value")

    @staticmethod
    def _named(paths: list[tuple[str, Path]], item_ids: list[str] | None) -> dict[str, Path]:
        """{item_id: path}: the given ids, else each file's name without its extension."""
        if item_ids is not None and len(item_ids) != len(paths):
            raise APIError(400, f"{len(item_ids)} item_ids for {len(paths)} files: give one id"
                           " per file, in the same order", param="item_ids", code="invalid_value")
        ids = item_ids or [Path(name).stem or f"item{i + 1}" for i, (name, _) in enumerate(paths)]
        if len(set(ids)) != len(ids):
            raise APIError(400, "item ids must be unique within one upload", param="item_ids",
                           code="invalid_value")
        return {i: p for i, (_, p) in zip(ids, paths, strict=True)}

    @contextmanager
    def _uploads(self, files: list[UploadFile]) -> Iterator[list[tuple[str, Path]]]:
        """The uploads as files in a private folder (size-capped), removed afterwards."""
        if not files:
            raise APIError(400, "no files uploaded (multipart field `files`)", param="files",
                           code="invalid_value")
        # named by this server's pid: a folder left by a crash is removed at the next start
        folder = self.wb.root / "uploads" / f"{os.getpid()}-{uuid.uuid4().hex}"
        folder.mkdir(parents=True)
        try:
            out, total = [], 0
            for i, f in enumerate(files):
                name = Path(f.filename or f"upload{i}").name[:200] or f"upload{i}"
                dest = folder / f"{i:03d}" / (SAFE_NAME.sub("_", name) or "upload")
                dest.parent.mkdir()
                with open(dest, "wb") as fh:
                    total = copy_capped(f.file, fh, self.max_upload, total, param="files")
                out.append((name, dest))
            yield out
        finally:
            shutil.rmtree(folder, ignore_errors=True)
