"""Rubric scoring from a base model's token probabilities (G-Eval), for local base models.

A base model (the embedded Gemma 3 270M) cannot follow "reply with JSON": sampled under
guided decoding it gives every student 0 with empty feedback. What it can do is continue
a document it has seen the like of. So each criterion is one few-shot completion — a
teacher's marking sheet ending in "<criterion> (<description>):" — and the score is read
from the probabilities of the verdict words that can come next (one generated token,
`logprobs=20`), as an expected value:

    score = max_score × Σ value(word) · P(word) / Σ P(word)

over VERDICTS (see `engines.logprobs.expected_score`). The overall mark is the mean of
the criteria's fractions on the overall scale; feedback is a greedy continuation of a
few-shot "Teacher's feedback:" prompt (one line). Every example is invented (no student's
work is in a prompt). The `scores` are integers (the rubric's scale); the probability-
weighted values are kept in `expected` with the share of probability the verdict words
held (`mass`: low means the model did not read it as a marking decision).
"""

from __future__ import annotations

from typing import Any

from workbench.engines.base import ChatRequest, ChatResult
from workbench.engines.logprobs import expected_score
from workbench.phased.evaluation import EvaluationError
from workbench.phased.spec import Criterion, LLMSettings, Rubric

#: verdict word (the token after "…):") → the fraction of the criterion's top mark
VERDICTS: dict[str, float] = {"good": 1.0, "poor": 0.3, "wrong": 0.0, "irrelevant": 0.0}
#: invented examples: (question, spoken answer, verdict on "does it meet the criterion")
EXAMPLES: list[tuple[str, str, str]] = [
    ("What do bees make?", "Bees make honey from nectar.", "good"),
    ("What do bees make?", "My brother has a new bike.", "irrelevant"),
    ("Why is the sky blue?", "Because the sky is painted blue every morning.", "wrong"),
    ("Why is the sky blue?", "uh the the sky it um", "poor"),
    ("Why is the sky blue?", "Air scatters blue sunlight more than red light.", "good"),
    ("What do bees make?", "Bees they um make the uh food I think", "poor"),
]
FEEDBACK_EXAMPLES: list[tuple[str, str, str]] = [
    ("Why is the sky blue?", "Because the sky is painted blue every morning.",
     "No: the sky is not painted; air scatters blue light more than red light."),
    ("What do bees make?", "Bees make honey from nectar.",
     "Right: bees turn the nectar of flowers into honey."),
    ("What do bees make?", "My brother has a new bike.",
     "That does not answer the question, which was about what bees make."),
    ("Why is the sky blue?", "uh the the sky it um",
     "Try again slowly, in one full sentence about light and air."),
    ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level.",
     "Correct, and you gave the condition too."),
]
TOP_LOGPROBS = 20
SEP = "\x1f"  # custom_id = item id + SEP + part ("c:<criterion>" or "feedback")


def _block(question: str, answer: str, c: Criterion, verdict: str | None = None) -> str:
    head = f"Question: {question}\nStudent's answer: {answer}\n"
    line = f"{c.name.replace('_', ' ').capitalize()} ({c.description or 'how well it meets this'}):"
    return head + line + (f" {verdict}\n\n" if verdict else "")


def criterion_prompt(rubric: Rubric, c: Criterion, transcript: str) -> str:
    question = rubric.question or "Answer the question."
    shots = "".join(_block(q, a, c, v) for q, a, v in EXAMPLES)
    return ("A teacher marks students' spoken answers.\n\n" + shots
            + _block(question, " ".join(transcript.split()) or "(no words)", c))


def feedback_prompt(rubric: Rubric, transcript: str) -> str:
    question = rubric.question or "Answer the question."
    shots = "".join(f"Question: {q}\nStudent's answer: {a}\nTeacher's feedback: {f}\n\n"
                    for q, a, f in FEEDBACK_EXAMPLES)
    return ("A teacher's short feedback on students' spoken answers.\n\n" + shots
            + f"Question: {question}\nStudent's answer: {' '.join(transcript.split())}\n"
            "Teacher's feedback:")


def requests(item_id: str, transcript: str, rubric: Rubric, llm: LLMSettings) -> list[ChatRequest]:
    """One scoring completion per criterion (1 token, top log-probabilities) + the feedback."""
    out = [ChatRequest(custom_id=f"{item_id}{SEP}c:{c.name}", endpoint="completion",
                       model=llm.model, prompt=criterion_prompt(rubric, c, transcript),
                       params={"max_tokens": 1, "temperature": 0.0, "logprobs": TOP_LOGPROBS})
           for c in rubric.criteria]
    budget = max(8, min(llm.max_tokens, rubric.feedback_max_chars // 3))
    out.append(ChatRequest(custom_id=f"{item_id}{SEP}feedback", endpoint="completion",
                           model=llm.model, prompt=feedback_prompt(rubric, transcript),
                           params={"max_tokens": budget, "temperature": 0.0, "stop": ["\n"],
                                   "repetition_penalty": 1.2}))
    return out


def split_id(custom_id: str) -> tuple[str, str]:
    item, _, part = custom_id.partition(SEP)
    return item, part


def evaluation(parts: dict[str, ChatResult], rubric: Rubric) -> dict[str, Any]:
    """The evaluation (same keys as the JSON one, plus `expected` and `mass`) from the parts."""
    scores: dict[str, int] = {}
    expected: dict[str, float] = {}
    mass: dict[str, float] = {}
    fractions = []
    for c in rubric.criteria:
        res = parts.get(f"c:{c.name}")
        if res is None or res.error or not res.choices:
            why = res.error if res is not None and res.error else "no answer"
            raise EvaluationError(f"scoring {c.name} failed: {why}")
        steps = res.choices[0].logprobs or []
        if not steps:
            raise EvaluationError(f"scoring {c.name}: the engine returned no log-probabilities")
        s = expected_score(steps[0].top_logprobs, VERDICTS)
        if s.value is None:
            top = ", ".join(repr(t.token) for t in steps[0].top_logprobs[:5])
            raise EvaluationError(f"scoring {c.name}: no verdict word among the model's likely"
                                  f" next tokens ({top})")
        fractions.append(s.value)
        expected[c.name] = round(s.value * c.max_score, 3)
        scores[c.name] = int(round(s.value * c.max_score))
        mass[c.name] = round(s.mass, 3)
    fb = parts.get("feedback")
    feedback = "" if fb is None or fb.error or not fb.choices else fb.choices[0].text.strip()
    overall = sum(fractions) / len(fractions) * rubric.overall_max
    return {"scores": scores, "overall": int(round(overall)),
            "feedback": feedback[:rubric.feedback_max_chars], "expected": expected,
            "overall_expected": round(overall, 3), "mass": mass, "scoring": "logprobs"}
