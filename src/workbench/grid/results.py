"""Grid results, read from the store: the seed's JSON, a DataFrame, a score table.

Everything is derived from the call rows, so it works while the job runs (finished
cells so far), after a cancel (finished cells kept), and after a resume.

The JSON keeps the seed's shape: `comparisons`, each with `results` (per model),
`evaluation` (per model: score, reasoning, strengths, weaknesses) and `overall_summary`,
plus `totals`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.grid import tables
from workbench.grid.spec import CellRef, GridSpec, call_id, judge_call_id
from workbench.grid.tables import CallRow
from workbench.store import JobRow, Store

TEXT_ONLY_NOTE = "text-only model: answered from the speech-to-text transcript, not the media"


def _result_entry(row: CallRow | None, provider: str) -> dict[str, Any]:
    if row is None:
        return {"provider": provider, "status": "pending", "response": None, "error": None}
    entry: dict[str, Any] = {
        "provider": row.provider, "status": "ok" if row.ok else "error",
        "response": row.text if row.ok else None, "error": row.error,
        "error_code": row.error_code, "latency_s": row.latency_s, "wait_s": row.wait_s,
        "attempts": row.attempts, "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens, "total_tokens": row.total_tokens,
        "input": row.input_kind, "mode": row.mode}
    if row.input_kind == "transcript":
        entry["note"] = TEXT_ONLY_NOTE
    return entry


def cell_record(spec: GridSpec, cell: CellRef, rows: dict[str, CallRow]) -> dict[str, Any]:
    """One comparison (the seed's shape) from the rows; `status` ok / failed / pending."""
    media = spec.media_by_id()[cell.media]
    prompt = spec.prompts_by_id()[cell.prompt]
    model_rows = {m.label: rows.get(call_id(cell.id, m.label)) for m in spec.models}
    results = {m.label: _result_entry(model_rows[m.label], m.provider) for m in spec.models}
    judge_row = rows.get(judge_call_id(cell.id))
    answered = [lab for lab, r in model_rows.items() if r is not None and r.ok]
    evaluation: dict[str, Any] = {}
    summary = ""
    judge_info: dict[str, Any] | None = None
    if judge_row is not None:
        judge_info = {"model": judge_row.model, "status": "ok" if judge_row.ok else "error",
                      "error": judge_row.error, "error_code": judge_row.error_code,
                      "latency_s": judge_row.latency_s, "attempts": judge_row.attempts,
                      "total_tokens": judge_row.total_tokens}
        if judge_row.ok and judge_row.parsed:
            evaluation = judge_row.parsed.get("evaluation", {})
            summary = judge_row.parsed.get("overall_summary", "")
        elif not judge_row.ok:
            judge_info["raw_output"] = judge_row.text[:2000]
    if any(r is None for r in model_rows.values()):
        status = "pending"
    elif not answered:
        status, summary = "failed", "no model produced an answer"
    elif spec.judge is not None and judge_row is None:
        status = "pending"
    elif judge_row is not None and not judge_row.ok:
        status = "failed"
        summary = f"judge failed: {judge_row.error}"
    else:
        status = "ok"
    return {"custom_id": cell.id, "status": status, "media": media.name,
            "media_sha256": media.sha256, "prompt_id": prompt.id, "prompt_name": prompt.name,
            "prompt": prompt.text,
            "results": results, "evaluation": evaluation, "overall_summary": summary,
            "judge": judge_info}


def comparisons(store: Store, job: JobRow) -> dict[str, Any]:
    """The seed's result structure for the whole job, as it stands now."""
    tables.ensure(store)
    spec = GridSpec.model_validate(job.spec)
    rows = {r.call_id: r for r in tables.calls(store, job.id)}
    comps = [cell_record(spec, c, rows) for c in spec.cells]
    all_rows = list(rows.values())
    df = results_frame(store, job, rows=rows, spec=spec)
    totals: dict[str, Any] = {
        "combinations": len(comps),
        "completed_combinations": sum(c["status"] == "ok" for c in comps),
        "failed_combinations": sum(c["status"] == "failed" for c in comps),
        "pending_combinations": sum(c["status"] == "pending" for c in comps),
        "calls": len(all_rows), "calls_ok": sum(r.ok for r in all_rows),
        "calls_failed": sum(not r.ok for r in all_rows),
        "prompt_tokens": sum(r.prompt_tokens for r in all_rows),
        "completion_tokens": sum(r.completion_tokens for r in all_rows),
        "total_tokens": sum(r.total_tokens for r in all_rows),
        "mean_score": _means(df, "score"), "mean_latency_s": _means(df, "latency_s"),
    }
    return {"job_id": job.id, "mode": spec.mode, "status": job.status.value,
            "models": [m.label for m in spec.models],
            "judge": spec.judge.label if spec.judge else None,
            "comparisons": comps, "totals": totals}


def _means(df: pd.DataFrame, col: str) -> dict[str, float]:
    if df.empty:
        return {}
    s = df.groupby("model", sort=False)[col].mean().dropna()
    return {k: round(float(v), 4) for k, v in s.items()}


def write_results(store: Store, job: JobRow, path: Path) -> dict[str, Any]:
    """Write results.json (atomically) and return its totals."""
    data = comparisons(store, job)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    tmp.replace(path)
    return data["totals"]


RESULT_COLUMNS = ["cell_id", "media", "prompt_id", "prompt_name", "prompt", "model", "provider", "input",
                  "status", "score", "expected_score", "reasoning", "strengths", "weaknesses", "response",
                  "latency_s", "wait_s", "attempts", "prompt_tokens", "completion_tokens",
                  "total_tokens", "error", "error_code", "mode"]


def results_frame(store: Store, job: JobRow, *, rows: dict[str, CallRow] | None = None,
                  spec: GridSpec | None = None) -> pd.DataFrame:
    """One row per cell × model: score, latency, tokens, error (NaN where not yet known)."""
    tables.ensure(store)
    spec = spec or GridSpec.model_validate(job.spec)
    rows = rows if rows is not None else {r.call_id: r for r in tables.calls(store, job.id)}
    media, prompts = spec.media_by_id(), spec.prompts_by_id()
    out = []
    for cell in spec.cells:
        judge = rows.get(judge_call_id(cell.id))
        evaluation = (judge.parsed or {}).get("evaluation", {}) if judge and judge.ok else {}
        for m in spec.models:
            r = rows.get(call_id(cell.id, m.label))
            v = evaluation.get(m.label) or {}
            out.append({
                "cell_id": cell.id, "media": media[cell.media].name,
                "prompt_id": cell.prompt, "prompt_name": prompts[cell.prompt].name,
                "prompt": prompts[cell.prompt].text,
                "model": m.label, "provider": m.provider,
                "input": r.input_kind if r else ("media" if m.sees_media else "transcript"),
                "status": "pending" if r is None else ("ok" if r.ok else "error"),
                "score": v.get("score"), "expected_score": v.get("expected_score"),
                "reasoning": v.get("reasoning"),
                "strengths": v.get("strengths"), "weaknesses": v.get("weaknesses"),
                "response": r.text if r and r.ok else None,
                "latency_s": r.latency_s if r else None, "wait_s": r.wait_s if r else None,
                "attempts": r.attempts if r else None,
                "prompt_tokens": r.prompt_tokens if r else None,
                "completion_tokens": r.completion_tokens if r else None,
                "total_tokens": r.total_tokens if r else None,
                "error": r.error if r else None, "error_code": r.error_code if r else None,
                "mode": r.mode if r else None})
    df = pd.DataFrame(out, columns=RESULT_COLUMNS)
    for col in ("latency_s", "wait_s", "expected_score"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["score"] = _scores(df["score"].tolist())
    return df


def _scores(values: list[Any]) -> Any:
    """Judge scores as integers (the 1–10 scale) unless some are expected values (G-Eval)."""
    known = [v for v in values if v is not None and v == v]
    whole = all(float(v).is_integer() for v in known)
    return pd.array([None if v is None or v != v else (int(v) if whole else float(v))
                     for v in values], dtype="Int64" if whole else "Float64")


SUMMARY_COLUMNS = ["cell_id", "media", "prompt_id", "prompt_name", "status", "best_model",
                   "best_score", "overall_summary", "judge_error"]


def summaries_frame(data: dict[str, Any]) -> pd.DataFrame:
    """One row per cell: the judge's overall summary, the best-scored model and its score."""
    rows = []
    for c in data["comparisons"]:
        scores = {m: v.get("score") for m, v in (c.get("evaluation") or {}).items()
                  if v.get("score") is not None}
        best = max(scores, key=lambda m: scores[m]) if scores else None
        judge = c.get("judge") or {}
        rows.append({"cell_id": c["custom_id"], "media": c["media"], "prompt_id": c["prompt_id"],
                     "prompt_name": c["prompt_name"], "status": c["status"], "best_model": best,
                     "best_score": scores.get(best) if best else None,
                     "overall_summary": c.get("overall_summary") or "",
                     "judge_error": judge.get("error")})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def score_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean judge score: one row per model, one column per prompt (plus 'all')."""
    if df.empty:
        return pd.DataFrame()
    models = list(dict.fromkeys(df["model"]))
    prompts = list(dict.fromkeys(df["prompt_name"]))
    df = df.assign(score=df["score"].astype("float64"))
    t = df.pivot_table(index="model", columns="prompt_name", values="score", aggfunc="mean",
                       dropna=False)
    t = t.reindex(index=models, columns=prompts)
    t["all"] = df.groupby("model")["score"].mean().reindex(models)
    t.columns.name = "prompt"
    return t
