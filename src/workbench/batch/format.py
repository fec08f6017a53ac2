"""OpenAI Batch input lines: stream-validate a whole file, refuse it whole if anything is off.

Validation reads the file once, line by line (never whole), copies the accepted bytes to
the job's staging folder as it goes, and lists every problem as (line, field, reason).
Only a file with no problems is queued (invariant 3).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workbench.engines.base import ChatRequest
from workbench.errors import InvalidInput

CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
URLS = (CHAT_URL, COMPLETIONS_URL)
MAX_LISTED = 50
#: body fields accepted but without effect on generation (OpenAI bookkeeping)
IGNORED_FIELDS = frozenset({"model", "user", "metadata", "store"})


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


class Sampling(BaseModel):
    """The sampling fields we honour; anything else is refused rather than ignored."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
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
    response_format: ResponseFormat | None = None
    stream: Literal[False] | None = None


#: vLLM's default `max_logprobs`: alternatives per token an engine returns at most
MAX_LOGPROBS = 20


class ChatSampling(Sampling):
    """Chat-only fields: OpenAI's `logprobs: true` + `top_logprobs: k`."""

    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatSampling:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self


class ChatBody(ChatSampling):
    messages: Annotated[list[Message], Field(min_length=1)]


class CompletionBody(Sampling):
    prompt: Annotated[str, Field(min_length=1)]
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None


class BatchLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    custom_id: Annotated[str, Field(min_length=1, max_length=512)]
    method: Literal["POST"]
    url: Literal["/v1/chat/completions", "/v1/completions"]
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
        return "unsupported field"
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
    body_model = ChatBody if line.url == CHAT_URL else CompletionBody
    try:
        body_model.model_validate(line.body)
    except ValidationError as e:
        return None, _problems(e, "body")
    return line, []


class Report(BaseModel):
    total: int
    path: str
    models: list[str] = Field(default_factory=list)


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
    n = 0
    out = open(dest, "wb") if dest is not None else None

    def problem(line_no: int, field: str, reason: str) -> None:
        nonlocal count
        count += 1
        if len(problems) < MAX_LISTED:
            problems.append((line_no, field, reason))

    try:
        with open(src, "rb") as f:
            pending_blank: int | None = None
            for line_no, raw in enumerate(f, start=1):
                stripped = raw.strip()
                if not stripped:
                    pending_blank = pending_blank or line_no
                    continue
                if pending_blank is not None:
                    problem(pending_blank, "line", "empty line inside the file")
                    pending_blank = None
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
    return Report(total=n, path=str(src), models=sorted(models))


def to_request(obj: dict[str, Any]) -> ChatRequest:
    """A validated input line → the engine-neutral request."""
    body = dict(obj["body"])
    chat = obj["url"] == CHAT_URL
    messages = body.pop("messages", None)
    prompt = body.pop("prompt", None)
    for k in IGNORED_FIELDS:
        body.pop(k, None)
    body.pop("stream", None)
    # validated when the file was submitted: construct without validating again
    return ChatRequest.model_construct(
        custom_id=obj["custom_id"], endpoint="chat" if chat else "completion",
        messages=messages, prompt=prompt, params=body, model=obj["body"].get("model"))


def iter_lines(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Stream the (already validated) input file."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                yield json.loads(raw)
