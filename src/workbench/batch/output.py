"""Output and error lines in OpenAI's exact `BatchRequestOutput` shape."""

from __future__ import annotations

import time
import uuid
from typing import Any

from workbench.engines import logprobs as lp
from workbench.engines.base import ChatResult


def _hex() -> str:
    return uuid.uuid4().hex


def completion_body(result: ChatResult, endpoint: str, model: str, h: str) -> dict[str, Any]:
    usage = {"prompt_tokens": result.prompt_tokens,
             "completion_tokens": result.completion_tokens,
             "total_tokens": result.prompt_tokens + result.completion_tokens}
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


def success_line(result: ChatResult, endpoint: str, model: str) -> dict[str, Any]:
    h = _hex()  # one random id per line; the line, request and completion ids derive from it
    return {"id": f"batch_req_{h}", "custom_id": result.custom_id,
            "response": {"status_code": 200, "request_id": h,
                         "body": completion_body(result, endpoint, model, h)},
            "error": None}


def error_line(custom_id: str, message: str, code: str | None = None,
               status_code: int = 400) -> dict[str, Any]:
    code = code or "invalid_request"
    h = _hex()
    return {"id": f"batch_req_{h}", "custom_id": custom_id,
            "response": {"status_code": status_code, "request_id": h,
                         "body": {"error": {"message": message, "type": "invalid_request_error"
                                            if status_code < 500 else "server_error",
                                            "param": None, "code": code}}},
            "error": {"code": code, "message": message}}
