"""The FastAPI app (`create_app`) and the process entry point (`serve`, `workbench serve`).

A front door only: requests become store rows and job files; the worker (a thread
started by `serve`, or any `workbench worker` on the same root) runs them. Every `/v1`
route gets its caller from the auth middleware (`server.auth`): the admin, or a minted
key that sees only what it made (`server.keys`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, File, Form, Path, Query, Security, UploadFile
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import Request

from workbench.api import Workbench
from workbench.server import errors
from workbench.server.auth import FailureLimiter, KeyAuth, current_caller
from workbench.server.batches import BatchService
from workbench.server.errors import APIError
from workbench.server.files import (
    FileStore,
    complete_lines_length,
    iter_bytes,
    remove_leftovers,
)
from workbench.server.jobs import JobsService
from workbench.server.keys import Caller, KeyStore
from workbench.server.routes_jobs import jobs_router
from workbench.server.routes_keys import keys_router
from workbench.server.schemas import (
    MAX_EXPIRY_S,
    BatchCreate,
    BatchList,
    BatchObject,
    ErrorResponse,
    FileDeleted,
    FileList,
    FileObject,
    Health,
    Limits,
    ModelList,
    ModelObject,
)
from workbench.server.security import BodyLimit, api_key_from_env, check_bind, max_upload_from_env
from workbench.server.served import Served
from workbench.server.student_page import student_router
from workbench.store.status import Status

log = logging.getLogger("workbench.server")

_ERR = {"model": ErrorResponse}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _ERR, 401: _ERR, 403: _ERR, 404: _ERR, 409: _ERR, 410: _ERR, 413: _ERR, 429: _ERR}

FileId = Annotated[str, Path(min_length=1, max_length=200)]
BatchId = Annotated[str, Path(min_length=1, max_length=200)]
BEARER = HTTPBearer(auto_error=False, description="WORKBENCH_API_KEY (the admin) or a key "
                    "minted with `workbench keys create`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
#: the key calling: a minted key sees only what it made, the admin everything
Who = Annotated[Caller, Depends(current_caller)]
Models = Mapping[str, str | dict[str, Any]] | Sequence[str] | None


def create_app(wb: Workbench, *, model: str | None = None, models: Models = None,
               engine: dict[str, Any] | None = None, window: int = 5000,
               api_key: str | None = None, max_upload_bytes: int | None = None,
               worker: bool = False, completion_window_s: float | None = None,
               allow_engine_imports: bool | None = None,
               auth_limiter: FailureLimiter | None = None,
               media_dirs: list[str] | None = None) -> FastAPI:
    """The OpenAI-compatible batch API (+ the jobs API) over `wb`'s store.

    `models` are the served models by name ({name: folder_or_id} or ["NAME=PATH", ...];
    the first is the default); `model` is one bare model (named after its folder);
    neither: $WORKBENCH_MODEL, else the embedded one. `engine`/`window` are what every
    batch runs with. `api_key` defaults to $WORKBENCH_API_KEY (none: no auth, loopback
    only); `completion_window_s` is how long a "24h" batch may run here
    ($WORKBENCH_COMPLETION_WINDOW, default 24h); `worker` only tells /health whether
    `serve` started one. `auth_limiter`: how many failed authentications an address may
    make (default a burst of 30, one more per second). `media_dirs`: folders whose files
    `/v1/audio/...` batch lines may name by path (`serve --media-dir`).
    """
    api_key = api_key if api_key is not None else api_key_from_env()
    max_upload = max_upload_bytes if max_upload_bytes is not None else max_upload_from_env()
    if allow_engine_imports is None:
        allow_engine_imports = os.environ.get("WORKBENCH_ALLOW_ENGINE_IMPORTS") == "1"
    served = Served(models, model)
    remove_leftovers(wb.root)
    keys = KeyStore(wb.store)
    files = FileStore(wb, max_upload, keys)
    batches = BatchService(wb, files, served, engine=engine, window=window,
                           completion_window_s=completion_window_s, media_dirs=media_dirs)
    jobs = JobsService(wb, max_upload, allow_engine_imports, keys)
    started = int(time.time())

    def authorized(request: Request, cred: Credentials) -> None:
        """Declares the bearer scheme; the middleware (which refuses before the body is
        read) identified the caller, `current_caller` is the second line."""
        current_caller(request)

    app = FastAPI(title="workbench batch API",
                  description="OpenAI Batch API (files + batches) and the jobs of every kind "
                              "over the workbench store.", version="2")
    errors.install(app, wb.root)
    app.add_middleware(BodyLimit, max_upload_bytes=max_upload)
    app.add_middleware(KeyAuth, api_key=api_key, keys=keys,  # outermost: runs first
                       limiter=auth_limiter or FailureLimiter())
    app.state.wb, app.state.worker, app.state.served = wb, worker, served
    # the bearer scheme is declared (and checked a second time) only when there is a key
    deps = [Depends(authorized)] if api_key else []
    v1 = APIRouter(prefix="/v1", dependencies=deps, responses=ERROR_RESPONSES)

    # -- models ----------------------------------------------------------------------------
    @v1.get("/models", response_model=ModelList, tags=["models"])
    def list_models() -> ModelList:
        """The served model names (what `body.model` may say); the first is the default."""
        return ModelList(data=[ModelObject(id=n, created=started) for n in served.names])

    # -- files -----------------------------------------------------------------------------
    @v1.post("/files", response_model=FileObject, tags=["files"])
    def upload_file(
        file: Annotated[UploadFile, File()], purpose: Annotated[Literal["batch"], Form()],
        who: Who,
        validate: Annotated[bool, Query(description="check every line now and refuse a bad "
                                                    "file (400) instead of failing its batch")
                            ] = False,
        anchor: Annotated[Literal["created_at"], Form(alias="expires_after[anchor]")] = None,  # type: ignore[assignment]
        seconds: Annotated[int, Form(alias="expires_after[seconds]", ge=1,
                                     le=MAX_EXPIRY_S)] = None,  # type: ignore[assignment]
    ) -> FileObject:
        """Upload a JSONL batch input (purpose `batch`). As at OpenAI its lines are checked
        when a batch is created from it (broken lines: a `failed` batch with OpenAI's error
        codes and line numbers); `?validate=true` checks them now instead and refuses a bad
        file (400, every problem by line, nothing kept). A binary file is always refused.
        `expires_after` (seconds after creation) deletes it then; default 30 days."""
        if (anchor is None) != (seconds is None):
            raise APIError(400, "expires_after needs both anchor ('created_at') and seconds",
                           param="expires_after", code="invalid_value")
        return files.save(file.file, file.filename or "upload.jsonl", purpose, seconds,
                          who=who, validate=validate)

    @v1.get("/files", response_model=FileList, tags=["files"])
    def list_files(after: Annotated[str | None, Query(max_length=200)] = None,
                   limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
                   order: Literal["asc", "desc"] = "desc",
                   purpose: Annotated[str | None, Query(max_length=64)] = None, *,
                   who: Who) -> FileList:
        """Uploads (`batch`) and the output/error files of settled batches (`batch_output`)."""
        return files.list(after=after, limit=limit, order=order, purpose=purpose, who=who)

    @v1.get("/files/{file_id}", response_model=FileObject, tags=["files"])
    def retrieve_file(file_id: FileId, who: Who) -> FileObject:
        return files.locate(file_id, who)[0]

    @v1.get("/files/{file_id}/content", tags=["files"], response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
    def file_content(file_id: FileId, who: Who) -> StreamingResponse:
        """The file's bytes, streamed from disk (output files are OpenAI output lines)."""
        obj, path = files.locate(file_id, who)
        return _stream(path, obj.bytes, obj.filename)

    @v1.delete("/files/{file_id}", response_model=FileDeleted, tags=["files"])
    def delete_file(file_id: FileId, who: Who) -> FileDeleted:
        """Delete an upload or a batch's output/error file."""
        return files.delete(file_id, who)

    # -- batches ---------------------------------------------------------------------------
    @v1.post("/batches", response_model=BatchObject, tags=["batches"])
    def create_batch(req: BatchCreate, who: Who) -> BatchObject:
        """Validate the upload's lines and queue them; broken lines or lines that do not fit
        the batch give a `failed` batch (OpenAI's codes, line numbers), nothing queued."""
        return batches.create(req, who)

    @v1.get("/batches", response_model=BatchList, tags=["batches"])
    def list_batches(after: Annotated[str | None, Query(max_length=200)] = None,
                     limit: Annotated[int, Query(ge=1, le=100)] = 20, *,
                     who: Who) -> BatchList:
        return batches.list(after=after, limit=limit, who=who)

    @v1.get("/batches/{batch_id}", response_model=BatchObject, tags=["batches"])
    def retrieve_batch(batch_id: BatchId, who: Who) -> BatchObject:
        return batches.get(batch_id, who)

    @v1.post("/batches/{batch_id}/cancel", response_model=BatchObject, tags=["batches"])
    def cancel_batch(batch_id: BatchId, who: Who) -> BatchObject:
        return batches.cancel(batch_id, who)

    def partial(batch_id: str, which: str, who: Caller) -> StreamingResponse:
        obj = batches.get(batch_id, who)
        if obj.workbench is None or obj.workbench.job_id is None:
            raise APIError(404, f"batch {batch_id} never ran (its input was refused)",
                           param="batch_id", code="batch_not_found")
        if obj.workbench.purged_at is not None:
            raise APIError(410, f"batch {batch_id}'s files were purged by retention",
                           code="files_purged")
        path = wb.store.job_dir(obj.id) / f"{which}.jsonl"
        length = complete_lines_length(path) if path.exists() else 0
        return _stream(path, length, f"{obj.id}_{which}.jsonl")

    octet = {200: {"content": {"application/octet-stream": {}}}}

    @v1.get("/batches/{batch_id}/output", tags=["batches"], response_class=StreamingResponse,
            responses=octet)
    def partial_output(batch_id: BatchId, who: Who) -> StreamingResponse:
        """Extension: the complete output lines written so far, in any status (while
        in_progress too); the final file is `output_file_id`."""
        return partial(batch_id, "output", who)

    @v1.get("/batches/{batch_id}/errors", tags=["batches"], response_class=StreamingResponse,
            responses=octet)
    def partial_errors(batch_id: BatchId, who: Who) -> StreamingResponse:
        """Extension: the complete error lines written so far, in any status."""
        return partial(batch_id, "errors", who)

    app.include_router(v1)
    app.include_router(jobs_router(jobs, deps, ERROR_RESPONSES))
    app.include_router(keys_router(keys, deps, ERROR_RESPONSES))
    app.include_router(student_router(wb))  # /s/<token>: a student's page, no key (the token is)

    # -- health ----------------------------------------------------------------------------
    @app.get("/health", response_model=Health, tags=["health"])
    def health() -> Health:
        """Queue depth and room left: apps check `queue_available` before submitting.
        Open without a key, so it says nothing about models, files or jobs."""
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
                      worker=bool(app.state.worker))

    return app


def _stream(path: Any, length: int, filename: str) -> StreamingResponse:
    """Exactly `length` bytes of `path` (complete lines only while a worker appends)."""
    if length == 0:
        return StreamingResponse(iter(()), media_type="application/octet-stream",
                                 headers={"Content-Length": "0"})
    return StreamingResponse(iter_bytes(path, length), media_type="application/octet-stream",
                             headers={"Content-Length": str(length),
                                      "Content-Disposition": "attachment; filename*=utf-8''"
                                      + quote(filename, safe="")})


def serve(wb: Workbench, host: str = "127.0.0.1", port: int = 4080, worker: bool = True, *,
          model: str | None = None, models: Models = None, engine: dict[str, Any] | None = None,
          window: int = 5000, api_key: str | None = None,
          webhooks: Sequence[str] = (), media_dirs: list[str] | None = None) -> None:
    """Run the API until interrupted, with a worker thread on the same store by default.

    Refuses a non-loopback `host` unless an API key is set ($WORKBENCH_API_KEY).
    `webhooks`: URLs that get every batch/job event, signed with
    $WORKBENCH_WEBHOOK_SECRET (`server.webhook_sender`).
    """
    import uvicorn

    from workbench.server.webhook_sender import Settings, WebhookSender

    api_key = api_key if api_key is not None else api_key_from_env()
    check_bind(host, api_key)
    hooks = Settings.from_env(list(webhooks)) if webhooks else None  # bad URL/secret: refused now
    app = create_app(wb, model=model, models=models, engine=engine, window=window,
                     api_key=api_key, worker=worker, media_dirs=media_dirs)
    if worker:
        wb.start_worker()
    sender = WebhookSender(wb, hooks).start() if hooks else None
    log.info("workbench batch API on http://%s:%d/v1 (root %s, models %s, auth %s)", host,
             port, wb.root, ", ".join(app.state.served.names), "on" if api_key else "off")
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        if sender is not None:
            sender.stop()
        wb.stop_workers()
