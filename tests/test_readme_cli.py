"""Every CLI line of the README runs exactly as printed (the shell blocks and the inline
`workbench serve` spans; other inline spans name commands the blocks run): in a folder holding a small `requests.jsonl`, with WORKBENCH_ROOT,
WORKBENCH_MODEL (the tiny Llama), WORKBENCH_PORT and OPENAI_API_KEY (a dummy) set. `workbench serve` lines run in
the background until /health answers, then get Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.batch_helpers import request_lines, write_jsonl
from tests.conftest import REPO, make_wb, worker_env
from tests.server_helpers import free_port

README = REPO / "README.md"
#: the serve lines get their own store (see serve_until_healthy); the blocks share one
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
INLINE = re.compile(r"(?<!`)`(workbench [^`]*)`")


def cli_blocks() -> list[str]:
    return [b for b in BLOCK.findall(README.read_text()) if re.search(r"^\s*[^#]*\bworkbench ",
                                                                       b, re.M)]


def inline_commands() -> list[str]:
    return INLINE.findall(README.read_text())


def serve_until_healthy(line: str, env: dict[str, str], cwd: Path) -> list[str]:
    """Run one `workbench serve ...` line on a store of its own (its worker thread must not
    take the CLI blocks' queued jobs); return the model names it serves."""
    env = {**env, "WORKBENCH_ROOT": str(cwd / f"serve-{time.monotonic_ns()}")}
    proc = subprocess.Popen(["bash", "-c", line], cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{env['WORKBENCH_PORT']}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            try:
                assert httpx.get(f"{url}/health").json()["status"] == "ok"
                return [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"{line!r} did not come up"
                time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]


@pytest.mark.vllm
def test_every_cli_line_of_the_readme_runs_as_printed(tiny_llama: Path, tmp_path: Path) -> None:
    blocks = cli_blocks()
    assert len(blocks) >= 3, "the README's shell blocks were not found"
    write_jsonl(tmp_path / "requests.jsonl", request_lines(3, max_tokens=4))
    (tmp_path / "recordings").mkdir()  # `workbench serve --media-dir recordings`
    env = worker_env(WORKBENCH_ROOT=str(tmp_path / "wb"), WORKBENCH_MODEL=str(tiny_llama),
                     WORKBENCH_PORT=str(free_port()), OPENAI_API_KEY="sk-readme-test")
    env.pop("WORKBENCH_API_KEY", None)
    env["PATH"] = f"{Path(os.sys.executable).parent}{os.pathsep}{env['PATH']}"
    served: list[list[str]] = []
    for block in blocks:
        lines = [x for x in block.splitlines() if x.strip() and not x.lstrip().startswith("#")]
        if all(x.lstrip().startswith("workbench serve") for x in lines):
            served += [serve_until_healthy(x, env, tmp_path) for x in lines]
            continue
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{block}\n--- stdout\n{run.stdout[-3000:]}\n--- stderr\n" \
                                    f"{run.stderr[-3000:]}"
    # inline spans: `workbench serve` runs as printed; a bare command named in prose
    # (`workbench resume`) must be one the blocks above ran
    block_lines = [x.strip() for b in blocks for x in b.splitlines()]
    inline = sorted(set(inline_commands()))
    assert "workbench serve" in inline, inline
    for line in inline:
        if line.startswith("workbench serve"):
            served.append(serve_until_healthy(line, env, tmp_path))
        else:
            assert any(b.startswith(line) or f"$({line}" in b for b in block_lines), line
    assert ["gpt-4o-mini", "scorer"] in served and ["tiny-llama"] in served

    # what the lines did, read from the store
    wb = make_wb(tmp_path / "wb")
    jobs = wb.store.list_jobs(kind="batch")
    assert len(jobs) == 6, [(j.id, j.status) for j in jobs]
    first, job, later, named, remote, ray = jobs
    assert first.status.value == job.status.value == "completed" and job.completed == 3
    assert later.status.value == "queued" and later.deadline_at == pytest.approx(
        later.created_at + 86400)
    assert later.message == "resumed"
    assert set(named.spec["models"]) == {"scorer", "judge"} and named.spec["model"] == "scorer"
    assert (remote.spec["engine"]["provider"], remote.spec["engine"]["base_url"],
            remote.spec["engine"]["api_key_env"], remote.spec["model"]) == (
        "openai", "http://127.0.0.1:8000/v1", "OPENAI_API_KEY", "qwen")
    assert (ray.spec["engine"]["provider"], ray.spec["engine"]["replicas"]) == ("ray", 2)
    assert "sk-readme-test" not in json.dumps([j.spec for j in jobs])  # the name, never the key
