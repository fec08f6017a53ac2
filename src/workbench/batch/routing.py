"""Which model answers which line: a batch's lines grouped by the model they name.

A job spec names one model (`model` + `engine`, the Python API's single model: every line
runs on it, whatever its `body.model` says) or several under names (`models`: name →
engine spec, what `workbench serve --model NAME=PATH ...` submits). With names, a line
runs on the model its `body.model` names, a line naming none on the job's default, and a
line naming a model that is not served gets OpenAI's per-request `model_not_found` (404)
error line, as OpenAI's own batches answer an unknown model (its error file carries the
404 `model_not_found` body).

The runner takes the routes one at a time through the engine pool (load A, run A's lines,
release, load B, ...), so two models are never resident together; a route whose engine
is already loaded goes first. Each route streams the input again, keeping memory flat.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from workbench.batch.audio_format import AUDIO_URLS
from workbench.batch.embed_format import EMBEDDINGS_URL
from workbench.batch.format import iter_lines, to_request
from workbench.batch.output import error_line
from workbench.engines.base import ChatRequest
from workbench.runtime.context import JobContext


def served(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name → engine spec of every model the job may use (one for single-model jobs)."""
    if spec.get("models"):
        return {**spec["models"], AUDIO_ROUTE: audio_engine(spec)}
    out = {spec["model"]: spec["engine"], AUDIO_ROUTE: audio_engine(spec)}
    if spec.get("embed_model"):
        out[spec["embed_model"]] = spec["embed_engine"]
    return out


#: the route name of audio lines (whatever `model` they name: "whisper-1" means Whisper)
AUDIO_ROUTE = "whisper"


def audio_engine(spec: dict[str, Any]) -> dict[str, Any]:
    """faster-whisper (batched) with the job's allowed media folders."""
    return {"provider": "whisper", "model": spec.get("stt_model"),
            "media_dirs": list(spec.get("media_dirs") or [])}


def kind_of(obj: dict[str, Any]) -> str:
    """"embed" for a `/v1/embeddings` line (vLLM's pooling runner), else "generate"."""
    if obj.get("url") in AUDIO_URLS:
        return "audio"
    return "embed" if obj.get("url") == EMBEDDINGS_URL else "generate"


def engine_for(engine: dict[str, Any], kind: str) -> dict[str, Any]:
    """The engine spec a route of this kind loads: a local model runs as a pooling model
    for embeddings (a remote server decides for itself)."""
    if kind == "embed" and engine.get("provider", "vllm") in ("vllm", "ray"):
        return {**engine, "runner": "pooling"}
    return engine


def wrong_kind(engine: dict[str, Any], kind: str, name: str) -> str | None:
    """Why a model cannot answer lines of this kind (a chat model asked for embeddings,
    an embedding model asked for chat), in words; None when it can or cannot be told."""
    from workbench.models import model_kind

    if kind == "audio" or engine.get("provider", "vllm") not in ("vllm", "ray"):
        return None
    have = model_kind(str(engine.get("model", name)))
    if have is None or have == kind:
        return None
    if kind == "embed":
        return (f"model {name} is a chat (text generation) model, not an embedding model: "
                "name an embedding model for /v1/embeddings lines, or none for the embedded "
                "all-MiniLM-L6-v2")
    return (f"model {name} is an embedding model: it answers /v1/embeddings lines only, "
            "not chat or completions")


def not_found_message(name: str, names: list[str]) -> str:
    return (f"The model `{name[:200]}` does not exist or you do not have access to it."
            f" Served here: {', '.join(names)}.")


@dataclass
class Route:
    """The pending lines of one model."""

    name: str
    engine: dict[str, Any]
    pending: int = 0
    kind: str = "generate"
    #: custom_id → endpoint ("chat"/"completion") of requests handed to the engine
    endpoints: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The engine pool's key for this route's engine (`pool.loaded()` compares it)."""
        return json.dumps(self.engine, sort_keys=True)

    def requests(self, ctx: JobContext, done: set[str], spec: dict[str, Any]) -> Iterator[ChatRequest]:
        """Stream this route's pending requests from the job's input."""
        for obj in iter_lines(ctx.dir / "input.jsonl"):
            if obj["custom_id"] in done or route_name(obj, spec) != self.name \
                    or kind_of(obj) != self.kind:
                continue
            req = to_request(obj)
            self.endpoints[req.custom_id] = req.endpoint
            yield req


def route_name(obj: dict[str, Any], spec: dict[str, Any]) -> str | None:
    """The served name a line runs on; None when it names a model that is not served."""
    kind = kind_of(obj)
    if kind == "audio":  # every audio line runs on the job's speech-to-text model
        return AUDIO_ROUTE
    default = str(spec.get("embed_model") or spec["model"]) if kind == "embed" \
        else str(spec["model"])
    if not spec.get("models"):
        return default
    asked = (obj.get("body") or {}).get("model")
    if asked is None:
        return default
    return asked if asked in spec["models"] else None


def plan(ctx: JobContext, done: set[str], loaded_key: str | None) -> list[Route]:
    """The routes with pending lines (loaded engine first); unknown models answered now.

    One pass over the input: counts each route's pending lines and records a
    `model_not_found` error line for every line that names a model not served.
    """
    spec = ctx.spec
    models = served(spec)
    routes: dict[tuple[str, str], Route] = {}
    refused: dict[tuple[str, str], str | None] = {}
    for obj in iter_lines(ctx.dir / "input.jsonl"):
        cid = obj["custom_id"]
        if cid in done:
            continue
        name = route_name(obj, spec)
        if name is None:
            asked = str(obj["body"].get("model"))
            ctx.record(error_line(cid, not_found_message(asked, sorted(models)), "model_not_found",
                                  status_code=404, error_type="invalid_request_error"),
                       error=True)
            done.add(cid)
            continue
        key = (name, kind_of(obj))
        if key not in refused:
            refused[key] = wrong_kind(models[name], key[1], name)
        if refused[key]:
            ctx.record(error_line(cid, str(refused[key]), "model_not_supported"), error=True)
            done.add(cid)
            continue
        if key not in routes:
            routes[key] = Route(name, engine_for(models[name], key[1]), kind=key[1])
        routes[key].pending += 1
    todo = [r for r in routes.values() if r.pending]
    todo.sort(key=lambda r: (r.key != loaded_key, r.name))
    return todo


class Usage:
    """Token totals over the job's output lines (OpenAI's `usage` on the batch object).

    Recomputed from the output file when a run starts (the file is the truth after a
    crash), then kept up to date per result; stored in the job's metrics as `usage`.
    """

    def __init__(self, ctx: JobContext) -> None:
        self.input = self.output = self.cached = self.reasoning = 0
        for rec in ctx.output.records():
            u = (((rec.get("response") or {}).get("body") or {}).get("usage")) or {}
            self.input += int(u.get("prompt_tokens") or 0)
            self.output += int(u.get("completion_tokens") or 0)
            self.cached += int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)

    def add(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> None:
        self.input += prompt_tokens
        self.output += completion_tokens
        self.cached += cached_tokens

    def hit_rate(self) -> float | None:
        """Share of the prompt tokens served from the engine's prefix cache (None: no prompts)."""
        return round(self.cached / self.input, 4) if self.input else None

    def metrics(self) -> dict[str, Any]:
        """What the runner publishes in the job's metrics: `usage` and the cache hit rate."""
        return {"usage": self.as_dict(), "prefix_cache_hit_rate": self.hit_rate()}

    def as_dict(self) -> dict[str, Any]:
        return {"input_tokens": self.input, "output_tokens": self.output,
                "total_tokens": self.input + self.output,
                "input_tokens_details": {"cached_tokens": self.cached},
                "output_tokens_details": {"reasoning_tokens": self.reasoning}}
