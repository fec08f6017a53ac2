"""Rubric questions as batch requests, and their answers read back as expected scores.

`wb.batch.from_dataframe` writes one completion request per row and question; the output
lines carry OpenAI's logprobs shapes (written here by `batch.output` from engine-neutral
steps, as the vLLM engine does); `BatchJob.expected_scores` turns each line's first-token
alternatives into a probability-weighted score. The real model run is the demo test.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from workbench import Workbench
from workbench.batch.output import error_line, success_line
from workbench.engines.base import ChatResult, Choice
from workbench.engines.logprobs import TokenLogprob, TopLogprob


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b"], "role": ["QA", "Dev"], "years": [1, 9]})


def test_a_dict_of_prompts_asks_every_row_each_question_as_completions(wb: Workbench) -> None:
    path = wb.batch.from_dataframe(
        _frame(), {"fit": "Role: {role}\nFit (1-5): ", "exp": "Years: {years}\nExperienced:"},
        id_column="id", endpoint="completions", max_tokens=1, temperature=0, logprobs=20)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == ["a:fit", "a:exp", "b:fit", "b:exp"]
    assert {x["url"] for x in lines} == {"/v1/completions"}
    assert lines[3]["body"] == {"prompt": "Years: 9\nExperienced:", "max_tokens": 1,
                                "temperature": 0, "logprobs": 20}
    job = wb.batch.submit(path, model="/models/m")  # the whole file validates
    assert job.info.total == 4


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"prompt": {"a:b": "{role}"}}, "without ':'"),
    ({"prompt": {}}, "empty dict"),
    ({"prompt": {"q": "{nope}"}}, "prompt 'q' uses columns \\['nope'\\]"),
    ({"prompt": "{role}", "endpoint": "embeddings"}, "endpoint is 'chat' or 'completions'"),
    ({"prompt": "{role}", "endpoint": "completions", "system": "Be brief."}, "no system message"),
    ({"prompt": "{role}", "endpoint": "completions", "logprobs": 21}, "less than or equal to 20"),
])
def test_bad_rubric_requests_are_refused_before_writing(wb: Workbench, kwargs: dict[str, object],
                                                        message: str) -> None:
    with pytest.raises((ValueError, KeyError), match=message):
        wb.batch.from_dataframe(_frame(), id_column="id", **kwargs)  # type: ignore[arg-type]
    assert not (wb.root / "inputs").exists() or not list((wb.root / "inputs").iterdir())


def _line(cid: str, endpoint: str, top: dict[str, float], text: str | None = None) -> dict[str, object]:
    alts = [TopLogprob(token=t, logprob=math.log(p)) for t, p in top.items()]
    chosen = text or max(top, key=top.get)
    step = TokenLogprob(token=chosen, logprob=math.log(top[chosen]), top_logprobs=alts)
    res = ChatResult(custom_id=cid, choices=[Choice(text=chosen, finish_reason="length",
                                                    logprobs=[step])],
                     prompt_tokens=50, completion_tokens=1)
    return success_line(res, endpoint, "/models/m")


def test_expected_scores_from_both_output_shapes_in_input_order(wb: Workbench) -> None:
    path = wb.batch.from_dataframe(
        _frame(), {"fit": "{role} fit: ", "exp": "{years} experienced:"},
        id_column="id", endpoint="completions", max_tokens=1, logprobs=5)
    job = wb.batch.submit(path, model="/models/m")
    lines = [  # written out of order, as a window finishes them
        _line("b:exp", "completions", {" Yes": 0.6, " No": 0.2, " yes": 0.1, "\n": 0.1}),
        _line("a:fit", "completions", {"4": 0.5, "5": 0.25, "2": 0.25}),
        _line("b:fit", "chat", {"1": 0.9, " x": 0.1}),
    ]
    with open(job.output_path, "w") as f:
        for x in lines:
            f.write(json.dumps(x) + "\n")
    with open(job.errors_path, "w") as f:
        f.write(json.dumps(error_line("a:exp", "prompt too long")) + "\n")
    rating = {str(k): float(k) for k in range(1, 6)}
    fit = job.expected_scores(rating, question="fit")
    assert list(fit["id"]) == ["a", "b"] and list(fit["custom_id"]) == ["a:fit", "b:fit"]
    assert fit["score"].tolist() == pytest.approx([4.0 * 0.5 + 5 * 0.25 + 2 * 0.25, 1.0])
    assert fit["mass"].tolist() == pytest.approx([1.0, 0.9]) and fit["top"].tolist() == ["4", "1"]
    exp = job.expected_scores({"yes": 1, "no": 0}, question="exp")
    assert list(exp["id"]) == ["a", "b"]
    assert math.isnan(exp["score"].iloc[0]) and exp["mass"].iloc[0] == 0.0  # the error line
    assert exp["score"].iloc[1] == pytest.approx(0.7 / 0.9)  # " Yes" and " yes" both count
    everything = job.expected_scores(rating)
    assert len(everything) == 4 and everything["custom_id"].tolist()[0] == "a:fit"


def test_step_none_reads_the_first_token_that_is_an_answer(wb: Workbench) -> None:
    path = wb.batch.from_dataframe(_frame().head(1), "{role}: ", id_column="id",
                                   endpoint="completions", max_tokens=2, logprobs=5)
    job = wb.batch.submit(path, model="/models/m")
    space = TokenLogprob(token=" ", logprob=-0.1, top_logprobs=[TopLogprob(token=" ", logprob=-0.1)])
    digit = TokenLogprob(token="3", logprob=-0.2, top_logprobs=[
        TopLogprob(token="3", logprob=math.log(0.5)), TopLogprob(token="5", logprob=math.log(0.5))])
    res = ChatResult(custom_id="a", choices=[Choice(text=" 3", finish_reason="length",
                                                    logprobs=[space, digit])], completion_tokens=2)
    job.output_path.write_text(json.dumps(success_line(res, "completions", "m")) + "\n")
    labels = {"3": 3, "5": 5}
    assert math.isnan(job.expected_scores(labels)["score"].iloc[0])  # step 0 is the space
    assert job.expected_scores(labels, step=None)["score"].iloc[0] == pytest.approx(4.0)
