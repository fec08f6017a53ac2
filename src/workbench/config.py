"""Settings: queue limits, retention, worker timing, where the store and the models live.

Defaults from DESIGN.md, env overrides. Which model a job uses by default is a setting
too (`$WORKBENCH_MODEL`, else the embedded demo model), so the front doors can name it
without reaching the engine layer that prepares it (`workbench.models`).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class Limits(BaseModel):
    """Queue limits checked in one transaction at submission, and file retention."""

    max_requests_per_job: int = Field(default_factory=lambda: _env_int("WORKBENCH_MAX_REQUESTS_PER_JOB", 50_000))
    max_queued_jobs: int = Field(default_factory=lambda: _env_int("WORKBENCH_MAX_QUEUED_JOBS", 10))
    max_queued_requests: int = Field(default_factory=lambda: _env_int("WORKBENCH_MAX_QUEUED_REQUESTS", 500_000))
    retention_days: float = Field(default_factory=lambda: _env_float("WORKBENCH_RETENTION_DAYS", 30.0))


class WorkerTiming(BaseModel):
    """How often a worker proves it is alive, and when silence means it died."""

    heartbeat_s: float = Field(default_factory=lambda: _env_float("WORKBENCH_HEARTBEAT_S", 1.0))
    stale_after_s: float = Field(default_factory=lambda: _env_float("WORKBENCH_STALE_AFTER_S", 30.0))
    poll_s: float = Field(default_factory=lambda: _env_float("WORKBENCH_POLL_S", 0.5))


#: The embedded demo model's name (Gemma 3 270M, prepared by `workbench.demo_model`).
EMBEDDED_LLM = "embedded:gemma-3-270m"
#: The embedded embedding model's name (all-MiniLM-L6-v2, `workbench.engines.embed_model`):
#: the default for `/v1/embeddings` lines when no model is named.
EMBEDDED_EMBEDDER = "embedded:all-minilm-l6-v2"


def default_root() -> Path:
    return Path(os.environ.get("WORKBENCH_ROOT", "data/wb"))


def default_model() -> str:
    """The model a job uses when none is named: $WORKBENCH_MODEL, else the embedded one."""
    return os.environ.get("WORKBENCH_MODEL") or EMBEDDED_LLM


def models_dir() -> Path:
    """Where prepared models are cached ($WORKBENCH_MODELS, default data/models)."""
    return Path(os.environ.get("WORKBENCH_MODELS", "data/models")).resolve()


def is_base_model(name: str) -> bool:
    """A model known to be a *base* model (not instruction-tuned): the embedded Gemma 3 270M,
    by name or as its prepared folder. Rubric scoring reads such a model's token
    probabilities instead of asking it for JSON (which it cannot follow)."""
    if name == EMBEDDED_LLM:
        return True
    try:
        return Path(name).expanduser().resolve() == models_dir() / "gemma-3-270m"
    except OSError:
        return False
