"""Rubric scoring from a base model's token probabilities, for local base models.

A base model (the embedded Gemma 3 270M) cannot follow "reply with JSON": sampled under
guided decoding it gave every student 0 with empty feedback. What it can do is continue
a scene it has read many times. The prompt lab (issue 12, /tmp/prompt-lab/REPORT.md §2,
rule "T1") measured one such scene that orders answers — good above partial, wrong,
off-topic and rambling ones, on 4 of 4 invented questions:

    In class the teacher asked: "<question>"
    A student said: "<transcript>"
    The teacher said: "That is

One generated token with `logprobs=20`; the judgement is P(positive word) / (P(positive)
+ P(negative)) over the words below (`engines.logprobs.expected_score` with values 1/0).
What it measured, and so what this module claims, is limited:

- it is **one overall judgement**: per-criterion prompts were flat for a 270M model, so
  every criterion gets the same fraction of its top mark (the result says so in `basis`);
- it does not fact-check well (wrong answers score close to good ones: 0.72 vs 0.82);
- the model cannot write truthful feedback (every prompt tried invented facts or copied
  an example), so the feedback is rendered from the judgement, not generated.

Scores are integers on the rubric's scales; the probability-weighted values are kept in
`expected`, with `mass` (how much probability the judgement words held; ~0.26 is usual).
Instruction-tuned models and Gemini keep the JSON evaluation (`phased.evaluation`).
"""

from __future__ import annotations

from typing import Any

from workbench.engines.base import ChatRequest, ChatResult
from workbench.engines.logprobs import expected_score, top_of
from workbench.phased.evaluation import EvaluationError
from workbench.phased.spec import LLMSettings, Rubric

POSITIVE = ("correct", "right", "good", "great", "excellent", "true", "exactly", "perfect")
NEGATIVE = ("wrong", "incorrect", "not", "false", "nonsense", "off", "irrelevant", "bad")
WORDS: dict[str, float] = {**{w: 1.0 for w in POSITIVE}, **{w: 0.0 for w in NEGATIVE}}
TEMPLATE = ('In class the teacher asked: "{question}"\nA student said: "{answer}"\n'
            'The teacher said: "That is')
TOP_LOGPROBS = 20
BASIS = ("one overall judgement from the model's token probabilities, applied to every"
         " criterion (a 270M base model cannot mark criteria apart)")


def prompt(rubric: Rubric, transcript: str) -> str:
    question = rubric.question or "Tell us what you learned."
    return TEMPLATE.format(question=question, answer=" ".join(transcript.split()))


def request(item_id: str, transcript: str, rubric: Rubric, llm: LLMSettings) -> ChatRequest:
    """One completion per recording: the judgement is the next word's distribution."""
    return ChatRequest(custom_id=item_id, endpoint="completion", model=llm.model,
                       prompt=prompt(rubric, transcript),
                       params={"max_tokens": 1, "temperature": 0.0, "logprobs": TOP_LOGPROBS})


def evaluation(res: ChatResult, rubric: Rubric) -> dict[str, Any]:
    """The evaluation (the JSON one's keys, plus `expected`, `mass`, `basis`) from one result."""
    if res.error or not res.choices:
        raise EvaluationError(f"the model returned an error: {res.error or 'no answer'}")
    top = top_of(res.choices[0].logprobs)
    if not top:
        raise EvaluationError("the engine returned no log-probabilities (scoring='logprobs')")
    s = expected_score(top, WORDS)
    if s.value is None:
        top5 = ", ".join(repr(t.token) for t in top[:5])
        raise EvaluationError(f"no judgement word among the model's likely next words ({top5})")
    p = s.value
    return {
        "scores": {c.name: int(round(p * c.max_score)) for c in rubric.criteria},
        "overall": int(round(p * rubric.overall_max)),
        "feedback": f"confidence the answer is good: {p:.2f}"[:rubric.feedback_max_chars],
        "expected": {c.name: round(p * c.max_score, 3) for c in rubric.criteria},
        "overall_expected": round(p * rubric.overall_max, 3),
        "mass": round(s.mass, 3), "scoring": "logprobs", "basis": BASIS,
    }
