"""The FastAPI app (`create_app`) and the process entry point (`serve`, `workbench serve`).

A front door only: requests become store rows and job files; the worker (a thread
started by `serve`, or any `workbench worker` on the same root) runs them.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, File, Form, Path, Query, Security, UploadFile
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from workbench.api import Workbench
from workbench.server import errors
from workbench.server.batches import BatchService
from workbench.server.errors import APIError
from workbench.server.files import FileStore, iter_bytes
from workbench.server.schemas import (
    BatchCreate,
    BatchList,
    BatchObject,
    ErrorResponse,
    FileDeleted,
    FileList,
    FileObject,
    Health,
    Limits,
)
from workbench.server.security import (
    BearerAuth,
    BodyLimit,
    api_key_from_env,
    check_bind,
    max_upload_from_env,
    token_ok,
)
from workbench.store.status import Status

log = logging.getLogger("workbench.server")

_ERR = {"model": ErrorResponse}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _ERR, 401: _ERR, 404: _ERR, 409: _ERR, 413: _ERR, 429: _ERR}

FileId = Annotated[str, Path(min_length=1, max_length=200)]
BatchId = Annotated[str, Path(min_length=1, max_length=200)]
BEARER = HTTPBearer(auto_error=False, description="WORKBENCH_API_KEY, when the server has one")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def create_app(wb: Workbench, *, model: str | None = None, engine: dict[str, Any] | None = None,
               window: int = 5000, api_key: str | None = None,
               max_upload_bytes: int | None = None, worker: bool = False) -> FastAPI:
    """The OpenAI-compatible batch API over `wb`'s store.

    `model`/`engine`/`window` are what every batch created here runs with (default model:
    $WORKBENCH_MODEL, else the embedded one); `api_key` defaults to $WORKBENCH_API_KEY
    (none: no auth, loopback only); `worker` only tells /health whether `serve` started one.
    """
    api_key = api_key if api_key is not None else api_key_from_env()
    max_upload = max_upload_bytes if max_upload_bytes is not None else max_upload_from_env()
    files = FileStore(wb, max_upload)
    batches = BatchService(wb, files, model=model, engine=engine, window=window)

    def authorized(cred: Credentials) -> None:
        """Second line behind the middleware (which refuses before the body is read)."""
        header = f"{cred.scheme} {cred.credentials}" if cred else None
        if not token_ok(header, api_key):
            raise APIError(401, "incorrect API key provided", code="invalid_api_key")

    app = FastAPI(title="workbench batch API",
                  description="OpenAI Batch API (files + batches) over the workbench store.",
                  version="1")
    errors.install(app)
    app.add_middleware(BodyLimit, max_upload_bytes=max_upload)
    app.add_middleware(BearerAuth, api_key=api_key)  # outermost: runs first
    app.state.wb, app.state.worker = wb, worker
    # the bearer scheme is declared (and checked a second time) only when there is a key
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorized)] if api_key else [],
                   responses=ERROR_RESPONSES)

    # -- files ---------------------------------------------------------------------------
    @v1.post("/files", response_model=FileObject, tags=["files"])
    def upload_file(file: Annotated[UploadFile, File()],
                    purpose: Annotated[Literal["batch"], Form()]) -> FileObject:
        """Upload a JSONL batch input (purpose `batch`); size-capped, stored under the root."""
        return files.save(file.file, file.filename or "upload.jsonl", purpose)

    @v1.get("/files", response_model=FileList, tags=["files"])
    def list_files(after: Annotated[str | None, Query(max_length=200)] = None,
                   limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
                   order: Literal["asc", "desc"] = "desc",
                   purpose: Annotated[str | None, Query(max_length=64)] = None) -> FileList:
        return files.list(after=after, limit=limit, order=order, purpose=purpose)

    @v1.get("/files/{file_id}", response_model=FileObject, tags=["files"])
    def retrieve_file(file_id: FileId) -> FileObject:
        return files.locate(file_id)[0]

    @v1.get("/files/{file_id}/content", tags=["files"], response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
    def file_content(file_id: FileId) -> StreamingResponse:
        """The file's bytes, streamed from disk (output files are OpenAI output lines).

        Exactly `bytes` of the file object are sent: for a batch's output that is every
        complete line at the time of the request, even while the worker appends more.
        """
        obj, path = files.locate(file_id)
        return StreamingResponse(iter_bytes(path, obj.bytes), media_type="application/octet-stream",
                                 headers={"Content-Length": str(obj.bytes),
                                          "Content-Disposition": "attachment; filename*=utf-8''"
                                          + quote(obj.filename, safe="")})

    @v1.delete("/files/{file_id}", response_model=FileDeleted, tags=["files"])
    def delete_file(file_id: FileId) -> FileDeleted:
        return files.delete(file_id)

    # -- batches -------------------------------------------------------------------------
    @v1.post("/batches", response_model=BatchObject, tags=["batches"])
    def create_batch(req: BatchCreate) -> BatchObject:
        """Validate the input file whole, then queue it; bad lines give a `failed` batch."""
        return batches.create(req)

    @v1.get("/batches", response_model=BatchList, tags=["batches"])
    def list_batches(after: Annotated[str | None, Query(max_length=200)] = None,
                     limit: Annotated[int, Query(ge=1, le=100)] = 20) -> BatchList:
        return batches.list(after=after, limit=limit)

    @v1.get("/batches/{batch_id}", response_model=BatchObject, tags=["batches"])
    def retrieve_batch(batch_id: BatchId) -> BatchObject:
        return batches.get(batch_id)

    @v1.post("/batches/{batch_id}/cancel", response_model=BatchObject, tags=["batches"])
    def cancel_batch(batch_id: BatchId) -> BatchObject:
        return batches.cancel(batch_id)

    app.include_router(v1)

    # -- health --------------------------------------------------------------------------
    @app.get("/health", response_model=Health, tags=["health"])
    def health() -> Health:
        """Queue depth and room left: apps check `queue_available` before submitting."""
        lim = wb.store.limits
        use = wb.store.queue_usage()
        running = len(wb.store.list_jobs(status=Status.IN_PROGRESS.value))
        jobs_free = max(0, lim.max_queued_jobs - use["queued_jobs"])
        requests_free = max(0, lim.max_queued_requests - use["queued_requests"])
        return Health(queued_jobs=use["queued_jobs"], queued_requests=use["queued_requests"],
                      running_jobs=running, jobs_available=jobs_free,
                      requests_available=requests_free,
                      queue_available=jobs_free > 0 and requests_free > 0,
                      limits=Limits(max_requests_per_job=lim.max_requests_per_job,
                                    max_queued_jobs=lim.max_queued_jobs,
                                    max_queued_requests=lim.max_queued_requests,
                                    max_upload_bytes=max_upload),
                      worker=bool(app.state.worker), model=batches.model_name)

    return app


def serve(wb: Workbench, host: str = "127.0.0.1", port: int = 4080, worker: bool = True, *,
          model: str | None = None, engine: dict[str, Any] | None = None, window: int = 5000,
          api_key: str | None = None) -> None:
    """Run the API until interrupted, with a worker thread on the same store by default.

    Refuses a non-loopback `host` unless an API key is set ($WORKBENCH_API_KEY).
    """
    import uvicorn

    api_key = api_key if api_key is not None else api_key_from_env()
    check_bind(host, api_key)
    app = create_app(wb, model=model, engine=engine, window=window, api_key=api_key,
                     worker=worker)
    if worker:
        wb.start_worker()
    log.info("workbench batch API on http://%s:%d/v1 (root %s, auth %s)", host, port, wb.root,
             "on" if api_key else "off")
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        wb.stop_workers()
