"""Structured output: a model's text parsed as a pydantic schema, tolerating markdown fences.

Any engine's answer may arrive as JSON inside ```json fences or with chatter around it
(Gemini's `response.parsed` is silently None then; a local model has no schema mode at
all). Used by the Gemini engine and by the grid's callers for local models alike.
"""

from __future__ import annotations

import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from workbench.errors import WorkbenchError


class StructuredOutputError(WorkbenchError):
    """The model's text is not JSON valid for the requested schema."""


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)


M = TypeVar("M", bound=BaseModel)


def parse_structured(text: str, schema: type[M]) -> M:
    """Parse `text` as `schema` JSON, tolerating markdown fences and chatter around it."""
    candidates = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    first, last = text.find("{"), text.rfind("}")
    if 0 <= first < last:
        candidates.append(text[first:last + 1])
    problem = "no JSON object found"
    for c in candidates:
        if not c:
            continue
        try:
            return schema.model_validate_json(c)
        except ValidationError as e:
            errs = e.errors()
            if errs and errs[0]["type"] == "json_invalid":
                problem = f"invalid JSON ({errs[0]['msg']})"
                continue
            problem = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in errs[:3])
    snippet = text[:160].replace("\n", " ")
    raise StructuredOutputError(f"output is not a valid {schema.__name__}: {problem};"
                                f" text starts {snippet!r}")
