"""`job.report("grid.html")`: the seed's cards in one self-contained HTML file.

One section per comparison (media, prompt, overall summary) with one card per model:
score, latency, tokens, strengths and weaknesses, the answer folded away, and errors in
plain sight. A score table on top. No scripts, no external CSS: it opens anywhere and
can be mailed.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import pandas as pd

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1f2328;background:#f6f8fa}
h1{font-size:1.5rem}h2{font-size:1.1rem;margin:0 0 .3rem}
.cmp{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:1rem;margin:1rem 0}
.meta{color:#57606a;font-size:.9rem}.prompt{white-space:pre-wrap;background:#f6f8fa;padding:.5rem;border-radius:6px}
.summary{margin:.6rem 0;padding:.5rem;border-left:4px solid #0969da;background:#ddf4ff}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:.8rem}
.card{border:1px solid #d0d7de;border-radius:8px;padding:.7rem;background:#fff}
.card.best{border:2px solid #1a7f37}.card.err{border-color:#cf222e;background:#fff5f5}
.score{float:right;font-size:1.4rem;font-weight:700}.s-hi{color:#1a7f37}.s-mid{color:#9a6700}.s-lo{color:#cf222e}
.kv{color:#57606a;font-size:.85rem}ul{margin:.2rem 0 .4rem 1.1rem;padding:0}
.pos li::marker{content:"+ ";color:#1a7f37}.neg li::marker{content:"− ";color:#cf222e}
.error{color:#cf222e;white-space:pre-wrap}.answer{white-space:pre-wrap;font-size:.9rem}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}.badge{font-size:.75rem;padding:.1rem .4rem;border-radius:1rem;background:#eaeef2}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _score_class(score: Any) -> str:
    if score is None:
        return ""
    return "s-hi" if score >= 8 else "s-mid" if score >= 5 else "s-lo"


def _card(model: str, res: dict[str, Any], verdict: dict[str, Any], best: bool) -> str:
    score = verdict.get("score")
    cls = "card" + (" err" if res.get("status") == "error" else "") + (" best" if best else "")
    parts = [f'<div class="{cls}">']
    if score is not None:
        parts.append(f'<span class="score {_score_class(score)}">{_e(score)}/10</span>')
    parts.append(f"<h2>{_e(model)}</h2>")
    kv = [res.get("provider", "")]
    if res.get("latency_s") is not None:
        kv.append(f"{res['latency_s']:.2f} s")
    if res.get("total_tokens"):
        kv.append(f"{res['total_tokens']} tokens")
    if res.get("attempts", 0) and res["attempts"] > 1:
        kv.append(f"{res['attempts']} attempts")
    parts.append(f'<div class="kv">{_e(" · ".join(k for k in kv if k))}</div>')
    if res.get("note"):
        parts.append(f'<div class="kv"><span class="badge">{_e(res["note"])}</span></div>')
    if res.get("status") == "error":
        parts.append(f'<div class="error">{_e(res.get("error"))}</div>')
    elif res.get("status") == "pending":
        parts.append('<div class="kv">not run yet</div>')
    if verdict.get("reasoning"):
        parts.append(f"<p>{_e(verdict['reasoning'])}</p>")
    for key, css in (("strengths", "pos"), ("weaknesses", "neg")):
        items = verdict.get(key) or []
        if items:
            lis = "".join(f"<li>{_e(x)}</li>" for x in items)
            parts.append(f'<div class="kv">{key}</div><ul class="{css}">{lis}</ul>')
    if res.get("response"):
        parts.append(f'<details><summary>answer</summary><div class="answer">'
                     f'{_e(res["response"])}</div></details>')
    parts.append("</div>")
    return "".join(parts)


def _comparison(c: dict[str, Any]) -> str:
    ev = c.get("evaluation") or {}
    scores = {m: v.get("score") for m, v in ev.items() if v.get("score") is not None}
    top = max(scores.values()) if scores else None
    cards = "".join(_card(m, res, ev.get(m, {}), top is not None and scores.get(m) == top)
                    for m, res in c["results"].items())
    summary = c.get("overall_summary") or ""
    judge = c.get("judge") or {}
    status = c.get("status", "")
    return (f'<section class="cmp"><h2>{_e(c["media"])} — {_e(c.get("prompt_name") or c["prompt_id"])}'
            f' <span class="badge">{_e(status)}</span></h2>'
            f'<div class="prompt">{_e(c["prompt"])}</div>'
            + (f'<div class="summary"><b>Summary</b> ({_e(judge.get("model", "judge"))}): '
               f"{_e(summary)}</div>" if summary else "")
            + f'<div class="cards">{cards}</div></section>')


def render(data: dict[str, Any], scores: pd.DataFrame) -> str:
    t = data["totals"]
    head = (f"<h1>Comparison grid {_e(data['job_id'])}</h1>"
            f'<p class="meta">{t["combinations"]} combinations · {len(data["models"])} models'
            f' · judge {_e(data.get("judge") or "none")} · mode {_e(data["mode"])} · status'
            f' {_e(data["status"])} · {t["calls_ok"]} calls ok, {t["calls_failed"]} failed ·'
            f' {t["total_tokens"]} tokens</p>')
    table = ""
    if not scores.empty:
        table = "<h2>Mean score per model and prompt</h2>" + scores.round(2).to_html(
            na_rep="–", border=0, escape=True)
    body = "".join(_comparison(c) for c in data["comparisons"])
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Grid '
            f'{_e(data["job_id"])}</title><style>{CSS}</style></head><body>{head}{table}'
            f"{body}</body></html>")


def write_report(data: dict[str, Any], scores: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(render(data, scores), encoding="utf-8")
    return dest
