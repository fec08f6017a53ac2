"""The judge: one call per cell over the models' answers → scores and an overall summary.

Answers are shown anonymised (A, B, C … in an order shuffled per cell, fixed by the cell
id so a resumed job sends the same prompt): a judge that sees model names or always sees
the same model first is measurably biased. The schema has one required property per
label, so structured output (Gemini `response_schema`, vLLM guided decoding) cannot
omit an answer; strings carry `maxLength` so guided decoding on CPU stays bounded.
"""

from __future__ import annotations

import random
import string
from typing import Any

from pydantic import BaseModel, Field, create_model

JUDGE_SYSTEM = (
    "You are an impartial expert evaluator. You compare answers that different AI models "
    "gave to the same task about the same media. Judge accuracy, completeness, relevance "
    "and clarity. Do not favour an answer for its length or position.")


class Verdict(BaseModel):
    """The judge's view of one answer."""

    score: int = Field(ge=1, le=10, description="1 = useless, 10 = excellent")
    reasoning: str = Field(max_length=800)
    strengths: list[str] = Field(max_length=5)
    weaknesses: list[str] = Field(max_length=5)


def labels_for(cell_id: str, models: list[str]) -> dict[str, str]:
    """label → model label, shuffled deterministically per cell."""
    order = list(models)
    random.Random(cell_id).shuffle(order)
    return {string.ascii_uppercase[i]: m for i, m in enumerate(order)}


def schema_for(labels: list[str]) -> type[BaseModel]:
    fields: dict[str, Any] = {lab: (Verdict, ...) for lab in labels}
    fields["overall_summary"] = (str, Field(max_length=1500))
    return create_model("Evaluation", **fields)


def json_schema_for(labels: list[str], text_chars: int = 300) -> dict[str, Any]:
    """The same schema, inlined (no $ref), for OpenAI-style `response_format`.

    `text_chars` bounds the reasoning (phrases get a quarter, the summary a third more):
    guided decoding may fill a string up to its bound, so the bound is the output budget.
    """
    phrase = max(8, text_chars // 4)
    verdict = {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": 1, "maximum": 10},
            "reasoning": {"type": "string", "maxLength": text_chars},
            "strengths": {"type": "array", "items": {"type": "string", "maxLength": phrase},
                          "maxItems": 3},
            "weaknesses": {"type": "array", "items": {"type": "string", "maxLength": phrase},
                           "maxItems": 3},
        },
        "required": ["score", "reasoning", "strengths", "weaknesses"],
        "additionalProperties": False,
    }
    props: dict[str, Any] = {lab: verdict for lab in labels}
    props["overall_summary"] = {"type": "string", "maxLength": text_chars * 4 // 3}
    return {"type": "object", "properties": props, "required": [*labels, "overall_summary"],
            "additionalProperties": False}


def judge_prompt(task: str, media_name: str, answers: dict[str, str],
                 transcript: str | None = None) -> str:
    """The judge's user message. `answers` maps label → answer text."""
    parts = [f"Several AI models were given the media file {media_name!r} and this task:",
             f"<task>\n{task}\n</task>"]
    if transcript is not None:
        parts.append("Speech-to-text transcript of the media (may contain recognition errors):"
                     f"\n<transcript>\n{transcript}\n</transcript>")
    parts.append("Their answers, anonymised:")
    parts += [f'<answer id="{lab}">\n{text}\n</answer>' for lab, text in answers.items()]
    labs = ", ".join(answers)
    parts.append(
        f"For each answer ({labs}) give a score from 1 to 10, a short reasoning, and its main "
        "strengths and weaknesses as short phrases. Then write overall_summary: which answer "
        "is best and why, in a few sentences. Reply with JSON only, matching the schema.")
    return "\n\n".join(parts)


def unmask(parsed: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """Judge output keyed by label → {"evaluation": {model: verdict}, "overall_summary", "labels"}."""
    evaluation = {model: parsed[lab] for lab, model in labels.items() if lab in parsed}
    return {"evaluation": evaluation, "overall_summary": parsed.get("overall_summary", ""),
            "labels": labels}
