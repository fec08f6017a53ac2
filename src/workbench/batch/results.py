"""Read a batch job's output and error files into a DataFrame, in input order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from workbench.store import JobRow, ResultLog, Store

COLUMNS = ["custom_id", "content", "finish_reason", "prompt_tokens", "completion_tokens", "error"]


def flatten(line: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI output/error line → one flat row."""
    resp = line.get("response") or {}
    body = resp.get("body") or {}
    err = line.get("error")
    choices = body.get("choices") or [{}]
    first = choices[0]
    content = (first.get("message") or {}).get("content") if "message" in first else first.get("text")
    usage = body.get("usage") or {}
    return {"custom_id": line.get("custom_id"), "content": content,
            "finish_reason": first.get("finish_reason"),
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "error": (err or {}).get("message") if err else None}


def input_order(path: Path) -> dict[str, int]:
    import json

    order: dict[str, int] = {}
    if path.exists():
        with open(path, "rb") as f:
            for i, raw in enumerate(f):
                if raw.strip():
                    order[json.loads(raw)["custom_id"]] = i
    return order


def read_dir(job_dir: Path, with_order: bool = True) -> pd.DataFrame:
    rows = [flatten(r) for log in ("output.jsonl", "errors.jsonl")
            for r in ResultLog(job_dir / log).records()]
    df = pd.DataFrame(rows, columns=COLUMNS)
    if with_order and len(df):
        order = input_order(job_dir / "input.jsonl")
        df["_order"] = df["custom_id"].map(order)
        df = df.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    for c in ("prompt_tokens", "completion_tokens"):
        df[c] = df[c].astype("Int64")
    return df


def results(store: Store, job: JobRow) -> pd.DataFrame:
    return read_dir(store.job_dir(job.id))
