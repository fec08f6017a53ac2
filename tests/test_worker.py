"""Worker: claims, crash recovery with real `kill -9`, two workers, cancel, resume, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import make_wb, spawn_worker, wait_until, worker_env
from workbench import IllegalTransition, Status, Workbench


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _submit_count(wb: Workbench, n: int, **spec: object) -> str:
    return wb.store.create_job("count", {"n": n, **spec}, total=n)


def _wait_until(pred, timeout: float = 60, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    wait_until(pred, timeout, what, interval=0.02)


@pytest.mark.parametrize("kill_after", [1, 7, 15, 24, 38])
def test_kill_9_worker_then_resume_exactly_once(tmp_path: Path, kill_after: int) -> None:
    wb = make_wb(tmp_path / "wb")
    jid = _submit_count(wb, 40, sleep=0.03)
    out = wb.store.job_dir(jid) / "output.jsonl"
    w1 = spawn_worker(wb.root)
    _wait_until(lambda: len(_lines(out)) >= kill_after, what=f"{kill_after} units")
    os.kill(w1.pid, signal.SIGKILL)
    w1.wait()
    first_pid = w1.pid
    # a reader sees it at once (its process on this host is gone), with no worker running
    seen = wb.store.get(jid)
    assert seen.status is Status.INTERRUPTED, seen
    assert f"worker {first_pid} on " in seen.message and "logged no error" in seen.message
    written_before = len(_lines(out))
    assert kill_after <= written_before < 40

    w2 = spawn_worker(wb.root, "--exit-when-idle")
    assert w2.wait(timeout=120) == 0, w2.stderr.read().decode()
    job = wb.store.get(jid)
    assert job.status is Status.COMPLETED, job
    ids = Counter(r["custom_id"] for r in _lines(out))
    assert set(ids) == {f"u{i}" for i in range(40)}
    assert max(ids.values()) == 1, [k for k, v in ids.items() if v > 1]
    assert (job.completed, job.failed, job.total, job.attempts) == (40, 0, 40, 2)
    pids = Counter(r["pid"] for r in _lines(out))
    assert pids[first_pid] == written_before and pids[w2.pid] == 40 - written_before
    names = [e["name"] for e in wb.store.events(jid)]
    assert "worker_lost" in names
    assert [e["data"]["to"] for e in wb.store.events(jid, "status")] == [
        "interrupted", "finalizing", "completed"]


def test_torn_last_line_is_repaired_on_resume(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    jid = _submit_count(wb, 6)
    out = wb.store.job_dir(jid) / "output.jsonl"
    out.write_text('{"custom_id":"u0","square":0,"pid":1}\n{"custom_id":"u1","squ')
    wb.store.conn.execute("UPDATE jobs SET status='interrupted' WHERE id=?", (jid,))
    p = spawn_worker(wb.root, "--exit-when-idle")
    assert p.wait(timeout=60) == 0
    rows = _lines(out)
    assert [r["custom_id"] for r in rows] == [f"u{i}" for i in range(6)]
    assert rows[0]["pid"] == 1 and wb.store.get(jid).completed == 6


def test_two_workers_never_run_the_same_job(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb", max_queued_jobs=100)
    jobs = [_submit_count(wb, 5, sleep=0.01) for _ in range(16)]
    ws = [spawn_worker(wb.root, "--exit-when-idle") for _ in range(2)]
    for w in ws:
        assert w.wait(timeout=120) == 0
    owners = Counter()
    for jid in jobs:
        rows = _lines(wb.store.job_dir(jid) / "output.jsonl")
        assert [r["custom_id"] for r in rows] == [f"u{i}" for i in range(5)]
        pids = {r["pid"] for r in rows}
        assert len(pids) == 1, f"{jid} was run by {pids}"
        owners[pids.pop()] += 1
        assert len(wb.store.events(jid, "claimed")) == 1
        assert wb.store.get(jid).status is Status.COMPLETED
    assert sum(owners.values()) == 16 and set(owners) <= {w.pid for w in ws}


def test_cancel_running_job_keeps_partial_results_and_resume_finishes(wb: Workbench) -> None:
    jid = _submit_count(wb, 200, sleep=0.01)
    job = wb.job(jid)
    wb.start_worker()
    _wait_until(lambda: job.info.completed >= 5, what="5 units")
    job.cancel()
    assert job.status in ("cancelling", "cancelled")
    job.wait(timeout=30, progress=False)
    r = job.info
    assert r.status is Status.CANCELLED and 5 <= r.completed < 200
    partial = len(job.results())
    assert partial == r.completed
    job.resume().wait(timeout=60, progress=False)
    df = job.results()
    assert job.status == "completed" and len(df) == 200 and df["custom_id"].is_unique


def test_cancel_queued_job_is_immediate_and_illegal_moves_raise(wb: Workbench) -> None:
    job = wb.job(_submit_count(wb, 3))
    assert job.cancel().status == "cancelled"
    with pytest.raises(IllegalTransition):
        wb.store.transition(job.id, Status.IN_PROGRESS)
    done = wb.job(_submit_count(wb, 2))
    wb.start_worker()
    done.wait(timeout=30, progress=False)
    with pytest.raises(IllegalTransition, match="'completed' to 'queued'"):
        done.resume()


def test_runner_exception_fails_job_with_reason(wb: Workbench) -> None:
    jid = wb.store.create_job("boom", {}, total=1)
    wb.start_worker()
    job = wb.job(jid).wait(timeout=30, progress=False)
    assert job.status == "failed"
    assert job.info.error == "RuntimeError: engine would not start"


def test_failed_units_are_error_lines_not_a_failed_job(wb: Workbench) -> None:
    jid = _submit_count(wb, 5, fail_units=[1, 3])
    wb.start_worker()
    job = wb.job(jid).wait(timeout=30, progress=False)
    assert (job.status, job.info.completed, job.info.failed) == ("completed", 3, 2)
    assert [r["custom_id"] for r in _lines(job.errors_path)] == ["u1", "u3"]


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbench.cli", "--root", str(root), *args],
                          env=worker_env(), capture_output=True, text=True, timeout=120)


def test_cli_human_and_json(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    jid = _submit_count(wb, 3)
    listed = json.loads(_cli(wb.root, "--json", "jobs").stdout)
    assert [(j["id"], j["status"]) for j in listed] == [(jid, "queued")]
    assert jid in _cli(wb.root, "jobs").stdout
    assert _cli(wb.root, "worker", "--exit-when-idle").returncode == 0
    st = json.loads(_cli(wb.root, "--json", "status", jid).stdout)
    assert (st["status"], st["completed"]) == ("completed", 3)
    w = _cli(wb.root, "--json", "wait", jid, "--timeout", "5")
    assert w.returncode == 0 and json.loads(w.stdout)["status"] == "completed"
    bad = _cli(wb.root, "resume", jid)
    assert bad.returncode == 2 and "cannot go from 'completed' to 'queued'" in bad.stderr
    missing = _cli(wb.root, "--json", "status", "nope")
    assert missing.returncode == 2 and json.loads(missing.stdout)["error"] == "JobNotFound"
    j2 = _submit_count(wb, 3)
    assert json.loads(_cli(wb.root, "--json", "cancel", j2).stdout)["status"] == "cancelled"
    purged = json.loads(_cli(wb.root, "--json", "purge", "--days", "0").stdout)["purged"]
    assert sorted(purged) == sorted([jid, j2])
    # retention is its own field: the status stays, the files are gone
    assert wb.store.get(jid).status is Status.COMPLETED and not wb.store.job_dir(jid).exists()
    assert wb.store.get(jid).purged_at is not None and wb.store.get(j2).status is Status.CANCELLED


def test_cli_global_flags_go_before_or_after_the_command_and_jobs_filter(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    done, queued = _submit_count(wb, 2), _submit_count(wb, 2)
    wb.store.transition(done, Status.CANCELLED)
    root = str(wb.root)
    for argv in (["--root", root, "--json", "jobs"], ["--root", root, "jobs", "--json"],
                 ["jobs", "--root", root, "--json"], ["--json", "jobs", "--root", root]):
        out = subprocess.run([sys.executable, "-m", "workbench.cli", *argv], env=worker_env(),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (argv, out.stderr)
        assert [j["id"] for j in json.loads(out.stdout)] == [done, queued], argv
    by_status = json.loads(_cli(wb.root, "jobs", "--status", "queued", "--json").stdout)
    assert [j["id"] for j in by_status] == [queued]
    assert json.loads(_cli(wb.root, "jobs", "--kind", "batch", "--json").stdout) == []
    assert [j["id"] for j in json.loads(_cli(wb.root, "jobs", "--kind", "count", "--json",
                                             "--status", "cancelled").stdout)] == [done]
    st = _cli(wb.root, "status", queued, "--json")
    assert json.loads(st.stdout)["id"] == queued
    human = _cli(wb.root, "jobs", "--status", "cancelled").stdout
    assert done in human and queued not in human


def test_cli_submit_engine_flags_map_to_the_engine_spec(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.batch_helpers import request_lines, write_jsonl

    monkeypatch.setenv("MY_KEY", "k")  # a named key must be set at submit (never stored)
    wb = make_wb(tmp_path / "wb")
    path = str(write_jsonl(tmp_path / "in.jsonl", request_lines(2)))
    out = _cli(wb.root, "submit", path, "--engine", "openai", "--base-url", "http://h:1/v1",
               "--api-key-env", "MY_KEY", "--model", "qwen", "--window", "7", "--json")
    job = wb.store.get(json.loads(out.stdout)["job"])
    assert job.spec["engine"] == {"provider": "openai", "model": "qwen", "base_url": "http://h:1/v1",
                                  "api_key_env": "MY_KEY"} and job.spec["window"] == 7
    ray = _cli(wb.root, "submit", path, "--engine", "ray", "--replicas", "3", "-q").stdout.strip()
    assert wb.store.get(ray).spec["engine"]["replicas"] == 3
    two = _cli(wb.root, "submit", path, "--model", "a=/m/a", "--model", "b=/m/b", "-q",
               "--completion-window", "2h").stdout.strip()
    spec = wb.store.get(two).spec
    assert (spec["model"], sorted(spec["models"]), spec["models"]["b"]["model"]) == (
        "a", ["a", "b"], "/m/b")
    assert wb.store.get(two).deadline_at == pytest.approx(wb.store.get(two).created_at + 7200)
    implied = _cli(wb.root, "submit", path, "--base-url", "http://h:2/v1", "--model", "m", "-q")
    assert wb.store.get(implied.stdout.strip()).spec["engine"]["provider"] == "openai"
    for argv, msg in ((["--replicas", "2"], "--replicas with --engine ray"),
                      (["--engine", "vllm", "--replicas", "2"], "--replicas goes with --engine ray"),
                      (["--engine", "ray", "--base-url", "http://x"], "go with --engine openai"),
                      (["--completion-window", "soon"], "completion window 'soon'")):
        bad = _cli(wb.root, "submit", path, *argv)
        assert bad.returncode == 2 and msg in bad.stderr, (argv, bad.stderr)
    assert len(wb.store.list_jobs()) == 4
