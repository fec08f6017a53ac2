"""JSON lines, fast: orjson on the per-request path (input lines in, result lines out).

The batch runner reads one input line and writes one result line per request; with the
standard library that is ~10-25 µs a line, with orjson 2-4 µs. The output is the same
JSON (UTF-8, no spaces, non-ASCII kept). Two edges fall back to the standard library so
no line is ever lost or read differently: values orjson refuses to write (integers
beyond 64 bits) and lines it refuses to read (`NaN`/`Infinity`, which older files
written by `json.dumps` may hold: skipping such a line would make resume send its
request again).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def dumps_line(record: Any) -> bytes:
    """One record as one UTF-8 JSON line, newline included."""
    try:
        return orjson.dumps(record, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: e.g. an int beyond 64 bits
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def loads(raw: bytes | str) -> Any:
    """Parse one JSON document (a line); ValueError if it is not JSON."""
    try:
        return orjson.loads(raw)
    except ValueError:  # orjson.JSONDecodeError: NaN/Infinity literals json accepts
        return json.loads(raw)
