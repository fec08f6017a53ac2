"""Wire shapes of the jobs API (`/v1/jobs`, `/v1/grids`, `/v1/phased`): every kind of job.

`JobObject` is what a web page polls (every 2 s for the grid seed's frontend): status,
progress 0–100, progress message, counts and an ETA. `ItemObject` is one recording of a
phased job as its student sees it: state, batch, position, queue position, ETA, message.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class JobCounts(BaseModel):
    total: int
    completed: int
    failed: int


class JobObject(BaseModel):
    id: str
    object: Literal["job"] = "job"
    kind: str
    status: str = Field(description="workbench status (validating, queued, in_progress, ...,"
                        " completed, failed, cancelled, expired, interrupted)")
    progress: float = Field(ge=0, le=100, description="percent done, 0-100")
    progress_message: str
    counts: JobCounts
    eta_s: float | None = Field(None, description="seconds until done, from the measured rate")
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    deadline_at: int | None = None
    purged_at: int | None = None
    error: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class ResultRows(BaseModel):
    """The rows of the kind's results DataFrame (`job.results()`), as JSON records."""

    object: Literal["list"] = "list"
    job_id: str
    kind: str
    columns: list[str]
    data: list[dict[str, Any]]
    total: int
    has_more: bool


class ItemObject(BaseModel):
    """One recording of a phased job (`job.item(item_id)`), in a student's words."""

    model_config = ConfigDict(extra="allow")

    object: Literal["job.item"] = "job.item"
    item_id: str
    state: str
    batch: int | None = None
    position_in_batch: int | None = None
    queue_position: int | None = None
    eta_s: float | None = None
    message: str


class ItemList(BaseModel):
    object: Literal["list"] = "list"
    job_id: str
    data: list[ItemObject]


#: what POST /v1/phased takes in its `spec` form field (wb.phased.submit's options)
class PhasedCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rubric: Any
    batch_size: int = 10
    stt: dict[str, Any] | None = None
    llm: dict[str, Any] | str | None = None
    device: str = "auto"
    residue_bound_mib: int = 128


#: what POST /v1/grids takes in its `spec` form field (wb.grid.submit's options); media
#: are the uploaded files, named by their file names in `pairs`
class GridCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: list[str] | dict[str, str]
    models: list[str | dict[str, Any]]
    judge: str | dict[str, Any] | None = None
    pairs: list[tuple[int | str, int | str]] | None = None
    mode: str = "realtime"
    settings: dict[str, Any] = Field(default_factory=dict)
