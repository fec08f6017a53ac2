"""Routes of the jobs API: `/v1/jobs[...]`, `/v1/grids`, `/v1/phased` (see `server.jobs`).

    GET  /v1/jobs?kind=&status=          every job, newest first
    GET  /v1/jobs/{id}                   status, progress 0-100, progress_message, counts, ETA
    POST /v1/jobs/{id}/cancel | /resume
    GET  /v1/jobs/{id}/result            the kind's results DataFrame as JSON rows
    POST /v1/grids                       multipart: media `files` + `spec` (JSON)
    POST /v1/phased                      multipart: recordings `files` (+ `item_ids`) + `spec`
    POST /v1/jobs/{id}/items             multipart: more recordings for a phased job
    GET  /v1/jobs/{id}/items[/{item_id}] a student's state, batch, position, queue place, ETA
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, UploadFile

from workbench.server.auth import current_caller
from workbench.server.job_schemas import ItemList, ItemObject, JobList, JobObject, ResultRows
from workbench.server.jobs import JobsService
from workbench.server.keys import Caller

JobId = Annotated[str, Path(min_length=1, max_length=200)]
ItemId = Annotated[str, Path(min_length=1, max_length=200)]
Uploads = Annotated[list[UploadFile], File(description="the media or recordings")]
SpecField = Annotated[str, Form(max_length=1 << 20, description="the options, as JSON")]
ItemIds = Annotated[list[str], Form(description="one id per file (default: file names)")]
#: the key calling (a minted key sees only the jobs it made; the admin all)
Who = Annotated[Caller, Depends(current_caller)]


def jobs_router(jobs: JobsService, deps: list[Any],
                responses: dict[int | str, dict[str, Any]]) -> APIRouter:
    r = APIRouter(prefix="/v1", dependencies=deps, responses=responses, tags=["jobs"])

    @r.get("/jobs", response_model=JobList)
    def list_jobs(kind: Annotated[str | None, Query(max_length=64)] = None,
                  status: Annotated[str | None, Query(max_length=64)] = None,
                  after: Annotated[str | None, Query(max_length=200)] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100, *, who: Who) -> JobList:
        return jobs.list(kind=kind, status=status, after=after, limit=limit, who=who)

    @r.get("/jobs/{job_id}", response_model=JobObject)
    def get_job(job_id: JobId, who: Who) -> JobObject:
        """What a page polls: status, progress (0-100), progress_message, counts, eta_s."""
        return jobs.get(job_id, who)

    @r.post("/jobs/{job_id}/cancel", response_model=JobObject)
    def cancel_job(job_id: JobId, who: Who) -> JobObject:
        """Queued: cancelled at once; running: cancelling, finished work is kept."""
        return jobs.cancel(job_id, who)

    @r.post("/jobs/{job_id}/resume", response_model=JobObject)
    def resume_job(job_id: JobId, who: Who) -> JobObject:
        """Back in the queue (interrupted, failed, cancelled); finished work is not redone."""
        return jobs.resume(job_id, who)

    @r.get("/jobs/{job_id}/result", response_model=ResultRows)
    def job_result(job_id: JobId, offset: Annotated[int, Query(ge=0)] = 0,
                   limit: Annotated[int, Query(ge=1, le=10_000)] = 1000, *,
                   who: Who) -> ResultRows:
        """The results so far (a running job too), as the kind's DataFrame rows."""
        return jobs.results(job_id, who, offset=offset, limit=limit)

    @r.post("/grids", response_model=JobObject)
    def submit_grid(files: Uploads, spec: SpecField, who: Who) -> JobObject:
        """A comparison grid over the uploaded media; `spec`: {prompts, models, judge,
        pairs, mode, settings} as for `wb.grid.submit` (media named by file name)."""
        return jobs.submit_grid(spec, files, who)

    @r.post("/phased", response_model=JobObject)
    def submit_phased(files: Uploads, spec: SpecField, who: Who,
                      item_ids: ItemIds = None) -> JobObject:  # type: ignore[assignment]
        """A phased STT → evaluation job over the uploaded recordings; `spec`: {rubric,
        batch_size, stt, llm, device} as for `wb.phased.submit`."""
        return jobs.submit_phased(spec, files, item_ids, who)

    @r.post("/jobs/{job_id}/items", response_model=ItemList)
    def add_items(job_id: JobId, files: Uploads, who: Who,
                  item_ids: ItemIds = None) -> ItemList:  # type: ignore[assignment]
        """More recordings for a running phased job: they join the next batch."""
        return jobs.add_items(job_id, files, item_ids, who)

    @r.get("/jobs/{job_id}/items", response_model=ItemList)
    def list_items(job_id: JobId, who: Who) -> ItemList:
        return jobs.items(job_id, who)

    @r.get("/jobs/{job_id}/items/{item_id}", response_model=ItemObject)
    def get_item(job_id: JobId, item_id: ItemId, who: Who) -> ItemObject:
        """One student's recording: state, batch, position, queue position, ETA, message."""
        return jobs.item(job_id, item_id, who)

    return r
