"""A server hiccup never loses a request: the OpenAI HTTP engine against a fake server that
goes away, refuses keys, answers 503s (tests/fake_openai.py), through real jobs and workers.

Outage, breaker, error lines with true statuses, `retry_failed()`, keys at submit, the
flush timer and quiet httpx logs. The real vLLM server version of the outage is in
tests/test_resilience_vllm.py.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.batch_helpers import write_jsonl
from tests.conftest import make_wb, spawn_worker, wait_until
from tests.fake_openai import FakeOpenAI, free_port
from tests.job_watch import Sampler, ids_per_line
from workbench import Workbench
from workbench.engines import pool
from workbench.engines.base import ChatRequest, ChatResult, Choice
from workbench.errors import IllegalTransition, InvalidInput

FAST = {"backoff_s": 0.02, "max_backoff_s": 0.05, "probe_every_s": 0.2, "connect_timeout_s": 2}


def lines(n: int, prefix: str = "p") -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"messages": [{"role": "user", "content": f"{prefix}{i}"}], "max_tokens": 4}}
            for i in range(n)]


def submit(wb: Workbench, tmp: Path, n: int, url: str, **engine: Any) -> Any:
    eng = {"provider": "openai", "base_url": url, "concurrency": 4, **FAST, **engine}
    return wb.batch.submit(write_jsonl(tmp / f"in-{time.monotonic_ns()}.jsonl", lines(n)),
                           model="m", engine=eng)


def test_nothing_listening_pauses_then_interrupts_and_resume_completes(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    wb = make_wb(tmp_path / "wb")
    job = submit(wb, tmp_path, 50, url, breaker_after=5, outage_deadline_s=1.5)
    sampler = Sampler(job)
    wb.start_worker()
    job.wait(timeout=60, progress=False)
    messages = sampler.stop()
    r = job.info
    assert r.status.value == "interrupted", r
    assert url in r.message and "past the outage deadline" in r.message
    assert "50 of 50 requests not answered yet" in r.message and "job.resume()" in r.message
    paused = [m for m in messages if m.startswith("server unreachable since ")]
    assert paused and all("retrying every 0.2 s" in m and url in m for m in paused), messages
    http = r.metrics["http"]
    # dispatch stopped: at most one try per slot before the breaker opened, plus retries
    # of those slots until the 5th consecutive failure — not 50 requests x 6 attempts
    assert http["attempts"] <= 4 + 5 and http["outages"] == 1 and http["probes"] >= 1, http
    assert (r.completed, r.failed) == (0, 0) and not job.errors_path.exists()
    time.sleep(0.5)  # a held interrupted job is not claimed again by the idle worker
    assert len(wb.store.events(job.id, "claimed")) == 1
    fake = FakeOpenAI(port).start()
    try:
        job.resume().wait(timeout=60, progress=False)
        assert job.status == "completed", job.info
        assert (job.info.completed, job.info.failed) == (50, 0)
        assert fake.answered() == Counter({f"p{i}": 1 for i in range(50)})
        assert ids_per_line(job) == Counter({f"p{i}": 1 for i in range(50)})
    finally:
        fake.stop()
        wb.stop_workers()


def test_outage_mid_job_requeues_in_flight_requests_and_completes(tmp_path: Path) -> None:
    fake = FakeOpenAI().start()
    wb = make_wb(tmp_path / "wb")
    gate = threading.Event()

    def slow_then_down(prompt: str, n: int) -> tuple[int, dict[str, str]] | None:
        gate.wait(0.1)  # slow enough to stop the server part-way
        return None

    fake.fail = slow_then_down
    job = submit(wb, tmp_path, 120, fake.url, breaker_after=3)
    sampler = Sampler(job)
    wb.start_worker()
    try:
        wait_until(lambda: job.info.completed >= 30, 60, "30 answers")
        fake.stop()
        wait_until(lambda: job.info.message.startswith("server unreachable since"), 30,
                   "the outage in the job message")
        fake.start()
        job.wait(timeout=60, progress=False)
        messages = sampler.stop()
        r = job.info
        assert (r.status.value, r.completed, r.failed) == ("completed", 120, 0), r
        assert not job.errors_path.exists() or not job.errors_path.read_text()
        assert ids_per_line(job) == Counter({f"p{i}": 1 for i in range(120)})
        assert sum(fake.answered().values()) == 120 and set(fake.answered().values()) == {1}
        assert any(m.startswith("server back after ") for m in messages), messages
        assert r.metrics["http"]["requeued"] >= 1 and sampler.dupes == 0
    finally:
        fake.stop()
        wb.stop_workers()


def test_retry_failed_resends_exactly_the_transient_failures(tmp_path: Path) -> None:
    fake = FakeOpenAI().start()
    broken = {"p3", "p10", "p17"}
    healthy = threading.Event()

    def rule(prompt: str, n: int) -> tuple[int, dict[str, str]] | None:
        if prompt == "p5":
            return 400, {}
        if prompt in broken and not healthy.is_set():
            return 503, {}
        return None

    fake.fail = rule
    wb = make_wb(tmp_path / "wb")
    job = submit(wb, tmp_path, 20, fake.url, max_attempts=2, breaker_after=50, concurrency=2)
    wb.start_worker()
    try:
        job.wait(timeout=60, progress=False)
        r = job.info
        assert (r.status.value, r.completed, r.failed) == ("completed", 16, 4), r
        assert r.metrics["failures"] == {"transient": 3, "final": 1}
        assert "(3 transient, 1 final)" in r.message and "job.retry_failed()" in r.message
        errs = {x["custom_id"]: x for x in map(json.loads, job.errors_path.read_text().splitlines())}
        assert errs["p3"]["response"]["status_code"] == 503
        assert errs["p3"]["error"]["workbench"] == {"class": "transient", "attempts": 2,
                                                    "endpoint": fake.url}
        assert errs["p3"]["error"]["message"].startswith(
            f"HTTP 503 service unavailable from {fake.url} after 2 attempts")
        assert errs["p5"]["response"]["status_code"] == 400
        assert errs["p5"]["error"]["workbench"]["class"] == "final"
        with pytest.raises(IllegalTransition, match="'completed' to 'queued'.*retry_failed"):
            job.resume()

        healthy.set()
        before = len(fake.log)
        sampler = Sampler(job, every_s=0.01)
        job.retry_failed().wait(timeout=60, progress=False)
        sampler.stop()
        assert fake.sent(before) == Counter({"p3": 1, "p10": 1, "p17": 1})
        r = job.info
        assert (r.status.value, r.completed, r.failed) == ("completed", 19, 1), r
        assert r.metrics["failures"] == {"transient": 0, "final": 1}
        assert ids_per_line(job) == Counter({f"p{i}": 1 for i in range(20)})
        assert sampler.dupes == 0
        audit = [json.loads(x) for x in job.superseded_path.read_text().splitlines()]
        assert sorted(a["custom_id"] for a in audit) == ["p10", "p17", "p3"]

        before = len(fake.log)
        assert job.retry_failed().status == "completed"  # nothing transient left: no-op
        job.retry_failed(final=True).wait(timeout=60, progress=False)
        assert fake.sent(before) == Counter({"p5": 1})
        assert (job.status, job.info.failed) == ("completed", 1)
        assert "retry_final" not in job.info.metrics
        assert ids_per_line(job) == Counter({f"p{i}": 1 for i in range(20)})
        assert len(job.superseded_path.read_text().splitlines()) == 4
    finally:
        fake.stop()
        wb.stop_workers()


def test_resume_resends_transient_error_lines_of_a_cancelled_job(tmp_path: Path) -> None:
    fake = FakeOpenAI().start()
    wb = make_wb(tmp_path / "wb")
    job = submit(wb, tmp_path, 6, fake.url)
    jid = job.id
    wb.store.transition(jid, "cancelled")
    from workbench.batch.output import error_line

    with open(job.errors_path, "a") as f:  # what an earlier run left: one of each class
        f.write(json.dumps(error_line("p1", "could not connect", "connection_error", None,
                                      {"class": "transient", "attempts": 6,
                                       "endpoint": fake.url})) + "\n")
        f.write(json.dumps(error_line("p2", "HTTP 400", "invalid_request", 400,
                                      {"class": "final", "attempts": 1,
                                       "endpoint": fake.url})) + "\n")
    # resumed before a worker runs: a claim would overwrite the message we check
    assert "re-sending 1 requests" in job.resume().info.message
    wb.start_worker()
    try:
        job.wait(timeout=60, progress=False)
        assert (job.status, job.info.completed, job.info.failed) == ("completed", 5, 1)
        assert "p2" not in fake.sent() and fake.sent()["p1"] == 1
    finally:
        fake.stop()
        wb.stop_workers()


def test_401_is_final_with_its_status_and_a_job_where_all_fail_is_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeOpenAI(key="sk-right").start()
    monkeypatch.setenv("WB_TEST_WRONG_KEY", "sk-wrong")
    wb = make_wb(tmp_path / "wb")
    job = submit(wb, tmp_path, 8, fake.url, api_key_env="WB_TEST_WRONG_KEY")
    wb.start_worker()
    try:
        job.wait(timeout=60, progress=False)
        r = job.info
        assert r.status.value == "failed", r
        assert r.error == f"all 8 requests failed: HTTP 401 unauthorized from {fake.url}: Unauthorized"
        assert r.message == r.error and r.metrics["failures"] == {"transient": 0, "final": 8}
        errs = [json.loads(x) for x in job.errors_path.read_text().splitlines()]
        assert {e["response"]["status_code"] for e in errs} == {401}
        assert {e["error"]["code"] for e in errs} == {"unauthorized"}
        assert {e["error"]["workbench"]["attempts"] for e in errs} == {1}
        assert sum(fake.sent().values()) == 8  # a final error is not retried
        assert {s.auth for s in fake.chats()} == {"Bearer sk-wrong"}
        # the key fixed: retry_failed(final=True) sends them again
        monkeypatch.setenv("WB_TEST_WRONG_KEY", "sk-right")  # read at every request
        job.retry_failed(final=True).wait(timeout=60, progress=False)
        assert (job.status, job.info.completed, job.info.failed) == ("completed", 8, 0)
        assert job.info.metrics["failures"] == {"transient": 0, "final": 0}  # not stale
        assert job.info.message == "completed 8, failed 0"
    finally:
        fake.stop()
        wb.stop_workers()


def test_connection_failures_have_no_fake_status_and_fail_the_job(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    wb = make_wb(tmp_path / "wb")
    job = submit(wb, tmp_path, 5, url, max_attempts=2, breaker_after=1000)
    wb.start_worker()
    try:
        job.wait(timeout=60, progress=False)
        want = f"could not connect to {url} after 2 attempts (connection refused)"
        assert (job.status, job.info.error) == ("failed", f"all 5 requests failed: {want}")
        errs = [json.loads(x) for x in job.errors_path.read_text().splitlines()]
        assert len(errs) == 5 and all(e["response"] is None for e in errs)
        assert {json.dumps(e["error"], sort_keys=True) for e in errs} == {json.dumps(
            {"code": "connection_error", "message": want,
             "workbench": {"class": "transient", "attempts": 2, "endpoint": url}},
            sort_keys=True)}
        assert job.results()["error"].tolist() == [want] * 5
    finally:
        wb.stop_workers()


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    fake = FakeOpenAI().start()
    fake.fail = lambda prompt, n: (429, {"Retry-After": "1"}) if prompt == "p0" and n == 1 else None
    wb = make_wb(tmp_path / "wb")
    job = submit(wb, tmp_path, 1, fake.url)
    wb.start_worker()
    try:
        job.wait(timeout=60, progress=False)
        assert (job.status, job.info.completed) == ("completed", 1)
        tries = [s.at for s in fake.chats()]
        assert len(tries) == 2 and tries[1] - tries[0] >= 0.95  # not the 0.02 s backoff
    finally:
        fake.stop()
        wb.stop_workers()


def test_unset_key_variable_is_refused_at_submit(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WB_TEST_UNSET_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    wb = make_wb(tmp_path / "wb")
    src = write_jsonl(tmp_path / "in.jsonl", lines(3))
    with pytest.raises(InvalidInput) as e:
        wb.batch.submit(src, model="m", engine={"provider": "openai", "base_url": "http://x/v1",
                                                "api_key_env": "WB_TEST_UNSET_KEY"})
    msg = str(e.value)
    assert "engine.api_key_env: the environment variable WB_TEST_UNSET_KEY is not set" in msg
    assert "line 0" not in msg
    with pytest.raises(InvalidInput, match="OPENAI_API_KEY is not set"):
        wb.batch.submit(src, model="gpt-4o-mini", engine={
            "provider": "openai", "base_url": "https://api.openai.com/v1"})
    assert wb.store.list_jobs() == [] and list((wb.root / "staging").iterdir()) == []


def test_no_default_key_goes_to_other_servers_and_a_named_one_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key")
    monkeypatch.setenv("WB_TEST_LOCAL_KEY", "sk-local")
    fake = FakeOpenAI().start()
    wb = make_wb(tmp_path / "wb")
    plain = submit(wb, tmp_path, 2, fake.url)
    named = submit(wb, tmp_path, 2, fake.url, api_key_env="WB_TEST_LOCAL_KEY", concurrency=3)
    wb.start_worker()
    try:
        plain.wait(timeout=60, progress=False)
        named.wait(timeout=60, progress=False)
        assert (plain.status, named.status) == ("completed", "completed")
        assert [s.auth for s in fake.chats()] == [None, None, "Bearer sk-local", "Bearer sk-local"]
        assert "sk-" not in json.dumps(plain.info.spec) + json.dumps(named.info.spec)
    finally:
        fake.stop()
        wb.stop_workers()


class GateEngine:
    """Answers the first request at once, then waits for `release` before the rest."""

    name = "gate"
    release = threading.Event()

    def __init__(self, model: str = "gate", **_: Any) -> None:
        self.model = model

    def load(self) -> None:
        pass

    def unload(self) -> dict[str, Any]:
        return {}

    def abort(self, ids: Iterable[str] | None = None) -> list[str]:
        return []

    def chat(self, requests: Iterable[ChatRequest], window: int = 5000, mode: str = "window",
             stop: Callable[[], bool] | None = None) -> Iterator[ChatResult]:
        for i, req in enumerate(requests):
            if i == 1:
                while not GateEngine.release.wait(0.05):
                    if stop is not None and stop():
                        return
            yield ChatResult(custom_id=req.custom_id, choices=[Choice(text="ok")], model=self.model)


pool.register_provider("gate", GateEngine)


def test_answered_results_are_flushed_while_the_engine_waits(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    GateEngine.release.clear()
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines(3)), model="gate",
                          engine={"provider": "gate"})
    wb.start_worker()
    try:
        # the second result never comes until released: the first one must not wait for it
        wait_until(lambda: job.info.completed == 1, 10, "the first result counted")
        assert len(job.output_path.read_text().splitlines()) == 1
        assert job.status == "in_progress"
        GateEngine.release.set()
        job.wait(timeout=30, progress=False)
        assert (job.status, job.info.completed) == ("completed", 3)
    finally:
        GateEngine.release.set()
        wb.stop_workers()


def test_worker_process_does_not_log_every_http_request(tmp_path: Path) -> None:
    fake = FakeOpenAI().start()
    wb = make_wb(tmp_path / "wb")
    job = submit(wb, tmp_path, 5, fake.url)
    proc = spawn_worker(wb.root, "--exit-when-idle")
    try:
        _, err = proc.communicate(timeout=120)
        text = err.decode()
        assert proc.returncode == 0, text
        assert job.status == "completed" and sum(fake.answered().values()) == 5
        assert "workbench.worker" in text  # the worker does log at INFO...
        assert "HTTP Request" not in text  # ...but not one line per request
    finally:
        fake.stop()
        if proc.poll() is None:
            proc.kill()


def test_readme_documents_the_openai_provider_and_cli(tmp_path: Path) -> None:
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    # the README's CLI lines are runnable (tests/test_readme_cli.py runs them): no placeholders
    assert "workbench submit requests.jsonl --engine openai --base-url http" in readme
    assert '"provider": "openai"' in readme and "api_key_env" in readme
    assert "errors.superseded.jsonl" in readme and "retry_failed" in readme
    import subprocess

    from tests.conftest import worker_env

    src = write_jsonl(tmp_path / "in.jsonl", lines(2))
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "--root", str(tmp_path / "wb"),
                          "--json", "submit", str(src), "--engine", "openai", "--base-url",
                          "http://127.0.0.1:9/v1", "--model", "m"],
                         env=worker_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    spec = make_wb(tmp_path / "wb").store.get(json.loads(out.stdout)["job"]).spec
    assert (spec["engine"]["provider"], spec["engine"]["base_url"]) == ("openai",
                                                                        "http://127.0.0.1:9/v1")
