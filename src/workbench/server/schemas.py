"""Wire shapes of the HTTP API: OpenAI's File, Batch, list and error objects (+ /health).

Declared as pydantic models so FastAPI publishes them in /openapi.json, which is what
schemathesis (and any generated client) works from.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Endpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                   "/v1/audio/transcriptions", "/v1/audio/translations"]
#: what OpenAI accepts ("Currently only 24h is supported"); shorter windows are the
#: workbench extension `completion_window_seconds`
CompletionWindow = Literal["24h"]
#: OpenAI allows 3,600 s to 30 days for `expires_after`; a shorter expiry is accepted here
MAX_EXPIRY_S = 30 * 86400
SUPPORTED_ENDPOINTS: tuple[str, ...] = get_args(Endpoint)


class Problem(BaseModel):
    """Extension: one problem of an input refused whole: its line (of a JSONL file) or
    entry (in words: "file 2 (notes.wav)", "settings"); neither: the whole input."""

    line: int | None = None
    entry: str | None = None
    param: str | None = None
    message: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    problems: list[Problem] | None = None
    total_problems: int | None = None


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


class ExpiresAfter(BaseModel):
    """OpenAI's expiration policy: `seconds` after the file's creation."""

    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: Annotated[int, Field(ge=1, le=MAX_EXPIRY_S)]


class BatchCreate(BaseModel):
    """`POST /v1/batches` body. Unknown fields are refused rather than ignored.

    Metadata follows OpenAI's limits: at most 16 pairs, keys up to 64 and values up to
    512 characters. The enums list what this server runs (chat, text completions, embeddings, audio).
    `completion_window_seconds` is a workbench extension: a deadline shorter than the
    server's window for "24h" (tests, short interactive batches).
    """

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=200)
    endpoint: Endpoint
    completion_window: CompletionWindow
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)] | None = None
    output_expires_after: ExpiresAfter | None = None
    completion_window_seconds: Annotated[float, Field(gt=0, le=86400)] | None = Field(
        default=None, description="workbench extension: a shorter completion window, seconds")


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


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class BatchUsage(BaseModel):
    """OpenAI's `usage` on a batch: the sums over its output lines."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class WorkbenchInfo(BaseModel):
    """Extension: the precise workbench view of the batch (OpenAI clients ignore it)."""

    job_id: str | None
    status: str
    progress: float
    message: str
    requested_models: list[str] = Field(default_factory=list)
    #: accepted body fields without effect on a local engine → how many lines used them
    notes: dict[str, str] = Field(default_factory=dict)
    #: when retention removed the batch's files (its status is unchanged)
    purged_at: int | None = None
    #: complete output/error lines so far, also while it runs (GET .../output, .../errors)
    partial_output: str | None = None
    partial_errors: str | None = None


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
    usage: BatchUsage | None = None
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


class ModelObject(BaseModel):
    """A served model, by the name batch lines use in `body.model` (never a path)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "workbench"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class Health(BaseModel):
    """What an app checks before submitting more: is there room in the queue? (No auth,
    so it says nothing about models or files.)"""

    status: Literal["ok"] = "ok"
    queued_jobs: int = Field(description="batches waiting for a worker (queue depth)")
    queued_requests: int = Field(description="requests not yet done in waiting and running batches")
    running_jobs: int
    jobs_available: int
    requests_available: int
    queue_available: bool = Field(description="true when one more batch can be queued")
    limits: Limits
    worker: bool = Field(description="this server runs a worker thread")
