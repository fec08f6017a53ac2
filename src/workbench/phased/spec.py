"""What a phased job is asked to do: rubric, batch size, STT and LLM settings.

All of it is plain data stored in the job's spec (names and numbers, never a secret),
validated once at submission so a bad setting is refused before anything is queued.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workbench.runtime.child import EngineSpec

Isolation = Literal["inline", "process", "auto"]

#: Short names for chat engines; any "package.module:Class" works too.
LLM_ENGINES = {
    "vllm": "workbench.engines.vllm:VLLMEngine",
    "openai": "workbench.engines.openai_http:OpenAIHTTPEngine",
    "gemini": "workbench.phased.gemini_judge:GeminiJudge",
}
#: engines with no local model: nothing to isolate, so they run in the worker by default
REMOTE_ENGINES = frozenset({"openai", "gemini"})
WHISPER_ENGINE = "workbench.engines.whisper:WhisperEngine"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")


class Criterion(BaseModel):
    """One rubric line, scored 0..max_score (small integer ranges keep models honest)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    max_score: int = Field(5, ge=1, le=10)

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"criterion name {v!r} must be a letter then letters, digits or _"
                             " (at most 40), because it becomes a JSON key")
        return v


class Rubric(BaseModel):
    """What the LLM scores each transcript against."""

    model_config = ConfigDict(extra="forbid")

    criteria: list[Criterion] = Field(min_length=1, max_length=12)
    question: str = ""
    instructions: str = ""
    overall_max: int = Field(10, ge=1, le=100)
    feedback_max_chars: int = Field(400, ge=20, le=4000)

    @model_validator(mode="after")
    def _unique(self) -> Rubric:
        names = [c.name for c in self.criteria]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"criterion names must be unique; repeated: {dupes}")
        return self

    @classmethod
    def coerce(cls, value: Any) -> Rubric:
        """A Rubric, its dict, {name: description}, a list of names, or one free-text rubric."""
        if isinstance(value, Rubric):
            return value
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("the rubric is empty")
            return cls(criteria=[Criterion(name="rubric", description=value.strip())])
        if isinstance(value, dict) and "criteria" not in value:
            return cls(criteria=[Criterion(name=k, description=str(v)) for k, v in value.items()])
        if isinstance(value, list | tuple):
            return cls(criteria=[Criterion(name=v) if isinstance(v, str) else Criterion(**v)
                                 for v in value])
        return cls.model_validate(value)


class STTSettings(BaseModel):
    """faster-whisper settings (see WhisperEngine); `model=None` means the embedded tiny.en."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = None
    device: str = "auto"
    compute_type: str | None = None
    batched: bool = True
    batch_size: int = Field(8, ge=1, le=64)
    beam_size: int = Field(5, ge=1, le=10)
    language: str | None = None
    #: measured (see bench/phased.py): a child process returns all memory, inline does not
    isolation: Isolation = "process"
    engine: str = WHISPER_ENGINE
    #: further engine arguments (WhisperEngine: cpu_threads, vad_filter)
    options: dict[str, Any] = Field(default_factory=dict)

    def engine_spec(self) -> EngineSpec:
        kw = self.model_dump(exclude={"isolation", "engine", "options"})
        return EngineSpec(target=self.engine, kwargs={**kw, **self.options})


class LLMSettings(BaseModel):
    """The evaluating chat engine: a short name from LLM_ENGINES or "module:Class"."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    engine: str = "vllm"
    #: engine constructor arguments (vLLM: dtype, max_model_len, kv_cache_memory_bytes, ...)
    options: dict[str, Any] = Field(default_factory=dict)
    max_tokens: int = Field(384, ge=16, le=32768)
    temperature: float = Field(0.0, ge=0, le=2)
    seed: int | None = 0
    #: requests in flight inside one evaluation phase (None: the engine's default)
    window: int | None = Field(None, ge=1)
    isolation: Isolation = "process"
    #: how the rubric is scored: "json" (structured output; instruction-tuned models,
    #: Gemini), "logprobs" (a base model's token probabilities, `phased.geval`), or
    #: "auto": logprobs for a local base model (the embedded Gemma), json otherwise
    scoring: Literal["auto", "json", "logprobs"] = "auto"

    @field_validator("engine")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in LLM_ENGINES and ":" not in v:
            raise ValueError(f"engine {v!r} is neither one of {sorted(LLM_ENGINES)} nor"
                             " 'package.module:Class'")
        return v

    @model_validator(mode="after")
    def _remote_inline(self) -> LLMSettings:
        if self.engine in REMOTE_ENGINES and "isolation" not in self.model_fields_set:
            self.isolation = "inline"
        if self.scoring == "logprobs" and self.engine == "gemini":
            raise ValueError("scoring='logprobs' needs a local (vllm) or OpenAI-compatible"
                             " engine; Gemini scores with structured output")
        return self

    @property
    def uses_logprobs(self) -> bool:
        """Whether this job scores from token probabilities (see `scoring`)."""
        if self.scoring != "auto":
            return self.scoring == "logprobs"
        from workbench.config import is_base_model

        return self.engine == "vllm" and is_base_model(self.model)

    @property
    def target(self) -> str:
        return LLM_ENGINES.get(self.engine, self.engine)

    def engine_spec(self) -> EngineSpec:
        return EngineSpec(target=self.target, kwargs={"model": self.model, **self.options})


class PhasedSpec(BaseModel):
    """The whole job spec as stored."""

    model_config = ConfigDict(extra="forbid")

    rubric: Rubric
    batch_size: int = Field(10, ge=1, le=1000)
    stt: STTSettings = Field(default_factory=STTSettings)
    llm: LLMSettings
    #: the device both phases lock: "auto" (cuda:0 when CTranslate2 sees a GPU), "cpu", "cuda:N"
    device: str = "auto"
    #: largest acceptable memory residue after an unload before it is flagged
    residue_bound_mib: int = Field(128, ge=0)
