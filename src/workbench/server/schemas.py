"""Wire shapes of the HTTP API: OpenAI's File, Batch, list and error objects (+ /health).

Declared as pydantic models so FastAPI publishes them in /openapi.json, which is what
schemathesis (and any generated client) works from.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Endpoint = Literal["/v1/chat/completions", "/v1/completions"]
CompletionWindow = Literal["24h"]
SUPPORTED_ENDPOINTS: tuple[str, ...] = get_args(Endpoint)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["batch", "batch_output"]
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


MetadataKey = Annotated[str, Field(max_length=64)]
MetadataValue = Annotated[str, Field(max_length=512)]


class BatchCreate(BaseModel):
    """`POST /v1/batches` body. Unknown fields are refused rather than ignored.

    Metadata follows OpenAI's limits: at most 16 pairs, keys up to 64 and values up to
    512 characters. The enums list what this server runs (chat and text completions).
    """

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=200)
    endpoint: Endpoint
    completion_window: CompletionWindow
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)] | None = None
    output_expires_after: dict[str, Any] | None = None


class BatchError(BaseModel):
    code: str | None = None
    message: str | None = None
    line: int | None = None
    param: str | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class WorkbenchInfo(BaseModel):
    """Extension: the precise workbench view of the batch (OpenAI clients ignore it)."""

    job_id: str | None
    status: str
    progress: float
    message: str
    requested_models: list[str] = Field(default_factory=list)


BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed",
                      "expired", "cancelling", "cancelled"]


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None
    model: str | None = None
    workbench: WorkbenchInfo | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class Limits(BaseModel):
    max_requests_per_job: int
    max_queued_jobs: int
    max_queued_requests: int
    max_upload_bytes: int


class Health(BaseModel):
    """What an app checks before submitting more: is there room in the queue?"""

    status: Literal["ok"] = "ok"
    queued_jobs: int = Field(description="batches waiting for a worker (queue depth)")
    queued_requests: int = Field(description="requests not yet done in waiting and running batches")
    running_jobs: int
    jobs_available: int
    requests_available: int
    queue_available: bool = Field(description="true when one more batch can be queued")
    limits: Limits
    worker: bool = Field(description="this server runs a worker thread")
    model: str
