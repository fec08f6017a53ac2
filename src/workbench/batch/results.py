"""Read a batch job's output and error files into a DataFrame, in input order; read the
answers' token probabilities back as expected scores (`expected_scores`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from workbench.engines import logprobs as lp
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


def line_steps(line: dict[str, Any]) -> list[lp.TokenLogprob] | None:
    """The first choice's token steps of one output line (either OpenAI shape), or None."""
    body = ((line.get("response") or {}).get("body") or {})
    choices = body.get("choices") or []
    if not choices or not choices[0].get("logprobs"):
        return None
    endpoint = "chat" if body.get("object") == "chat.completion" else "completions"
    return lp.from_openai(choices[0]["logprobs"], endpoint)


def expected_scores(job_dir: Path, labels: Any, *, question: str | None = None,
                    step: int | None = 0) -> pd.DataFrame:
    """Per request: Σ value·p over `labels` among a step's alternatives (`BatchJob.expected_scores`)."""
    suffix = None if question is None else f":{question}"
    rows = []
    for line in ResultLog(job_dir / "output.jsonl").records():
        cid = str(line.get("custom_id"))
        if suffix is not None and not cid.endswith(suffix):
            continue
        steps = line_steps(line) or []
        chosen = steps[step] if step is not None and step < len(steps) else None
        if step is None:
            chosen = next((s for s in steps
                           if lp.expected_score(s.top_logprobs, labels).value is not None), None)
        sc = lp.expected_score(chosen.top_logprobs if chosen else [], labels)
        rows.append({"custom_id": cid, "id": cid[: -len(suffix)] if suffix else cid,
                     "score": sc.value, "mass": round(sc.mass, 4),
                     "top": max(sc.probs, key=sc.probs.get) if sc.probs else None})
    for line in ResultLog(job_dir / "errors.jsonl").records():
        cid = str(line.get("custom_id"))
        if suffix is None or cid.endswith(suffix):
            rows.append({"custom_id": cid, "id": cid[: -len(suffix)] if suffix else cid,
                         "score": None, "mass": 0.0, "top": None})
    df = pd.DataFrame(rows, columns=["custom_id", "id", "score", "mass", "top"])
    if len(df):
        order = input_order(job_dir / "input.jsonl")
        df["_order"] = df["custom_id"].map(order)
        df = df.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    df["score"] = df["score"].astype("float64")
    return df


def results(store: Store, job: JobRow) -> pd.DataFrame:
    return read_dir(store.job_dir(job.id))
