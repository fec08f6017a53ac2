"""The evaluation contract: prompt, JSON schema for structured output, pydantic check.

The schema is written out flat (no $ref) with small integer ranges and a maxLength on
the feedback, because guided decoding (vLLM's guidance backend) follows it token by
token: even a tiny random model then emits JSON that parses. The same rubric also builds
a pydantic model, and nothing is recorded as a result unless it validates.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from workbench.engines.base import ChatRequest, ChatResult
from workbench.phased.spec import LLMSettings, Rubric

SYSTEM_PROMPT = (
    "You are a fair examiner. You read the transcript of a student's spoken answer "
    "(made by speech recognition, so ignore small transcription errors) and score it "
    "against the rubric. Reply with JSON only."
)


class EvaluationError(ValueError):
    """The model's answer was not a valid evaluation (reason in the message)."""


def evaluation_model(rubric: Rubric) -> type[BaseModel]:
    """A pydantic model whose fields are exactly the rubric's criteria and ranges."""
    scores = create_model(  # type: ignore[call-overload]
        "CriterionScores", __config__=ConfigDict(extra="forbid"),
        **{c.name: (int, Field(ge=0, le=c.max_score)) for c in rubric.criteria})
    return create_model(  # type: ignore[call-overload]
        "Evaluation", __config__=ConfigDict(extra="forbid"),
        scores=(scores, ...), overall=(int, Field(ge=0, le=rubric.overall_max)),
        feedback=(str, Field(max_length=rubric.feedback_max_chars)))


def evaluation_schema(rubric: Rubric) -> dict[str, Any]:
    """The JSON schema handed to structured output (flat, bounded)."""
    return {
        "type": "object",
        "properties": {
            "scores": {
                "type": "object",
                "properties": {c.name: {"type": "integer", "minimum": 0, "maximum": c.max_score}
                               for c in rubric.criteria},
                "required": [c.name for c in rubric.criteria],
                "additionalProperties": False,
            },
            "overall": {"type": "integer", "minimum": 0, "maximum": rubric.overall_max},
            "feedback": {"type": "string", "maxLength": rubric.feedback_max_chars},
        },
        "required": ["scores", "overall", "feedback"],
        "additionalProperties": False,
    }


def user_prompt(rubric: Rubric, transcript: str) -> str:
    lines = []
    if rubric.question:
        lines.append(f"Question: {rubric.question}")
    if rubric.instructions:
        lines.append(rubric.instructions)
    lines.append("Rubric:")
    lines += [f"- {c.name} (0-{c.max_score}): {c.description}".rstrip(": ") for c in rubric.criteria]
    lines.append(f"Give overall (0-{rubric.overall_max}) and short feedback "
                 f"(at most {rubric.feedback_max_chars} characters).")
    lines.append(f'Transcript: """{transcript}"""')
    return "\n".join(lines)


def evaluation_request(item_id: str, transcript: str, rubric: Rubric,
                       llm: LLMSettings) -> ChatRequest:
    params: dict[str, Any] = {
        "max_tokens": llm.max_tokens, "temperature": llm.temperature,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "evaluation", "schema": evaluation_schema(rubric)}},
    }
    if llm.seed is not None:
        params["seed"] = llm.seed
    return ChatRequest(custom_id=item_id, model=llm.model, params=params, messages=[
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_prompt(rubric, transcript)},
    ])


def parse_evaluation(result: ChatResult, rubric: Rubric) -> dict[str, Any]:
    """The validated evaluation as a dict, or EvaluationError saying why not."""
    if result.error:
        raise EvaluationError(f"the model returned an error: {result.error}")
    text = result.text
    finish = result.choices[0].finish_reason if result.choices else None
    try:
        return evaluation_model(rubric).model_validate_json(text).model_dump()
    except ValidationError as e:
        why = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'answer'}: {x['msg']}"
                        for x in e.errors()[:5])
        hint = (" (generation stopped at max_tokens: raise llm max_tokens)"
                if finish == "length" else "")
        raise EvaluationError(f"answer is not a valid evaluation{hint}: {why};"
                              f" got {text[:200]!r}") from None
