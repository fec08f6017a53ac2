"""What goes to Gemini and what comes back: requests, generate configs, and call results.

`contents`/`config` build one generate_content call from a `GeminiRequest` (prompt,
uploaded files, system text, OpenAI-style parameters, a response schema); `to_call`
reads a response into a `GeminiCall`: text, finish reason, token usage, and the parsed
structured output. When `response.parsed` is None (the SDK's silent failure on JSON it
cannot validate, e.g. inside markdown fences) the text is parsed here, and a clear error
is reported if that fails too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from workbench.engines.base import Outcome
from workbench.engines.gemini_files import GeminiFile
from workbench.engines.structured import StructuredOutputError, parse_structured

#: OpenAI body names accepted for symmetry with local models → GenerateContentConfig names.
PARAM_ALIASES = {"max_tokens": "max_output_tokens", "stop": "stop_sequences"}


def gemini_params(params: dict[str, Any]) -> dict[str, Any]:
    """OpenAI-style names (max_tokens, stop) → GenerateContentConfig names; rest as is."""
    out = {PARAM_ALIASES.get(k, k): v for k, v in params.items()}
    if isinstance(out.get("stop_sequences"), str):
        out["stop_sequences"] = [out["stop_sequences"]]
    return out


def validate_params(params: dict[str, Any]) -> None:
    """Raise ValueError naming the bad field if GenerateContentConfig would refuse these."""
    from google.genai import types

    try:
        types.GenerateContentConfig(**gemini_params(params))
    except ValidationError as e:
        raise ValueError("; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
                                   for err in e.errors())) from None


class GeminiCall(Outcome):
    """One finished generate call: the answer or the error, with its costs."""

    model: str
    thoughts_tokens: int = 0


@dataclass
class GeminiRequest:
    """What to ask: a prompt, optional uploaded files, optional schema and system text."""

    key: str
    prompt: str
    files: Sequence[GeminiFile] = ()
    schema: type[BaseModel] | None = None
    system: str | None = None
    params: dict[str, Any] | None = None


def contents(req: GeminiRequest) -> list[Any]:
    from google.genai import types

    parts = [types.Part.from_uri(file_uri=f.uri, mime_type=f.mime_type) for f in req.files]
    parts.append(types.Part(text=req.prompt))
    return [types.Content(role="user", parts=parts)]


def config(req: GeminiRequest) -> Any:
    from google.genai import types

    kw = gemini_params(req.params or {})
    if req.system:
        kw["system_instruction"] = req.system
    if req.schema is not None:
        kw.update(response_mime_type="application/json", response_schema=req.schema)
    return types.GenerateContentConfig(**kw)


def to_call(model: str, req: GeminiRequest, response: Any) -> GeminiCall:
    call = GeminiCall(model=model)
    usage = getattr(response, "usage_metadata", None)
    if usage is not None:
        call.prompt_tokens = usage.prompt_token_count or 0
        call.completion_tokens = usage.candidates_token_count or 0
        call.thoughts_tokens = usage.thoughts_token_count or 0
        call.total_tokens = usage.total_token_count or 0
    cands = getattr(response, "candidates", None) or []
    if cands and cands[0].finish_reason is not None:
        call.finish_reason = getattr(cands[0].finish_reason, "name", str(cands[0].finish_reason))
    try:
        call.text = response.text or ""
    except Exception:  # the SDK raises on some blocked / partless responses
        call.text = ""
    if not call.text and not cands:
        fb = getattr(response, "prompt_feedback", None)
        call.error = f"no answer (prompt feedback: {fb})" if fb else "empty response"
        call.error_code = "empty"
        return call
    if req.schema is not None:
        parsed = getattr(response, "parsed", None)
        if isinstance(parsed, BaseModel):
            call.parsed = parsed.model_dump()
        else:  # the SDK's silent failure: parse the text ourselves
            try:
                call.parsed = parse_structured(call.text, req.schema).model_dump()
            except StructuredOutputError as e:
                call.error, call.error_code = str(e), "parse"
    return call
