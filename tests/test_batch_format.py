"""Bad input is refused whole, with line, field and reason; nothing is queued."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.batch_helpers import write_jsonl as write_lines
from tests.conftest import make_wb
from workbench import InvalidInput, Workbench
from workbench.batch.format import validate_file

CORPUS = Path(__file__).parent / "bad_inputs"

#: file → (line, field, fragment of the reason) that must be among the listed problems
EXPECT = {
    "broken_json.jsonl": (2, "line", "invalid JSON"),
    "duplicate_custom_id.jsonl": (3, "custom_id", "duplicate 'a' (first on line 1)"),
    "missing_body.jsonl": (2, "body", "required field is missing"),
    "wrong_method.jsonl": (1, "method", "'POST'"),
    "wrong_url.jsonl": (2, "url", "/v1/chat/completions"),
    "non_utf8.jsonl": (2, "line", "not valid UTF-8"),
    "empty.jsonl": (0, "file", "empty: no requests"),
    "blank_only.jsonl": (0, "file", "empty: no requests"),
    "not_an_object.jsonl": (2, "line", "expected a JSON object, got list"),
    "empty_custom_id.jsonl": (1, "custom_id", "at least 1 character"),
    "custom_id_not_string.jsonl": (1, "custom_id", "valid string"),
    "no_messages.jsonl": (1, "body.messages", "required field is missing"),
    "empty_messages.jsonl": (1, "body.messages", "at least 1 item"),
    "bad_role.jsonl": (1, "body.messages.0.role", "'user'"),
    "completion_without_prompt.jsonl": (1, "body.prompt", "required field is missing"),
    "temperature_out_of_range.jsonl": (3, "body.temperature", "less than or equal to 2"),
    "max_tokens_not_int.jsonl": (1, "body.max_tokens", "valid integer"),
    "max_tokens_zero.jsonl": (1, "body.max_tokens", "greater than or equal to 1"),
    "stream_true.jsonl": (1, "body.stream", "streaming is not available"),
    "unknown_body_field.jsonl": (1, "body.max_token", "unsupported field"),
    "empty_tools.jsonl": (1, "body.tools", "at least 1 item"),
    "logit_bias_not_token_id.jsonl": (1, "body.logit_bias", "keys are token ids"),
    "bad_tool_choice.jsonl": (1, "body.tool_choice", 'expected "none", "auto", "required"'),
    "unknown_top_field.jsonl": (1, "priority", "unsupported field"),
    "json_schema_without_schema.jsonl": (1, "body.response_format", "needs a json_schema"),
    "too_many_stops.jsonl": (1, "body.stop", "at most 4 items"),
}


def _assert_nothing_queued(wb: Workbench) -> None:
    assert wb.store.list_jobs() == []
    assert list((wb.root / "jobs").iterdir()) == []
    assert list((wb.root / "staging").iterdir()) == []


def test_corpus_covers_at_least_15_kinds() -> None:
    files = {p.name for p in CORPUS.glob("*.jsonl")}
    assert files == set(EXPECT) and len(files) >= 15


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_bad_file_is_refused_whole_with_line_field_reason(tmp_path: Path, name: str) -> None:
    wb = make_wb(tmp_path / "wb")
    line, field, fragment = EXPECT[name]
    with pytest.raises(InvalidInput) as e:
        wb.batch.submit(CORPUS / name, model="unused-model")
    hits = [p for p in e.value.problems if p[0] == line and p[1] == field and fragment in p[2]]
    assert hits, f"{name}: wanted ({line}, {field}, ~{fragment!r}), got {e.value.problems}"
    # the whole file (line 0) is named without a line number: no "line 0"
    assert (f"line {line}: {field}:" if line else f"\n  {field}:") in str(e.value)
    assert "line 0" not in str(e.value)
    _assert_nothing_queued(wb)


def _good(cid: str) -> str:
    return json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": [{"role": "user", "content": "x"}]}})


def test_50001_lines_refused_with_the_limit_named(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join(_good(f"r{i}") for i in range(50_001)) + "\n")
    with pytest.raises(InvalidInput) as e:
        wb.batch.submit(big, model="m")
    assert e.value.problems == [(50_001, "file", "more than 50,000 requests (limit "
                                 "max_requests_per_job); split it with wb.batch.submit_large")]
    _assert_nothing_queued(wb)


def test_every_problem_is_counted_and_first_50_listed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(["{broken"] * 120) + "\n")
    with pytest.raises(InvalidInput) as e:
        validate_file(bad)
    assert e.value.total_problems == 120 and len(e.value.problems) == 50
    assert [p[0] for p in e.value.problems] == list(range(1, 51))
    assert "... and 70 more" in str(e.value)


def test_bom_and_blank_lines_anywhere_are_tolerated(tmp_path: Path) -> None:
    """OpenAI accepts a UTF-8 BOM and blank lines; the staged copy has neither."""
    wb = make_wb(tmp_path / "wb")
    src = tmp_path / "bom.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "\n\n".join(_good(f"r{i}") for i in range(3)).encode()
                    + b"\n\n  \n" + _good("r3").encode() + b"\n\n")
    assert validate_file(src).total == 4
    job = wb.batch.submit(src, model="m")
    staged = (job.dir / "input.jsonl").read_bytes()
    assert not staged.startswith(b"\xef\xbb\xbf") and b"\n\n" not in staged
    assert [json.loads(x)["custom_id"] for x in staged.splitlines()] == ["r0", "r1", "r2", "r3"]


def test_every_accepted_openai_field_validates_and_no_effect_ones_are_noted(tmp_path: Path) -> None:
    from tests.openai_fields import NOTED, field_lines

    wb = make_wb(tmp_path / "wb")
    path = write_lines(tmp_path / "fields.jsonl", field_lines())
    report = validate_file(path)
    assert report.total == len(field_lines())
    assert set(report.notes) == NOTED, report.notes
    job = wb.batch.submit(path, model="m")
    notes = job.info.spec["notes"]
    assert notes["service_tier"] == "accepted; no effect on a local engine (1 line)"
    assert set(notes) == NOTED


def test_good_file_is_copied_and_counted(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(_good(f"r{i}") for i in range(5)) + "\n\n")  # trailing blank ok
    job = wb.batch.submit(good, model="m", window=3)
    assert job.info.total == 5 and job.status == "queued"
    assert (job.dir / "input.jsonl").read_text().count("\n") == 5
    assert job.info.spec["window"] == 3 and job.info.spec["model"] == "m"
    assert "api_key" not in json.dumps(job.info.spec)


def test_from_dataframe_builds_valid_jsonl(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    df = pd.DataFrame({"name": ["Ada", "Linus"], "skills": ["math", "kernels"], "pid": [7, 9]})
    path = wb.batch.from_dataframe(df, "Rate {name} ({skills})", system="Be brief.",
                                   id_column="pid", max_tokens=8, temperature=0)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == ["7", "9"]
    assert lines[1]["body"] == {"messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "Rate Linus (kernels)"}],
                                "max_tokens": 8, "temperature": 0}
    assert validate_file(path).total == 2
    with pytest.raises(KeyError, match=r"\['age'\]"):
        wb.batch.from_dataframe(df, "{age}")
    with pytest.raises(ValueError, match="temperature"):
        wb.batch.from_dataframe(df, "{name}", temperature=9)


def test_cli_submit_reports_problems_and_queues_nothing(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import worker_env

    root = tmp_path / "wb"
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "--root", str(root), "submit",
                          str(CORPUS / "broken_json.jsonl"), "--model", "m"],
                         env=worker_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "line 2: line: invalid JSON" in out.stderr and "nothing was queued" in out.stderr
    assert make_wb(root).store.list_jobs() == []


def test_wb_job_returns_the_kinds_handle(tmp_path: Path) -> None:
    from workbench.batch.api import BatchJob

    wb = make_wb(tmp_path / "wb")
    good = tmp_path / "good.jsonl"
    good.write_text(_good("a") + "\n")
    job = wb.job(wb.batch.submit(good, model="m").id)
    assert isinstance(job, BatchJob) and list(job.results().columns)[:2] == ["custom_id", "content"]
