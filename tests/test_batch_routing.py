"""Batch lines routed to the model they name, OpenAI's completion window, usage totals.

Fast: the echo engine double (tests/engines.py) under two names, so what answered is in
every output line; the real two-model run is in tests/test_server_openai.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests import engines  # noqa: F401  (registers the "echo" provider)
from tests.batch_helpers import request_lines, write_jsonl
from tests.conftest import make_wb, wait_until
from workbench import Workbench
from workbench.batch.expiry import window_seconds
from workbench.engines import pool


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def echo(name: str, delay_s: float = 0.0) -> dict[str, Any]:
    return {"provider": "echo", "model": name, "delay_s": delay_s}


@pytest.fixture
def wb(tmp_path: Path) -> Workbench:
    pool.release()
    w = make_wb(tmp_path / "wb")
    yield w
    w.stop_workers()
    pool.release()


def test_lines_run_on_the_model_they_name_one_model_at_a_time(wb: Workbench, tmp_path: Path) -> None:
    lines = request_lines(9)
    for i, x in enumerate(lines):
        if i % 3 == 1:
            x["body"]["model"] = "beta"
        elif i % 3 == 2:
            x["body"]["model"] = "alpha"       # the default, named
    lines[4]["body"]["model"] = "gpt-4o-mini"  # not served: that line's 404
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines),
                          models={"alpha": echo("alpha"), "beta": echo("beta")})
    assert job.info.spec["model"] == "alpha" and set(job.info.spec["models"]) == {"alpha", "beta"}
    wb.start_worker()
    job.wait(timeout=60, progress=False)
    info = job.info
    assert (info.status.value, info.completed, info.failed, info.total) == ("completed", 8, 1, 9)
    out = {o["custom_id"]: o for o in _lines(job.output_path)}
    want = {f"r{i}": ("beta" if i % 3 == 1 else "alpha") for i in range(9) if i != 4}
    assert {k: o["response"]["body"]["model"] for k, o in out.items()} == want
    assert all(o["response"]["request_id"].startswith("req_") for o in out.values())
    # one model after the other: all of one name, then all of the other (pool: one resident)
    order = [o["response"]["body"]["model"] for o in _lines(job.output_path)]
    assert order == sorted(order, key=order.index) and len(set(order)) == 2
    (err,) = _lines(job.errors_path)
    assert err["custom_id"] == "r4" and err["error"]["code"] == "model_not_found"
    assert err["response"]["status_code"] == 404
    assert "The model `gpt-4o-mini` does not exist" in err["error"]["message"]
    assert "alpha, beta" in err["error"]["message"]
    # usage = the sum over the output lines
    usage = info.metrics["usage"]
    prompt = sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in out.values())
    completion = sum(o["response"]["body"]["usage"]["completion_tokens"] for o in out.values())
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (
        prompt, completion, prompt + completion) and prompt > 0


def test_single_model_jobs_ignore_body_model_as_before(wb: Workbench, tmp_path: Path) -> None:
    lines = request_lines(3)
    lines[0]["body"]["model"] = "gpt-4o-mini"
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines), engine=echo("x"),
                          model="my-model")
    wb.start_worker()
    job.wait(timeout=60, progress=False)
    assert (job.info.completed, job.info.failed) == (3, 0)
    assert {o["response"]["body"]["model"] for o in _lines(job.output_path)} == {"my-model"}


def test_running_batch_expires_at_its_deadline_keeping_what_finished(
        wb: Workbench, tmp_path: Path) -> None:
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", request_lines(60)), model="slow",
                          engine=echo("slow", delay_s=0.1), window=1, completion_window="1.5s")
    assert job.info.deadline_at == pytest.approx(job.info.created_at + 1.5)
    wb.start_worker()
    job.wait(timeout=60, progress=False)
    info = job.info
    assert info.status.value == "expired", info
    done = _lines(job.output_path)
    expired = _lines(job.errors_path)
    assert 1 <= len(done) < 60 and len(done) + len(expired) == 60
    assert {o["custom_id"] for o in done} | {e["custom_id"] for e in expired} == {
        f"r{i}" for i in range(60)}
    assert all(e["response"] is None and e["error"]["code"] == "batch_expired" for e in expired)
    assert (info.completed, info.failed, info.total, info.progress) == (len(done), len(expired),
                                                                        60, 100.0)
    assert f"with {len(done)} of 60 done; {len(expired)} requests did not run" in info.message
    assert info.metrics["usage"]["output_tokens"] == sum(
        o["response"]["body"]["usage"]["completion_tokens"] for o in done)
    with pytest.raises(Exception, match="cannot go from 'expired' to 'queued'"):
        job.resume()


def test_waiting_batch_past_its_deadline_expires_without_running(wb: Workbench, tmp_path: Path) -> None:
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", request_lines(4)), model="m",
                          engine=echo("m"), completion_window=0.2)
    other = wb.batch.submit(write_jsonl(tmp_path / "in2.jsonl", request_lines(2)), model="m",
                            engine=echo("m"))
    time.sleep(0.3)
    assert wb.batch.expire_overdue() == [job.id] and wb.batch.expire_overdue() == []
    info = job.info
    assert (info.status.value, info.completed, info.failed) == ("expired", 0, 4)
    assert [e["error"]["code"] for e in _lines(job.errors_path)] == ["batch_expired"] * 4
    assert info.message == ("expired: the completion window closed with 0 of 4 done; 4 requests"
                            " did not run (batch_expired)")
    # the worker expires an overdue batch it claims (here: one whose worker died meanwhile)
    third = wb.batch.submit(write_jsonl(tmp_path / "in3.jsonl", request_lines(3)), model="m",
                            engine=echo("m"), completion_window=0.2)
    wb.store.conn.execute("UPDATE jobs SET status='interrupted' WHERE id=?", (third.id,))
    time.sleep(0.3)
    wb.start_worker()
    wait_until(lambda: other.status == "completed" and third.status == "expired", 30, "both")
    assert third.info.failed == 3 and other.info.completed == 2


@pytest.mark.parametrize("value,seconds", [("24h", 86400.0), ("90s", 90.0), ("15m", 900.0),
                                           ("2d", 172800.0), (2, 2.0), (None, None)])
def test_window_seconds(value: Any, seconds: float | None) -> None:
    assert window_seconds(value) == seconds


def test_bad_windows_are_refused_before_anything_is_queued(wb: Workbench, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", request_lines(2))
    for bad in ("soon", "-1s", 0):
        with pytest.raises(ValueError, match="completion window"):
            wb.batch.submit(path, model="m", completion_window=bad)
    assert wb.store.list_jobs() == []
