"""Scores that mean something from the embedded base model (Gemma 3 270M, issue 12).

The phased evaluation and the grid judge read Gemma's token probabilities (G-Eval)
instead of asking it for JSON (which gave every student 0 and every gibberish answer
10). What the prompt lab measured for this model, and so what is asserted: a sensible
answer scores above gibberish, an empty answer and an off-topic one. Not asserted,
because the model cannot do it: telling a fluent wrong answer from a right one.

One engine load per job (~20–30 s each, in-process here to save the child's start).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.speech import have_espeak, speak
from workbench import Workbench
from workbench.config import EMBEDDED_LLM

pytestmark = [pytest.mark.vllm, pytest.mark.stt,
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")]


@pytest.fixture(autouse=True)
def embedded_gemma(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   tmp_path_factory: pytest.TempPathFactory) -> None:
    """`embedded:gemma-3-270m` resolves to the test model cache (prepared once)."""
    cache = os.environ.get("WB_TEST_MODEL_CACHE")
    monkeypatch.setenv("WORKBENCH_MODELS", cache or str(tmp_path_factory.mktemp("models")))
    monkeypatch.setenv("WORKBENCH_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("WORKBENCH_MODEL", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)


QUESTION = "Explain one thing you learned in science this term."
ANSWERS = {
    "good": "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "offtopic": "I had pizza for lunch and then we played football in the park.",
    "rambling": "um the the uh um the the uh",
}


def test_phased_scores_a_good_answer_above_off_topic_and_rambling(wb: Workbench,
                                                                  tmp_path: Path) -> None:
    files = {k: speak(v, tmp_path / f"{k}.wav") for k, v in ANSWERS.items()}
    job = wb.phased.submit(files, rubric={"criteria": [
        {"name": "accuracy", "description": "Is the science correct?", "max_score": 5},
        {"name": "clarity", "description": "Is the explanation clear?", "max_score": 5}],
        "question": QUESTION}, batch_size=3, stt={"isolation": "inline"},
        llm={"model": EMBEDDED_LLM, "isolation": "inline"})
    assert job.spec.llm.uses_logprobs  # "auto" picks token probabilities for the base model
    wb.start_worker()
    job.wait(timeout=600, progress=False)
    assert job.status == "completed", job.info
    df = job.results().set_index("item_id")
    assert set(df.state) == {"done"}, df[["state", "error"]]
    e = df.overall_expected
    assert e["good"] > e["offtopic"] and e["good"] > e["rambling"], e.to_dict()
    assert df.feedback.str.startswith("confidence the answer is good: 0.").all()
    print("phased overall_expected:", e.round(2).to_dict())


def test_grid_judge_rates_a_sensible_answer_above_gibberish_and_empty(
        wb: Workbench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fake_gemini import API_KEY, FakeGemini, engine_settings
    from workbench.grid import tables
    from workbench.media import sha256_file

    said = "The museum opens at nine and the new dinosaur exhibition is on the first floor."
    wav = speak(said, tmp_path / "museum.wav")
    tables.ensure(wb.store)  # the transcript is known: this test is about the judge
    tables.put_transcript(wb.store, sha256_file(wav), "default", said, "en", 4.0)
    answers = {"gemini-sensible": "The museum opens at nine; the dinosaur exhibition is on the"
                                  " first floor.",
               "gemini-gibberish": 'xq ,},"" zzkl ]]{ 4f9 ;; blorp ,},"', "gemini-empty": ""}
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    with FakeGemini() as fake:
        fake.responder = lambda model, body: answers[model]
        wb.start_worker()
        job = wb.grid.submit(media=wav, prompts="Summarise the clip in one sentence.",
                             models=list(answers),
                             judge={"provider": "vllm", "name": EMBEDDED_LLM, "label": "gemma"},
                             local_isolation="inline", default_rpm=60_000,
                             gemini=engine_settings(fake.url))
        job.wait(timeout=600, progress=False)
    assert job.status == "completed", job.info
    df = job.results().set_index("model")
    r = df["expected_score"]
    assert r["gemini-sensible"] > r["gemini-gibberish"] and r["gemini-sensible"] > r["gemini-empty"], r
    s = job.summaries()
    assert s.loc[0, "best_model"] == "gemini-sensible"
    assert s.loc[0, "overall_summary"].startswith("Best: gemini-sensible (")
    print("grid expected_score:", r.round(2).to_dict())
