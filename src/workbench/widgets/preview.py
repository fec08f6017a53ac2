"""Cheap looks at a growing result file: the last few records, without reading it all.

A panel refreshes every second while a 50,000-line output file grows; reading the whole
file each time would cost more than the job. Only the tail is read.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd


def tail_records(path: str | os.PathLike[str], n: int = 5,
                 max_bytes: int = 1 << 20) -> list[dict[str, Any]]:
    """The last `n` complete JSON lines of `path` (a torn last line is skipped)."""
    p = Path(path)
    if n <= 0 or not p.exists():
        return []
    size = p.stat().st_size
    block = 8192
    with open(p, "rb") as f:
        while True:
            start = max(0, size - block)
            f.seek(start)
            data = f.read(size - start)
            lines = data.split(b"\n")
            complete = lines[:-1]  # the piece after the last newline is torn or empty
            if start > 0:
                complete = complete[1:]  # the first piece may start mid-line
            if len(complete) >= n or start == 0 or block >= max_bytes:
                break
            block *= 4
    out: list[dict[str, Any]] = []
    for line in complete[-n:]:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def short(value: Any, width: int = 80) -> str:
    """One cell of a preview table: text as is, anything else as compact JSON, cut."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                             separators=(",", ":"), default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def frame_html(df: pd.DataFrame, *, caption: str = "", css_class: str = "wb-table") -> str:
    """A DataFrame as a small HTML table (no index), escaped, with an optional caption."""
    if df.empty:
        return f"<div class='{css_class}'><i>{html.escape(caption or 'no results yet')}</i></div>"
    body = df.to_html(index=False, escape=True, border=0, classes=[css_class])
    body = body.replace('<tr style="text-align: right;">', '<tr style="text-align: left;">')
    cap = f"<div style='color:#666;font-size:12px'>{html.escape(caption)}</div>" if caption else ""
    return f"<div style='max-width:100%;overflow-x:auto'>{cap}{body}</div>"
