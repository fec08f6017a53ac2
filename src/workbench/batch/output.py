"""Output and error lines in OpenAI's exact `BatchRequestOutput` shape."""

from __future__ import annotations

import os
import time
from typing import Any

from workbench.engines import logprobs as lp
from workbench.engines.base import ChatResult
from workbench.engines.failures import classify_message


def _hex() -> str:
    """32 random hex digits (what uuid4().hex gives, at a fifth of the cost)."""
    return os.urandom(16).hex()


def completion_body(result: ChatResult, endpoint: str, model: str, h: str) -> dict[str, Any]:
    usage = {"prompt_tokens": result.prompt_tokens,
             "completion_tokens": result.completion_tokens,
             "total_tokens": result.prompt_tokens + result.completion_tokens,
             "prompt_tokens_details": {"cached_tokens": result.cached_tokens}}
    created = int(time.time())
    if endpoint == "chat":
        return {
            "id": f"chatcmpl-{h}", "object": "chat.completion", "created": created,
            "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                         "finish_reason": c.finish_reason, "logprobs": lp.to_chat(c.logprobs)}
                        for i, c in enumerate(result.choices)],
            "usage": usage,
        }
    return {
        "id": f"cmpl-{h}", "object": "text_completion", "created": created, "model": model,
        "choices": [{"index": i, "text": c.text, "finish_reason": c.finish_reason,
                     "logprobs": lp.to_completion(c.logprobs)}
                    for i, c in enumerate(result.choices)],
        "usage": usage,
    }


def embedding_body(result: ChatResult, model: str) -> dict[str, Any]:
    """OpenAI's `CreateEmbeddingResponse`: data items, the model, usage (prompt tokens)."""
    return {"object": "list", "data": result.data or [], "model": model,
            "usage": {"prompt_tokens": result.prompt_tokens,
                      "total_tokens": result.prompt_tokens}}


def success_line(result: ChatResult, endpoint: str, model: str) -> dict[str, Any]:
    h = _hex()  # one random id per line; the line, request and completion ids derive from it
    if endpoint == "audio":  # OpenAI's transcription body, made by the engine
        body = dict((result.data or [{}])[0])
    else:
        body = (embedding_body(result, model) if endpoint == "embedding"
                else completion_body(result, endpoint, model, h))
    return {"id": f"batch_req_{h}", "custom_id": result.custom_id,
            "response": {"status_code": 200, "request_id": f"req_{h}", "body": body},
            "error": None}


def expired_line(custom_id: str) -> dict[str, Any]:
    """OpenAI's line for a request the completion window closed on: no response at all."""
    return {"id": f"batch_req_{_hex()}", "custom_id": custom_id, "response": None,
            "error": {"code": "batch_expired",
                      "message": "This request could not be executed before the completion "
                                 "window expired."}}


#: OpenAI's error `type` for an HTTP status
_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          429: "rate_limit_error"}


def error_line(custom_id: str, message: str, code: str | None = None,
               status_code: int | None = 400,
               workbench: dict[str, Any] | None = None,
               error_type: str | None = None) -> dict[str, Any]:
    """An error line. `status_code=None`: no HTTP answer arrived (connection refused,
    timeout) and the line says so like OpenAI's request-level failures: `response: null`
    and `error: {code, message}`. `workbench` adds class/attempts/endpoint to `error`."""
    code = code or "invalid_request"
    h = _hex()
    error: dict[str, Any] = {"code": code, "message": message}
    if workbench is not None:
        error["workbench"] = workbench
    response = None
    if status_code is not None:
        kind = error_type or _TYPES.get(status_code, "invalid_request_error" if status_code < 500
                                  else "server_error")
        response = {"status_code": status_code, "request_id": f"req_{h}",
                    "body": {"error": {"message": message, "type": kind, "param": None,
                                       "code": code}}}
    return {"id": f"batch_req_{h}", "custom_id": custom_id, "response": response, "error": error}


def failure_line(result: ChatResult) -> dict[str, Any]:
    """The error line of a failed result, classified (`engines.failures`) if the engine
    did not: in-process engines' request errors are final and written as 400, the status
    an OpenAI server gives the same request."""
    f = result.failure
    if f is None:
        f = classify_message(result.error or "failed", result.error_code)
        return error_line(result.custom_id, result.error or "failed", f.code, 400, f.line_extra())
    return error_line(result.custom_id, result.error or f.described(), f.code, f.status,
                      f.line_extra())
