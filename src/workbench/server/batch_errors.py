"""A bad batch input failed the OpenAI way: the validator's problems as a batch's `errors`.

OpenAI accepts the upload of a JSONL file with broken lines and fails the batch at
validation: `status="failed"`, `errors={"object": "list", "data": [{code, message, param,
line}]}`, nothing runs. The codes are the ones OpenAI's validator reports (as recorded
from api.openai.com): `invalid_json_line` (param null), `missing_required_parameter`
(param the field), `duplicate_custom_id`, `unknown_parameter` (a field OpenAI's bodies
do not have), `invalid_url` (a line's url is not the batch's
endpoint), `streaming_unsupported` (param `body.stream`), `empty_file`, `too_many_tasks`,
and `invalid_request` for any other field. Not reported here, on purpose: OpenAI's
one-model-per-batch rule (`model_mismatch`) — this server runs each line on the model its
`body.model` names — and an unserved model, which is that line's `model_not_found`
error at run time. Messages keep the validator's reason (which field, why).
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.batch.format import BOM, URLS
from workbench.server.schemas import BatchError

#: as many errors as OpenAI's object is useful with; a last one says how many there were
MAX_ERRORS = 50
MAX_MODELS_RECORDED = 20


def batch_error(line: int | str | None, field: str, reason: str) -> BatchError:
    """One (line, field, reason) problem of the validator as OpenAI's BatchError."""
    ln = line if isinstance(line, int) and line > 0 else None
    r = reason.lower()
    if field == "line" and (r.startswith("invalid json") or r.startswith("not valid utf-8")):
        detail = reason.removeprefix("invalid JSON: ")
        return BatchError(code="invalid_json_line", line=ln, param=None,
                          message=f"This line is not parseable as valid JSON: {detail}.")
    if field == "custom_id" and r.startswith("duplicate"):
        return BatchError(code="duplicate_custom_id", line=ln, param="custom_id",
                          message=f"The custom_id for this request is a {reason}; it must be "
                                  "unique for each request in a batch.")
    if field == "url":
        code = "invalid_url"
        if r.startswith("does not match the batch endpoint"):
            return BatchError(code=code, line=ln, param="url",
                              message=f"The URL provided for this request {reason}.")
        return BatchError(code=code, line=ln, param="url", message=f"url: {reason}")
    if field == "body.stream":
        return BatchError(code="streaming_unsupported", line=ln, param="body.stream",
                          message=f"Streaming is not supported in the Batch API ({reason}).")
    if field == "file" and r.startswith("empty"):
        return BatchError(code="empty_file", line=None, param=None,
                          message="The batch input file is empty: it holds no requests.")
    if field == "file" and r.startswith("more than"):
        return BatchError(code="too_many_tasks", line=ln, param=None,
                          message=f"The batch input file holds {reason}.")
    if r.startswith("unsupported field"):
        return BatchError(code="unknown_parameter", line=ln, param=field,
                          message=f"Unrecognized request argument supplied: {field} ({reason}).")
    if r == "required field is missing":
        return BatchError(code="missing_required_parameter", line=ln, param=field,
                          message=f"Missing required parameter: '{field}'.")
    param = None if field in ("line", "file") else field
    return BatchError(code="invalid_request", line=ln, param=param,
                      message=f"{field}: {reason}" if param else reason)


def batch_errors(problems: list[tuple[int | str | None, str, str]], total: int
                 ) -> list[BatchError]:
    """The listed problems in line order, and one more error when there were more."""
    errors = [batch_error(*p) for p in sorted(problems, key=lambda p: (
        p[0] if isinstance(p[0], int) else 0, p[1]))[:MAX_ERRORS]]
    if total > len(errors):
        errors.append(BatchError(code="too_many_errors", message=f"{total} problems in all; "
                                 f"the first {len(errors)} are listed"))
    return errors


def scan(path: Path, endpoint: str) -> tuple[list[tuple[int, str, str]], list[str]]:
    """One streaming pass: lines whose `url` differs from the batch endpoint, and the
    per-line `body.model` names (recorded; each line runs on the model it names)."""
    mismatched: list[tuple[int, str, str]] = []
    models: set[str] = set()
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            raw = raw.removeprefix(BOM) if line_no == 1 else raw
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                continue  # the validator reports it, with the reason
            if not isinstance(obj, dict):
                continue
            url = obj.get("url")
            if isinstance(url, str) and url in URLS and url != endpoint:
                mismatched.append((line_no, "url", "does not match the batch endpoint: the "
                                   f"line asks for {url}, the batch is for {endpoint}"))
            body = obj.get("body")
            m = body.get("model") if isinstance(body, dict) else None
            if isinstance(m, str) and len(models) < MAX_MODELS_RECORDED:
                models.add(m[:200])
    return mismatched, sorted(models)
