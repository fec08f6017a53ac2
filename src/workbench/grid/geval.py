"""The grid judge for a local base model: a 1–10 rating per answer from token probabilities.

A base model (the embedded Gemma 3 270M) asked for the judge's JSON gave 10 to gibberish
and wrote summaries full of JSON debris. What it can do is continue a page of rated
examples. The prompt lab (issue 12, /tmp/prompt-lab/REPORT.md §3) measured the page below
(10 invented examples over 2 invented clips): a sensible answer beat the wrong, gibberish
and empty ones in 17 of 18 cells, and gibberish/empty answers land ~2 points below
sensible ones. It does **not** catch a fluent wrong answer (6.26 vs 6.41): say so.

Each answer is one completion ending in "Rating (1-10): " (the trailing space is the
"▁" token Gemma writes before a digit); the rating is the expected value over the digit
tokens of the next token's top-20 (G-Eval). Gemma writes "10" as "1","0", so P("1")
mixes 1 and 10: a second request ending in "1" splits it (`engines.logprobs.digits_score`:
P(10) = P("1")·q with q = P("0") / (P("0") + P(an end token))). It shares the first
request's prefix, so prefix caching makes it cheap.

The verdict keeps the judge's shape: `score` (an integer, the rounded rating),
`expected_score`, a `reasoning` that says what the number rests on (model-written
comments copied the examples, so none are asked for), empty strengths/weaknesses. The
cell's `overall_summary` is composed from the scores, best first — never model text.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from workbench.engines.base import Outcome
from workbench.engines.logprobs import Score, digits_score
from workbench.grid.callers import CallInput
from workbench.grid.spec import CellRef, ModelSpec, call_id, judge_call_id

HEAD = ("Ratings of answers to tasks about a recording: 10 = correct, complete and clear;"
        " 5 = partly right; 1 = empty, gibberish or unrelated.\n\n")
CLIP_A = ("Good evening, here is the news. The city library will close for repairs next Monday"
          " and reopen in June.")
CLIP_B = "Welcome to the match. The home team scored twice in the first half and the visitors once."
#: (transcript, task, answer, rating) — all invented
EXAMPLES: list[tuple[str, str, str, int]] = [
    (CLIP_A, "Summarise the clip in one sentence.",
     "The city library closes for repairs on Monday and reopens in June.", 10),
    (CLIP_B, "What is the main topic of the clip?", "", 1),
    (CLIP_A, "What is the main topic of the clip?", "The clip is about a new football stadium.", 2),
    (CLIP_B, "Summarise the clip in one sentence.",
     "The home team leads two to one after the first half.", 9),
    (CLIP_A, "What is the main topic of the clip?", 'kf ,}, "" zzq ]] 7', 1),
    (CLIP_B, "What is the main topic of the clip?", "A football match.", 8),
    (CLIP_A, "Summarise the clip in one sentence.", "The library will close.", 5),
    (CLIP_B, "Summarise the clip in one sentence.", '{"a": ,}, ]] qq 0', 1),
    (CLIP_B, "What is the main topic of the clip?", "A recipe for pancakes.", 2),
    (CLIP_A, "What is the main topic of the clip?", "The library closing for repairs.", 9),
]
CAVEAT = "a 270M base model; it does not catch fluent wrong answers"


def _show(answer: str) -> str:
    return answer if answer.strip() else "(no answer)"


def _block(transcript: str, task: str, answer: str, rating: int | None = None) -> str:
    return (f"Transcript: {transcript}\nTask: {task}\nAnswer: {_show(answer)}\nRating (1-10): "
            + (f"{rating}\n\n" if rating is not None else ""))


def answer_prompt(task: str, transcript: str, answer: str) -> str:
    """The rated page, then this answer; its rating is the next token."""
    return HEAD + "".join(_block(*e) for e in EXAMPLES) + _block(
        " ".join(transcript.split())[:1500], task, " ".join(answer.split())[:800])


def rating(first: list[list[Any]], after_one: list[list[Any]]) -> Score:
    """The expected 1–10 rating (`engines.logprobs.digits_score`, the '1'/'10' split)."""
    return digits_score([(str(t), float(lp)) for t, lp in first], 1, 10,
                        [(str(t), float(lp)) for t, lp in after_one])


class Runner(Protocol):
    """What this module uses of the grid runner."""

    rows: dict[str, Any]
    transcripts: dict[str, str]

    async def send(self, model: ModelSpec, ci: CallInput) -> Outcome: ...


def verdict(value: float, mass: float, dist: dict[str, float]) -> dict[str, Any]:
    likely = ", ".join(f"P({k})={v:.2f}" for k, v in sorted(dist.items(), key=lambda kv: -kv[1])[:3])
    return {"score": int(round(value)), "expected_score": round(value, 2),
            "reasoning": f"expected rating {value:.1f}/10 from the judge's token probabilities"
                         f" ({likely}; digits held {mass:.0%}); {CAVEAT}",
            "strengths": [], "weaknesses": []}


def summary(scores: dict[str, float]) -> str:
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    text = f"Best: {ranked[0][0]} ({ranked[0][1]:.1f}/10)"
    if len(ranked) > 1:
        text += ", then " + ", ".join(f"{m} ({s:.1f})" for m, s in ranked[1:])
    return text + ". Expected ratings from the local judge's token probabilities; it writes no reasons."


async def judge_cell(r: Runner, cell: CellRef, judge: ModelSpec, task: str, media_name: str,
                     labels: dict[str, str]) -> Outcome:
    """Rate each answer of `cell` (two scoring calls each) as one judge outcome keyed by label."""
    transcript = r.transcripts.get(cell.media) or f"(the media file {media_name})"
    t0 = time.monotonic()
    total = Outcome()
    parsed: dict[str, Any] = {}
    scores: dict[str, float] = {}
    errors = []
    for lab, model in labels.items():
        prompt = answer_prompt(task, transcript, r.rows[call_id(cell.id, model)].text)
        key = f"{judge_call_id(cell.id)}:{lab}"
        outs = [await r.send(judge, CallInput(key, prompt, scoring=True)),
                await r.send(judge, CallInput(f"{key}:1", prompt + "1", scoring=True))]
        for out in outs:
            total.attempts += out.attempts
            total.prompt_tokens += out.prompt_tokens
            total.completion_tokens += out.completion_tokens
        bad = next((o for o in outs if not o.ok), None)
        got = None if bad else rating((outs[0].parsed or {}).get("top", []),
                                      (outs[1].parsed or {}).get("top", []))
        if got is None or got.value is None:
            errors.append(f"{lab}: {bad.error if bad else 'no digit among its likely next tokens'}")
            continue
        parsed[lab] = verdict(got.value, got.mass, got.probs)
        scores[model] = round(got.value, 2)
    total.total_tokens = total.prompt_tokens + total.completion_tokens
    total.latency_s = round(time.monotonic() - t0, 4)
    if not parsed:
        total.error, total.error_code = "; ".join(errors) or "no answers", "parse"
        return total
    parsed["overall_summary"] = summary(scores)
    total.parsed, total.text, total.finish_reason = parsed, json.dumps(parsed), "stop"
    return total
