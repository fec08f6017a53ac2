"""What a grid job is: media × prompts = cells, the models that answer, the judge, settings.

Everything here is validated at submission (bad input refused whole, naming the entry
and the reason) and stored as the job spec: names and numbers only, never a key.
Model specs accept shorthands so a notebook line stays short:

    "gemini-2.5-flash"                 → {"provider": "gemini", "name": "gemini-2.5-flash"}
    "vllm:/models/qwen"                → {"provider": "vllm", "name": "/models/qwen"}
    "openai:qwen@http://host:8000/v1"  → {"provider": "openai", "name": "qwen", "base_url": ...}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workbench.engines.gemini_client import GeminiSettings

Provider = Literal["gemini", "vllm", "openai"]


class ModelSpec(BaseModel):
    """One model of the grid (or the judge)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    provider: Provider
    #: Gemini model id, vLLM model folder/name, or the served name on an OpenAI server
    name: str = Field(min_length=1)
    #: unique name in results and reports (default: the name, or the folder's basename)
    label: str = ""
    #: sampling (OpenAI names work everywhere: max_tokens, temperature, top_p, seed, stop)
    params: dict[str, Any] = Field(default_factory=dict)
    #: requests per minute (Gemini, OpenAI server); None = the grid default
    rpm: float | None = Field(None, gt=0)
    #: OpenAI-compatible server URL, and the NAME of the env variable holding its key
    base_url: str | None = None
    api_key_env: str | None = None
    #: vLLM engine arguments (dtype, max_model_len, kv_cache_memory_bytes, ...)
    engine: dict[str, Any] = Field(default_factory=dict)
    #: text-only models get the media's transcript; default: True except for Gemini
    text_only: bool | None = None
    #: as the judge: "json" (structured output), "logprobs" (a base model's token
    #: probabilities, `grid.geval`), "auto" (logprobs for a local base model, e.g. the
    #: embedded Gemma; json otherwise)
    scoring: Literal["auto", "json", "logprobs"] = "auto"

    @model_validator(mode="after")
    def _defaults(self) -> ModelSpec:
        if not self.label:
            self.label = Path(self.name).name if self.provider == "vllm" else self.name
        if self.text_only is None:
            self.text_only = self.provider != "gemini"
        if self.provider == "openai" and not self.base_url:
            raise ValueError("an openai model needs base_url (e.g. 'openai:NAME@http://host:8000/v1')")
        if self.scoring == "logprobs" and self.provider == "gemini":
            raise ValueError("scoring='logprobs' needs a local or OpenAI-compatible judge")
        return self

    @property
    def judges_by_logprobs(self) -> bool:
        if self.scoring != "auto":
            return self.scoring == "logprobs"
        from workbench.config import is_base_model

        return self.provider == "vllm" and is_base_model(self.name)

    @property
    def sees_media(self) -> bool:
        return not self.text_only

    def engine_spec(self) -> dict[str, Any]:
        """The ChatEngine spec (workbench.engines.pool) for local/OpenAI models."""
        if self.provider == "vllm":
            from workbench.models import engine_spec

            spec = engine_spec(self.name, {"provider": "vllm", **self.engine})
            spec.pop("model_name", None)
            return spec
        if self.provider == "openai":
            spec = {"provider": "openai", "model": self.name, "base_url": self.base_url,
                    **self.engine}
            if self.api_key_env:
                spec["api_key_env"] = self.api_key_env
            return spec
        raise ValueError(f"{self.label}: Gemini models do not use a ChatEngine")


def parse_model(value: str | dict[str, Any] | ModelSpec) -> ModelSpec:
    """A ModelSpec from a shorthand string, a dict, or a ModelSpec."""
    if isinstance(value, ModelSpec):
        return value
    if isinstance(value, dict):
        return ModelSpec.model_validate(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"a model is a name string or a dict, not {value!r}")
    s = value.strip()
    prefix, sep, rest = s.partition(":")
    if sep and prefix in ("gemini", "vllm"):
        return ModelSpec(provider=prefix, name=rest)  # type: ignore[arg-type]
    if sep and prefix == "openai":
        name, at, url = rest.partition("@")
        if not at:
            raise ValueError(f"{s!r}: write 'openai:NAME@http://host:port/v1'")
        return ModelSpec(provider="openai", name=name, base_url=url)
    if s.startswith(("gemini-", "models/gemini", "gemma-")):
        return ModelSpec(provider="gemini", name=s.removeprefix("models/"))
    if Path(s).expanduser().is_dir():
        return ModelSpec(provider="vllm", name=str(Path(s).expanduser().resolve()))
    raise ValueError(f"unknown model {s!r}: use 'gemini-…', 'vllm:/path/to/model', "
                     f"'openai:NAME@URL', or a dict with provider and name")


class MediaRef(BaseModel):
    """One media file, stored content-addressed under ROOT/media/."""

    id: str
    name: str
    path: str
    sha256: str
    mime_type: str | None
    size_bytes: int


class PromptRef(BaseModel):
    id: str
    name: str
    text: str


class CellRef(BaseModel):
    id: str
    media: str
    prompt: str


class GridSettings(BaseModel):
    """How the grid runs. Defaults suit a paid Gemini tier; lower `rpm` on a free one."""

    model_config = ConfigDict(extra="forbid")

    #: model + judge calls in flight across all cells (on top of per-model rate limits)
    max_in_flight: int = Field(64, ge=1)
    #: cells started but not finished; 1 reproduces the seed's one-cell-at-a-time order
    max_cells_in_flight: int | None = Field(None, ge=1)
    #: requests per minute for models without their own `rpm`
    default_rpm: float = Field(60.0, gt=0)
    #: extra judge attempts when its output is not valid JSON for the schema
    judge_retries: int = Field(1, ge=0)
    #: local judges (guided decoding): longest reasoning in characters; bounds its output
    judge_text_chars: int = Field(300, ge=8, le=800)
    #: a multimodal judge also gets the media (it can check facts, not just style)
    judge_sees_media: bool = True
    #: system instruction for the answering models
    system: str | None = None
    #: Gemini adapter settings (base_url, api_version, retries, polling); no secrets
    gemini: dict[str, Any] = Field(default_factory=dict)
    #: Whisper model for transcripts of text-only models (None: the engine's default)
    stt_model: str | None = None
    #: batch mode: seconds between polls of a Gemini batch (grows to 10× this)
    batch_poll_s: float = Field(5.0, gt=0)
    #: window of in-flight requests per local engine
    local_window: int = Field(64, ge=1)
    #: models per cell (the judge not counted): each adds a call per cell, and local ones
    #: a phase on the device
    max_models: int = Field(4, ge=1)
    #: where local (vLLM) models run during their phase: a child process gives all memory
    #: back at its exit (measured for the phased job), "inline" is faster to start
    local_isolation: Literal["inline", "process", "auto"] = "process"
    #: the device local models take turns on: "auto" (cuda:0 with a GPU, else cpu)
    device: str = "auto"

    @model_validator(mode="after")
    def _check_gemini(self) -> GridSettings:
        GeminiSettings.model_validate({"default_rpm": self.default_rpm, **self.gemini})
        return self

    def gemini_settings(self, models: list[ModelSpec]) -> GeminiSettings:
        """Adapter settings; a model's own `rpm` beats `gemini.rpm`, which beats the default."""
        own = {m.name: m.rpm for m in models if m.provider == "gemini" and m.rpm}
        base = {"default_rpm": self.default_rpm, **self.gemini}
        base["rpm"] = {**base.get("rpm", {}), **own}
        return GeminiSettings.model_validate(base)

    def cells_in_flight(self, n_models: int) -> int:
        """Enough cells to keep every model busy, few enough that cells finish steadily."""
        if self.max_cells_in_flight:
            return self.max_cells_in_flight
        return max(2, 2 * -(-self.max_in_flight // max(1, n_models + 1)))


class GridSpec(BaseModel):
    """The job spec of a grid job, as stored."""

    media: list[MediaRef]
    prompts: list[PromptRef]
    cells: list[CellRef]
    models: list[ModelSpec]
    judge: ModelSpec | None
    mode: Literal["realtime", "batch"] = "realtime"
    settings: GridSettings = Field(default_factory=GridSettings)

    def media_by_id(self) -> dict[str, MediaRef]:
        return {m.id: m for m in self.media}

    def prompts_by_id(self) -> dict[str, PromptRef]:
        return {p.id: p for p in self.prompts}

    @property
    def all_models(self) -> list[ModelSpec]:
        return self.models + ([self.judge] if self.judge else [])

    def uses(self, provider: str) -> bool:
        return any(m.provider == provider for m in self.all_models)

    def needs_transcripts(self) -> bool:
        return any(m.text_only for m in self.all_models)


def call_id(cell_id: str, model_label: str) -> str:
    return f"{cell_id}/{model_label}"


def judge_call_id(cell_id: str) -> str:
    return f"{cell_id}/@judge"


def model_problems(models: list[Any], judge: Any, max_models: int = 4
                   ) -> tuple[list[ModelSpec], ModelSpec | None, list[tuple[str, str, str]]]:
    """Parse and check models and judge; returns (models, judge, problems naming each entry)."""
    from workbench.engines.gemini_messages import validate_params

    problems: list[tuple[str, str, str]] = []
    parsed: list[ModelSpec] = []
    where: list[str] = []
    if not models:
        problems.append(("models", "", "at least one model is needed"))
    if len(models) > max_models:
        problems.append(("models", "", f"{len(models)} models given; a cell runs at most"
                         f" {max_models} (pass max_models={len(models)} to allow more)"))
    for i, m in enumerate(models or []):
        named = f" ({m})" if isinstance(m, str) else ""
        try:
            parsed.append(parse_model(m))
            where.append(f"model {i + 1}{named}")
        except (ValueError, ValidationError) as e:
            problems.append((f"model {i + 1}", "", _short(e)))
    judge_spec = None
    if judge is not None:
        try:
            judge_spec = parse_model(judge)
        except (ValueError, ValidationError) as e:
            problems.append(("judge", "", _short(e)))
    labels = [m.label for m in parsed]
    for lab in sorted({x for x in labels if labels.count(x) > 1}):
        problems.append((where[len(labels) - 1 - labels[::-1].index(lab)], "",
                         f"two models are labelled {lab!r}: give one a distinct 'label'"))
    checks = list(zip(parsed, where, strict=True)) + ([(judge_spec, "judge")] if judge_spec else [])
    for m, w in checks:
        if m.provider == "gemini":
            try:
                validate_params(m.params)
            except ValueError as e:
                problems.append((w, "params", f"{m.label}: {e}"))
        elif m.provider == "vllm":
            from workbench.engines.vllm import SAMPLING_FIELDS, VLLMSettings

            bad = sorted(set(m.params) - SAMPLING_FIELDS)
            if bad:
                problems.append((w, "params", f"{m.label}: unknown sampling fields {bad}"))
            espec = m.engine_spec()
            try:
                if espec.get("provider", "vllm") == "vllm":  # (another pool provider: its own)
                    VLLMSettings(**{k: v for k, v in espec.items() if k != "provider"})
            except ValidationError as e:
                problems.append((w, "engine", f"{m.label}: {_short(e)}"))
            if not m.name.startswith("embedded:") and not Path(m.name).expanduser().exists() \
                    and os.sep in m.name:
                problems.append((w, "name", f"{m.label}: no model folder {m.name}"))
    return parsed, judge_spec, problems


def _short(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, x['loc'])) or 'value'}: {x['msg']}"
                         for x in e.errors())
    return str(e)
