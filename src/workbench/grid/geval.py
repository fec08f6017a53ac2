"""The grid judge for a local base model: a rating per answer from token probabilities.

A base model (the embedded Gemma 3 270M) asked for the judge's JSON gives 10 to
gibberish and writes summaries full of JSON debris. What it can do is continue a page of
rated examples: each answer is one few-shot completion ending in "Verdict:", and its score
is the expected value over the verdict words that may come next (one generated token,
`logprobs=20`, `engines.logprobs.expected_score`), on the judge's 1–10 scale.

The verdict keeps the judge's shape: `score` (an integer, the rounded expected value),
`expected_score`, a `reasoning` that says what the number rests on (the model writes no
reasons), empty strengths/weaknesses. The cell's `overall_summary` is composed from the
scores (best first), so it never carries model debris. Every example is invented.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from workbench.engines.base import Outcome
from workbench.grid.callers import CallInput
from workbench.grid.spec import CellRef, ModelSpec, call_id, judge_call_id

#: verdict word → score on the judge's 1–10 scale
VERDICTS: dict[str, float] = {"good": 10.0, "partial": 5.0, "bad": 1.0}
EXAMPLE_CLIPS = [
    "Good evening, here is the news. The city library will close for repairs next Monday and"
    " reopen in June.",
    "Welcome to the match. The home team scored twice in the first half and the visitors once.",
]
#: (clip index, task, answer, verdict) — invented
EXAMPLES: list[tuple[int, str, str, str]] = [
    (0, "Summarise the clip in one sentence.",
     "The city library closes for repairs on Monday and reopens in June.", "good"),
    (1, "What is the main topic of the clip?", "", "bad"),
    (0, "What is the main topic of the clip?", "The clip is about a new football stadium.", "bad"),
    (1, "Summarise the clip in one sentence.",
     "The home team leads two to one after the first half.", "good"),
    (0, "What is the main topic of the clip?", 'kf ,}, "" zzq ]] 7', "bad"),
    (1, "What is the main topic of the clip?", "A football match.", "good"),
    (0, "Summarise the clip in one sentence.", "The library will close.", "partial"),
    (1, "Summarise the clip in one sentence.", '{"a": ,}, ]] qq 0', "bad"),
    (1, "What is the main topic of the clip?", "A recipe for pancakes.", "bad"),
    (0, "What is the main topic of the clip?", "The library closing for repairs.", "good"),
]
HEAD = ("Verdicts on answers to tasks about a recording: good = correct, complete and clear;"
        " partial = partly right; bad = empty, gibberish or unrelated.\n\n")
TOP_LOGPROBS = 20


def _show(answer: str) -> str:
    text = " ".join(answer.split())
    return text[:600] if text else "(no answer)"


def _block(context: str, task: str, answer: str, verdict: str | None = None) -> str:
    return (f"Transcript: {' '.join(context.split())[:1200]}\nTask: {task}\nAnswer: "
            f"{_show(answer)}\nVerdict:" + (f" {verdict}\n\n" if verdict else ""))


def answer_prompt(task: str, context: str, answer: str) -> str:
    """The few-shot page, then this answer to be rated (its verdict is the next word)."""
    shots = "".join(_block(EXAMPLE_CLIPS[c], t, a, v) for c, t, a, v in EXAMPLES)
    return HEAD + shots + _block(context, task, answer)


class Runner(Protocol):
    """What this module uses of the grid runner."""

    rows: dict[str, Any]
    transcripts: dict[str, str]

    async def send(self, model: ModelSpec, ci: CallInput) -> Outcome: ...


def verdict(out: Outcome) -> dict[str, Any] | None:
    """The judge's view of one answer from its scoring call, or None if it gave no verdict."""
    got = out.parsed or {}
    if not out.ok or got.get("value") is None:
        return None
    value = float(got["value"])
    probs = ", ".join(f"P({k})={v:.2f}" for k, v in sorted(got.get("probs", {}).items(),
                                                           key=lambda kv: -kv[1]))
    return {"score": int(round(value)), "expected_score": round(value, 2),
            "reasoning": f"expected rating {value:.1f}/10 from the judge's token probabilities"
                         f" ({probs}; verdict words held {got.get('mass', 0):.0%})",
            "strengths": [], "weaknesses": []}


def summary(scores: dict[str, float]) -> str:
    if not scores:
        return "the judge gave no verdict"
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    best, rest = ranked[0], ranked[1:]
    text = f"Best: {best[0]} ({best[1]:.1f}/10)"
    if rest:
        text += ", then " + ", ".join(f"{m} ({s:.1f})" for m, s in rest)
    return text + ". Expected ratings from the local judge's token probabilities (no reasons written)."


async def judge_cell(r: Runner, cell: CellRef, judge: ModelSpec, task: str, media_name: str,
                     labels: dict[str, str]) -> Outcome:
    """Rate each answer of `cell` (one scoring call each), as one judge outcome keyed by label."""
    context = r.transcripts.get(cell.media) or f"(the media file {media_name!r})"
    t0 = time.monotonic()
    parsed: dict[str, Any] = {}
    total = Outcome(attempts=0)
    scores: dict[str, float] = {}
    errors = []
    for lab, model in labels.items():
        answer = r.rows[call_id(cell.id, model)].text
        ci = CallInput(f"{judge_call_id(cell.id)}:{lab}", answer_prompt(task, context, answer),
                       score_labels=VERDICTS)
        out = await r.send(judge, ci)
        total.attempts += out.attempts
        total.prompt_tokens += out.prompt_tokens
        total.completion_tokens += out.completion_tokens
        v = verdict(out)
        if v is None:
            errors.append(f"{lab}: {out.error or 'no verdict word among its likely next tokens'}")
            continue
        parsed[lab] = v
        scores[model] = v["expected_score"]
    total.total_tokens = total.prompt_tokens + total.completion_tokens
    total.latency_s = round(time.monotonic() - t0, 4)
    if errors and not parsed:
        total.error, total.error_code = "; ".join(errors), "parse"
        return total
    parsed["overall_summary"] = summary(scores)
    total.parsed = parsed
    total.text = json.dumps(parsed)
    total.finish_reason = "stop"
    return total
