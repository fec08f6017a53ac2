"""Cheap looks at a growing result file: the last few records, without reading it all.

A panel refreshes every second while a 50,000-line output file grows; reading the whole
file each time would cost more than the job. Only the tail is read.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.widgets import format as fmt


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


#: escapes a model wrote literally ("\\n\\n" inside its JSON string): shown as spaces
LITERAL_ESCAPES = re.compile(r"(?:\\[nrt])+")


def short(value: Any, width: int = 80) -> str:
    """One cell of a preview table: text as is, anything else as compact JSON, cut.

    Line breaks, real or written out as backslash-n by a model, become single spaces.
    Numbers read as numbers: numpy's (from a DataFrame) too, not as quoted JSON strings.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    text = " ".join(LITERAL_ESCAPES.sub(" ", text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table_html(df: pd.DataFrame, css_class: str = "wb-table",
               cell_html: dict[str, Any] | None = None) -> str:
    """A DataFrame as an HTML table in the theme's colours: no index, text escaped, every
    header aligned like its column (numbers right, text left), long text wrapping.

    `cell_html` maps a column to a function giving a cell's markup (e.g. a coloured pill).
    """
    cell_html = cell_html or {}
    numeric = {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])
               and not pd.api.types.is_bool_dtype(df[c])}
    pad = "padding:2px 10px 2px 0"

    def align(c: Any) -> str:
        return "right" if c in numeric else "left"

    head = "".join(f"<th style='text-align:{align(c)};{pad};color:{fmt.MUTED};font-weight:600;"
                   f"border-bottom:1px solid {fmt.BORDER};white-space:nowrap'>"
                   f"{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for c, v in zip(df.columns, rec, strict=True):
            text = "" if v is None or (isinstance(v, float) and v != v) else v
            inner = cell_html[c](text) if c in cell_html else html.escape(short(text, 400))
            cells.append(f"<td style='text-align:{align(c)};{pad};vertical-align:top;"
                         f"color:{fmt.TEXT};overflow-wrap:anywhere'>{inner}</td>")
        rows.append(f"<tr style='border-bottom:1px solid {fmt.BORDER}'>{''.join(cells)}</tr>")
    return (f"<table class='{css_class}' style='border-collapse:collapse;font-size:12px;"
            f"max-width:100%'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
            f"</table>")


def frame_html(df: pd.DataFrame, *, caption: str = "", css_class: str = "wb-table") -> str:
    """A DataFrame as a small HTML table (no index), escaped, with an optional caption."""
    if df.empty:
        return (f"<div class='{css_class}' style='color:{fmt.MUTED}'><i>"
                f"{html.escape(caption or 'no results yet')}</i></div>")
    cap = (f"<div style='color:{fmt.MUTED};font-size:12px'>{html.escape(caption)}</div>"
           if caption else "")
    return f"<div style='max-width:100%;overflow-x:auto'>{cap}{table_html(df, css_class)}</div>"
