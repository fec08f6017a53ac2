"""The outage scenario of issue 15 against the REAL vLLM OpenAI server (tiny Llama).

`python -m vllm.entrypoints.openai.api_server --api-key ... --enable-log-requests
--middleware tests.vllm_answer_log.AnswerLog`, started once for the module. The engine
sends `X-Request-Id: <custom_id>-<8 hex>`; vLLM's request log ("Received request
chatcmpl-<that>") and the middleware's answer log (written inside the server just before
each answer leaves) say which request each server run received and answered. Its process group is
killed with SIGKILL at ~30 % of a 600-request job and a new server is started on the same
port; the job must end completed with 600 successes and no error line, every request
answered once per server run, and the job message must have shown the outage.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.batch_helpers import request_lines, write_jsonl
from tests.conftest import REPO, make_wb, wait_until
from tests.fake_openai import free_port
from tests.job_watch import Sampler, ids_per_line

pytestmark = pytest.mark.vllm

KEY = "sk-test-vllm-resilience"
_ANSWERED = re.compile(r"^answered (\S+)-[0-9a-f]{8} 200$", re.M)
_RECEIVED = re.compile(r"Received request chatcmpl-(\S+)-[0-9a-f]{8}: params")


class Server:
    """One port, successive server processes (each in its own process group and log)."""

    def __init__(self, model: Path, tmp: Path) -> None:
        self.model, self.tmp, self.port = model, tmp, free_port()
        self.runs: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        log_path = self.tmp / f"server-{len(self.runs)}.log"
        self.runs.append(log_path)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
               "VLLM_RPC_BASE_PATH": str(self.tmp), "VLLM_CACHE_ROOT": str(self.tmp / "cache"),
               "TMPDIR": str(self.tmp), "WB_TEST_ANSWER_LOG": str(self.answers(len(self.runs) - 1)),
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
                 str(self.model), "--host", "127.0.0.1", "--port", str(self.port),
                 "--enforce-eager", "--max-model-len", "512", "--dtype", "float32",
                 "--served-model-name", "tiny", "--api-key", KEY, "--enable-log-requests",
                 "--middleware", "tests.vllm_answer_log.AnswerLog"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, \
                self.runs[-1].read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("vLLM server did not become healthy")

    def kill(self) -> None:
        """kill -9 the whole process group (API server and any engine process)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def answers(self, run: int) -> Path:
        return self.tmp / f"answers-{run}.log"

    def received(self, run: int) -> Counter[str]:
        """vLLM's own request log: custom_ids this server run received."""
        return Counter(m.group(1) for m in _RECEIVED.finditer(self.runs[run].read_text()))

    def answered(self, run: int) -> Counter[str]:
        """The middleware's log: custom_ids this server run answered with 200."""
        path = self.answers(run)
        text = path.read_text() if path.exists() else ""
        return Counter(m.group(1) for m in _ANSWERED.finditer(text))


@pytest.fixture(scope="module")
def server(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tiny_llama, tmp_path_factory.mktemp("vllm-resilience"))
    srv.start()
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


def test_401_from_the_real_server_is_final_and_fails_the_job(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WB_TEST_VLLM_WRONG_KEY", "sk-wrong")
    wb = make_wb(tmp_path / "wb")
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", request_lines(5)), model="tiny",
                          engine={"provider": "openai", "base_url": server.url,
                                  "api_key_env": "WB_TEST_VLLM_WRONG_KEY", "concurrency": 4})
    wb.start_worker()
    try:
        job.wait(timeout=120, progress=False)
        assert job.status == "failed", job.info
        assert job.info.error.startswith(
            f"all 5 requests failed: HTTP 401 unauthorized from {server.url}")
        errs = [json.loads(x) for x in job.errors_path.read_text().splitlines()]
        assert [e["response"]["status_code"] for e in errs] == [401] * 5
        assert {(e["error"]["workbench"]["class"], e["error"]["workbench"]["attempts"])
                for e in errs} == {("final", 1)}
    finally:
        wb.stop_workers()


def test_server_killed_at_30_percent_and_restarted_loses_and_duplicates_nothing(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WB_TEST_VLLM_KEY", KEY)
    n = 600
    lines = request_lines(n, max_tokens=4)
    wb = make_wb(tmp_path / "wb")
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines), model="tiny",
                          engine={"provider": "openai", "base_url": server.url,
                                  "api_key_env": "WB_TEST_VLLM_KEY", "concurrency": 8,
                                  "probe_every_s": 2.0, "outage_deadline_s": 300})
    sampler = Sampler(job, every_s=0.1)
    wb.start_worker()
    try:
        wait_until(lambda: job.info.completed >= 0.3 * n, 300, "30 % answered", interval=0.05)
        done_at_kill = job.info.completed
        server.kill()
        killed_at = time.monotonic()
        server.start()
        wait_until(lambda: job.info.message.startswith("server unreachable since"), 60,
                   "the outage in the job message")
        server.wait_healthy()
        back_at = time.monotonic()
        job.wait(timeout=300, progress=False)
        messages = sampler.stop()
    finally:
        wb.stop_workers()
    r = job.info
    assert (r.status.value, r.completed, r.failed) == ("completed", n, 0), r
    assert not job.errors_path.exists() or not job.errors_path.read_text()
    assert ids_per_line(job) == Counter({f"r{i}": 1 for i in range(n)})
    assert sampler.dupes == 0
    outage = [m for m in messages if m.startswith("server unreachable since ")]
    assert outage and "retrying every 2 s" in outage[0] and server.url in outage[0], messages
    assert any(m.startswith("server back after ") for m in messages), messages

    # the servers' logs, per run: no server received or answered a request twice
    got = [server.received(i) for i in (0, 1)]
    answered = [server.answered(i) for i in (0, 1)]
    for c in got + answered:
        assert c and max(c.values()) == 1, c.most_common(3)
    everyone = {f"r{i}" for i in range(n)}
    assert set(got[0]) | set(got[1]) == everyone
    resent = set(got[0]) & set(got[1])  # in flight at the kill, sent again after the restart
    # each request was answered exactly once: before the kill or after the restart ...
    assert set(answered[0]) | set(answered[1]) == everyone
    assert not (set(answered[0]) & set(answered[1])) - resent
    # ... except an answer the killed server was sending when it died (logged just before
    # it left), which had to be asked again: only requests in flight at the kill
    lost_in_kill = set(answered[0]) & set(answered[1])
    # (usually some; none when the kill fell between two answers and the next sends,
    # which happened once on a loaded machine: the properties above still hold)
    assert len(resent) <= 8 and set(answered[1]) >= resent, (resent, lost_in_kill)
    http = r.metrics["http"]
    assert http["outages"] == 1 and http["probes"] >= 1 and http["requeued"] <= 8, http
    print(f"\nkill at {done_at_kill}/{n} answered; server back after "
          f"{back_at - killed_at:.1f} s; job paused {http['paused_s']} s; attempts "
          f"{http['attempts']}, retries {http['retries']}, requeued {http['requeued']}, probes "
          f"{http['probes']}; in flight at the kill {len(resent)}, answers lost in the kill "
          f"{len(lost_in_kill)}; received by server 1 "
          f"{sum(got[0].values())}, by server 2 {sum(got[1].values())}; "
          f"messages {len(messages)}: {outage[0]!r}")
