"""OpenAI Batch input lines: stream-validate a whole file, refuse it whole if anything is off.

Validation reads the file once, line by line (never whole), copies the accepted bytes to
the job's staging folder as it goes, and lists every problem as (line, field, reason).
Only a file with no problems is queued (invariant 3). A UTF-8 BOM and blank lines
(anywhere) are tolerated, as OpenAI does; the staged copy has neither.

Body fields: everything OpenAI's chat/completions bodies accept is accepted (a typo is
still refused, so it cannot silently change nothing). What vLLM can honour is mapped
(sampling, `logit_bias`, `tools` with `tool_choice` "none" into the chat template,
`reasoning_effort` into the template's kwargs); what has no meaning for a local engine
(`service_tier`, `stream_options`, `prediction`, audio output, ...) is accepted and
counted in the report's `notes` ("no effect on a local engine"), never fatal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.batch.audio_format import AUDIO_URLS, AudioBody, audio_params
from workbench.batch.embed_format import EMBEDDINGS_URL, EmbeddingBody, params_of
from workbench.engines.base import ChatRequest
from workbench.errors import InvalidInput
from workbench.store.jsonl import loads

CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
URLS = (CHAT_URL, COMPLETIONS_URL, EMBEDDINGS_URL, *AUDIO_URLS)
MAX_LISTED = 50
#: body fields accepted but without effect on generation (OpenAI bookkeeping)
IGNORED_FIELDS = frozenset({"model", "user", "metadata", "store"})
#: accepted OpenAI fields that a local engine cannot honour: noted per job, never fatal
NO_EFFECT = frozenset({
    "service_tier", "store", "metadata", "user", "stream_options", "parallel_tool_calls",
    "prediction", "audio", "verbosity", "web_search_options", "prompt_cache_key",
    "prompt_cache_retention", "safety_identifier", "best_of",
})
NO_EFFECT_NOTE = "accepted; no effect on a local engine"
BOM = b"\xef\xbb\xbf"


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = "output"
    schema_: dict[str, Any] = Field(alias="schema")


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object with a schema")
        return self


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["function"]
    function: FunctionDef


class FunctionName(BaseModel):
    name: Annotated[str, Field(min_length=1)]


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: FunctionName


class Sampling(BaseModel):
    """Every OpenAI body field (and vLLM's extras); anything else is refused, not ignored."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    stream_options: dict[str, Any] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: int | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0)] | None = None
    ignore_eos: bool | None = None
    min_tokens: Annotated[int, Field(ge=0)] | None = None
    stop_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    allowed_token_ids: list[int] | None = None
    skip_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None
    response_format: ResponseFormat | None = None
    stream: Literal[False] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        bad = [k for k in (v or {}) if not k.isdigit()]
        if bad:
            raise ValueError(f"keys are token ids (strings of digits, e.g. \"50256\"), not "
                             f"{bad[0][:40]!r}")
        return v


TOOL_CHOICE_FORMS = ('"none", "auto", "required" or {"type": "function", "function": '
                     '{"name": ...}}')


#: vLLM's default `max_logprobs`: alternatives per token an engine returns at most
MAX_LOGPROBS = 20


class ChatSampling(Sampling):
    """Chat-only fields: OpenAI's `logprobs: true` + `top_logprobs: k`, tools, and the rest."""

    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    tools: Annotated[list[Tool], Field(min_length=1)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: Annotated[list[FunctionDef], Field(min_length=1)] | None = None
    function_call: Literal["none", "auto"] | FunctionName | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    web_search_options: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _tool_choice_form(cls, v: Any) -> Any:
        if v is None or v in ("none", "auto", "required") or (
                isinstance(v, dict) and isinstance(v.get("function"), dict)):
            return v
        raise ValueError(f"expected {TOOL_CHOICE_FORMS}")

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatSampling:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    @model_validator(mode="after")
    def _tool_choice_names_a_tool(self) -> ChatSampling:
        choice = self.tool_choice
        if choice is not None and self.tools is None and self.functions is None:
            raise ValueError("tool_choice needs tools")
        if isinstance(choice, NamedToolChoice) and self.tools is not None and \
                choice.function.name not in {t.function.name for t in self.tools}:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not one "
                             "of the tools")
        return self


class ChatBody(ChatSampling):
    messages: Annotated[list[Message], Field(min_length=1)]


class CompletionBody(Sampling):
    prompt: Annotated[str, Field(min_length=1)]
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    echo: bool | None = None
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None


def notes_of(body: dict[str, Any]) -> list[str]:
    """The accepted fields of one body that a local engine cannot honour."""
    found = [k for k in body if k in NO_EFFECT and body[k] is not None]
    if "audio" in (body.get("modalities") or ()):
        found.append("modalities")
    return found


class BatchLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    custom_id: Annotated[str, Field(min_length=1, max_length=512)]
    method: Literal["POST"]
    url: Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                 "/v1/audio/transcriptions", "/v1/audio/translations"]
    body: dict[str, Any]


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "constrained-int",
              "constrained-float", "constrained-str", "literal"}


def _loc(loc: tuple[Any, ...], prefix: str = "") -> str:
    """Field path like body.messages.0.role, without pydantic's union-branch tags."""
    parts = [prefix] if prefix else []
    for x in loc:
        t = str(x)
        if t.startswith("function-") or "[" in t or t in _TYPE_TAGS or t.startswith("literal"):
            continue
        parts.append(t)
    return ".".join(p for p in parts if p) or "line"


def _problems(e: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """One (field, reason) per field; the alternatives of a union are joined with 'or'."""
    merged: dict[str, list[str]] = {}
    for er in e.errors():
        merged.setdefault(_loc(er["loc"], prefix), []).append(_reason(er))
    return [(field, " or ".join(dict.fromkeys(reasons))) for field, reasons in merged.items()]


def _reason(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unsupported field (not an OpenAI or vLLM request field)"
    if err["type"] == "missing":
        return "required field is missing"
    if err["type"] == "literal_error" and err["loc"][-1:] == ("stream",):
        return "streaming is not available in a batch"
    return str(err["msg"]).removeprefix("Value error, ")


def check_line(obj: Any) -> tuple[BatchLine | None, list[tuple[str, str]]]:
    """Problems of one parsed line as (field, reason); the line model when it is valid."""
    if not isinstance(obj, dict):
        return None, [("line", f"expected a JSON object, got {type(obj).__name__}")]
    try:
        line = BatchLine.model_validate(obj)
    except ValidationError as e:
        return None, _problems(e)
    body_model = {CHAT_URL: ChatBody, EMBEDDINGS_URL: EmbeddingBody, AUDIO_URLS[0]: AudioBody,
                  AUDIO_URLS[1]: AudioBody}.get(line.url, CompletionBody)
    try:
        body_model.model_validate(line.body)
    except ValidationError as e:
        return None, _problems(e, "body")
    return line, []


class Report(BaseModel):
    total: int
    path: str
    models: list[str] = Field(default_factory=list)
    #: accepted fields without effect here → how many lines used them
    notes: dict[str, int] = Field(default_factory=dict)
    #: url → how many lines ask it (embeddings lines get the embedding model by default)
    urls: dict[str, int] = Field(default_factory=dict)

    def note_text(self) -> dict[str, str]:
        return {k: f"{NO_EFFECT_NOTE} ({n} line{'s' if n != 1 else ''})"
                for k, n in sorted(self.notes.items())}


def validate_file(path: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None,
                  max_requests: int | None = None) -> Report:
    """Validate `path` line by line; copy it to `dest` on the way. Raises InvalidInput.

    Lists the first 50 problems (line number, field, reason) and counts all of them.
    """
    src = Path(path)
    if not src.exists():
        raise InvalidInput([(0, "file", f"{src} does not exist")], source=str(src))
    problems: list[tuple[int, str, str]] = []
    count = 0
    seen: dict[str, int] = {}
    models: set[str] = set()
    notes: dict[str, int] = {}
    urls: dict[str, int] = {}
    n = 0
    out = open(dest, "wb") if dest is not None else None

    def problem(line_no: int, field: str, reason: str) -> None:
        nonlocal count
        count += 1
        if len(problems) < MAX_LISTED:
            problems.append((line_no, field, reason))

    try:
        with open(src, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                stripped = (raw.removeprefix(BOM) if line_no == 1 else raw).strip()
                if not stripped:
                    continue  # blank lines are tolerated anywhere (OpenAI skips them too)
                n += 1
                if max_requests is not None and n == max_requests + 1:
                    problem(line_no, "file", f"more than {max_requests:,} requests (limit "
                            "max_requests_per_job); split it with wb.batch.submit_large")
                try:
                    text = stripped.decode("utf-8")
                except UnicodeDecodeError as e:
                    problem(line_no, "line", f"not valid UTF-8 (byte {e.start})")
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    problem(line_no, "line", f"invalid JSON: {e.msg} (column {e.colno})")
                    continue
                line, errs = check_line(obj)
                for field, reason in errs:
                    problem(line_no, field, reason)
                cid = obj.get("custom_id") if isinstance(obj, dict) else None
                if isinstance(cid, str) and cid:
                    if cid in seen:
                        problem(line_no, "custom_id", f"duplicate {cid!r} (first on line {seen[cid]})")
                    else:
                        seen[cid] = line_no
                if line is not None:
                    m = line.body.get("model")
                    if isinstance(m, str):
                        models.add(m)
                    urls[line.url] = urls.get(line.url, 0) + 1
                    for k in notes_of(line.body):
                        notes[k] = notes.get(k, 0) + 1
                    if out is not None and not count:
                        out.write(stripped + b"\n")
    finally:
        if out is not None:
            out.close()
    if n == 0 and not count:
        problem(0, "file", "empty: no requests")
    if count:
        if dest is not None:
            Path(dest).unlink(missing_ok=True)
        raise InvalidInput(problems, count, source=str(src))
    return Report(total=n, path=str(src), models=sorted(models), notes=notes, urls=urls)


def to_request(obj: dict[str, Any]) -> ChatRequest:
    """A validated input line → the engine-neutral request."""
    if obj["url"] in (EMBEDDINGS_URL, *AUDIO_URLS):
        audio = obj["url"] in AUDIO_URLS
        return ChatRequest.model_construct(
            custom_id=obj["custom_id"], endpoint="audio" if audio else "embedding",
            messages=None, prompt=None, model=obj["body"].get("model"),
            params=audio_params(obj) if audio else params_of(obj["body"]))
    body = dict(obj["body"])
    chat = obj["url"] == CHAT_URL
    messages = body.pop("messages", None)
    prompt = body.pop("prompt", None)
    for k in IGNORED_FIELDS:
        body.pop(k, None)
    body.pop("stream", None)
    if chat and "functions" in body:  # OpenAI's deprecated spelling of tools/tool_choice
        body.setdefault("tools", [{"type": "function", "function": f}
                                  for f in body.pop("functions")])
        call = body.pop("function_call", None)
        if isinstance(call, dict):
            body.setdefault("tool_choice", {"type": "function", "function": call})
        elif call is not None:
            body.setdefault("tool_choice", call)
    # validated when the file was submitted: construct without validating again
    return ChatRequest.model_construct(
        custom_id=obj["custom_id"], endpoint="chat" if chat else "completion",
        messages=messages, prompt=prompt, params=body, model=obj["body"].get("model"))


def iter_lines(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Stream the (already validated) input file."""
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            raw = raw.removeprefix(BOM) if i == 0 else raw
            if raw.strip():
                yield loads(raw)
