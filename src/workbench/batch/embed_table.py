"""`wb.batch.embed(df, column="summary")`: a table's texts → vectors, in input order.

Writes one `/v1/embeddings` line per row (custom_id `row-<i>`), submits it as a batch
job like any other (exactly-once, resumable, on the dashboard), waits, and reads the
vectors back from the output file in input order. A row whose line failed (an empty
text, one over the model's context) gets a row of NaN, and a warning says which rows
and why, so one bad row does not cost the table.
"""

from __future__ import annotations

import base64
import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.batch.embed_format import EMBEDDINGS_URL
from workbench.store import ResultLog


def write_lines(texts: Sequence[Any], dest: Path, model: str | None,
                dimensions: int | None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            body: dict[str, Any] = {"input": "" if t is None or t != t else str(t)}
            if model:
                body["model"] = model
            if dimensions is not None:
                body["dimensions"] = int(dimensions)
            f.write(json.dumps({"custom_id": f"row-{i}", "method": "POST", "url": EMBEDDINGS_URL,
                                "body": body}, ensure_ascii=False) + "\n")


def decode(item: dict[str, Any]) -> np.ndarray:
    """One `data` item's vector (float list or OpenAI base64 of float32)."""
    v = item["embedding"]
    if isinstance(v, str):
        return np.frombuffer(base64.b64decode(v), dtype="<f4").astype(np.float32)
    return np.asarray(v, dtype=np.float32)


def vectors(job_dir: Path, n: int) -> tuple[np.ndarray, dict[int, str]]:
    """Row i's first vector at [i]; failed rows NaN, with their messages by row."""
    found: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for rec in ResultLog(job_dir / "output.jsonl").records():
        body = (rec.get("response") or {}).get("body") or {}
        found[int(rec["custom_id"].removeprefix("row-"))] = decode(body["data"][0])
    for rec in ResultLog(job_dir / "errors.jsonl").records():
        errors[int(rec["custom_id"].removeprefix("row-"))] = (rec.get("error") or {}).get(
            "message", "failed")
    dims = len(next(iter(found.values()))) if found else 0
    out = np.full((n, dims), np.nan, dtype=np.float32)
    for i, v in found.items():
        out[i] = v
    return out, errors


def embed(api: Any, data: pd.DataFrame | Sequence[str] | pd.Series, column: str | None,
          *, model: str | None, dimensions: int | None, timeout: float | None,
          **submit: Any) -> tuple[np.ndarray, Any]:
    """`api` is a `BatchAPI` (typed loosely: batch.api imports this module)."""
    if isinstance(data, pd.DataFrame):
        if column is None:
            raise ValueError("embedding a DataFrame needs column=... (the text column)")
        if column not in data.columns:
            raise KeyError(f"column {column!r} is not in the DataFrame (columns: "
                           f"{list(data.columns)})")
        texts = data[column].tolist()
    else:
        texts = list(data)
    if not texts:
        raise ValueError("nothing to embed: the input has no rows")
    dest = api.wb.root / "inputs" / f"embed-{time.time_ns():x}.jsonl"
    write_lines(texts, dest, None, dimensions)
    job = api.submit(dest, model, **submit)
    job.wait(timeout=timeout, progress=False)
    vecs, errors = vectors(job.dir, len(texts))
    if errors:
        first = min(errors)
        warnings.warn(f"{len(errors)} of {len(texts)} rows were not embedded (NaN rows); "
                      f"row {first}: {errors[first]}", stacklevel=3)
    return vecs, job
