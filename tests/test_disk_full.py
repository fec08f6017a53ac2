"""A full disk is a state, not a crash (issue 19), on a real small filesystem (tmpfs).

Before: on a store whose disk filled mid-job the detached worker died (the ENOSPC of a
result write was raised again by the file's close), the job read `in_progress` forever,
`workbench submit` ended in a traceback and `POST /v1/files` answered 500.

Each test mounts its own tmpfs (skipped with the reason where mounting is refused) and
fills it at a chosen moment with a filler file; freeing it is deleting that file.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.batch_helpers import direct_outputs, request_lines, write_jsonl
from tests.conftest import FAST, spawn_worker, wait_until, worker_env
from tests.disk_fill import MIB, fill, small_fs
from tests.server_helpers import LiveServer
from workbench import Limits, Workbench
from workbench.store import disk

N = 1500


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    raw = path.read_bytes()
    assert not raw or raw.endswith(b"\n"), f"{path.name} ends in a torn line"
    return [json.loads(x) for x in raw.splitlines()]


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as c:
        return c.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.fixture
def floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_MIN_FREE_MB", "4")
    monkeypatch.setenv("WORKBENCH_DISK_RESERVE_MB", "2")


@pytest.mark.vllm
def test_disk_fills_mid_job_worker_lives_job_pauses_in_words_then_completes_exactly_once(
        tmp_path: Path, tiny_llama: Path, floor: None) -> None:
    from workbench.engines import pool
    from workbench.models import engine_spec

    lines = request_lines(N)
    spec = engine_spec(str(tiny_llama))
    spec.pop("model_name")
    try:
        reference = direct_outputs(pool.acquire(spec), lines)  # the same requests, normal disk
    finally:
        pool.release()
    with small_fs(48) as mnt:
        root = mnt / "wb"
        wb = Workbench(root, timing=FAST)
        job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines), model=str(tiny_llama))
        out = job.output_path
        w = spawn_worker(root, WORKBENCH_MIN_FREE_MB="4", WORKBENCH_DISK_RESERVE_MB="2")
        try:
            wait_until(lambda: len(_lines(out)) >= 400, timeout=300, what="400 results")
            filler = fill(mnt)  # every last page
            filled_at = time.monotonic()
            at_fill = len(_lines(out))
            wait_until(lambda: job.info.status.value == "interrupted", timeout=30,
                       what="the job to pause")
            to_message = time.monotonic() - filled_at
            info = job.info
            assert info.message.startswith("paused: disk full — "), info.message
            assert f"free on {root.resolve()} (needs 4 MiB); free space and it resumes" in \
                info.message
            t = time.monotonic()
            job.wait(timeout=30, progress=False)  # returns: the job waits for space
            assert time.monotonic() - t < 30
            assert w.poll() is None, "the worker died of the full disk"
            assert _integrity(root / "workbench.db") == "ok"
            at_pause = len(_lines(out))  # complete lines only (_lines fails on a torn one)
            assert at_fill <= at_pause < N

            filler.unlink()
            freed_at = time.monotonic()
            wait_until(lambda: job.info.status.value != "interrupted", timeout=60,
                       what="the worker to resume the job by itself")
            to_resume = time.monotonic() - freed_at
            job.wait(timeout=300, progress=False)
            to_done = time.monotonic() - freed_at
            assert job.status == "completed", job.info
        finally:
            w.send_signal(signal.SIGTERM)
            w.wait(timeout=60)
        got = _lines(out)
        ids = Counter(r["custom_id"] for r in got)
        assert len(ids) == N and max(ids.values()) == 1 and not _lines(job.errors_path)
        content = {r["custom_id"]: r["response"]["body"]["choices"][0]["message"]["content"]
                   for r in got}
        assert content == reference
        assert _integrity(root / "workbench.db") == "ok"
        print(f"\nfull disk at {at_fill}/{N} lines ({at_pause} written when it paused): "
              f"paused in words after {to_message:.2f} s; freed → resumed after "
              f"{to_resume:.2f} s, completed {N}/{N} once after {to_done:.2f} s")


def test_below_the_floor_a_job_pauses_before_the_disk_is_full(
        tmp_path: Path, floor: None) -> None:
    """The floor, not ENOSPC: free space drops under WORKBENCH_MIN_FREE_MB mid-job."""
    import tests.kinds  # noqa: F401  (the count kind)

    with small_fs(32) as mnt:
        wb = Workbench(mnt / "wb", timing=FAST)
        jid = wb.store.create_job("count", {"n": 300, "sleep": 0.01}, total=300)
        job = wb.job(jid)
        wb.start_worker()
        try:
            wait_until(lambda: job.info.completed >= 50, what="50 units")
            filler = fill(mnt, leave_bytes=3 * MIB)  # above zero, below the 4 MiB floor
            wait_until(lambda: job.info.status.value == "interrupted", timeout=10,
                       what="the pause")
            info = job.info
            assert info.message.startswith("paused: disk full — 3 MiB free on "), info.message
            assert disk.free_bytes(mnt) > 0  # it paused before the disk was full
            job.wait(timeout=10, progress=False)
            filler.unlink()
            wait_until(lambda: job.info.status.value != "interrupted", timeout=30,
                       what="the worker to resume it by itself")
            job.wait(timeout=60, progress=False)
            assert job.status == "completed"
        finally:
            wb.stop_workers()
        ids = Counter(r["custom_id"] for r in _lines(job.output_path))
        assert len(ids) == 300 and max(ids.values()) == 1


def _submit(root: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbench.cli", "--root", str(root), "submit",
                           str(path), "--model", "some-model"],
                          env=worker_env(WORKBENCH_MIN_FREE_MB="4"), capture_output=True,
                          text=True, timeout=120)


def test_submit_on_a_full_disk_says_so_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    small = write_jsonl(tmp_path / "small.jsonl", request_lines(20))
    big_lines = request_lines(600)
    for x in big_lines:
        x["body"]["messages"][0]["content"] += " pad" * 2500  # ~10 KB a line, ~6 MB in all
    big = write_jsonl(tmp_path / "big.jsonl", big_lines)
    with small_fs(16) as mnt:
        root = mnt / "wb"
        Workbench(root)  # the store exists
        fill(mnt, leave_bytes=5 * MIB)  # above the 4 MiB floor, less than the big file
        for path, why in ((big, "fills while copied"), (small, "below the floor")):
            p = _submit(root, path)
            assert p.returncode == 2, (why, p.returncode, p.stderr)
            err = p.stderr.strip().splitlines()
            assert len(err) == 1 and "Traceback" not in p.stderr, (why, p.stderr)
            assert err[0].startswith("error: disk full: "), err
            assert f"free on {root.resolve()} (needs 4 MiB); nothing was queued" in err[0]
            assert Workbench(root).store.list_jobs() == []
            assert list((root / "staging").iterdir()) == [], why
            assert list((root / "jobs").iterdir()) == []
            fill(mnt, name="filler2")  # the second case: below the floor


def test_upload_on_a_full_disk_is_507_in_openai_shape_and_nothing_is_listed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.server.app import create_app

    monkeypatch.setenv("WORKBENCH_MIN_FREE_MB", "4")
    lines = request_lines(600)
    for x in lines:
        x["body"]["messages"][0]["content"] += " pad" * 2500
    big = write_jsonl(tmp_path / "big.jsonl", lines)
    with small_fs(16) as mnt:
        wb = Workbench(mnt / "wb", limits=Limits())
        with LiveServer(create_app(wb, api_key="", model="m")) as srv:
            client = srv.client()
            fill(mnt, leave_bytes=5 * MIB)
            for case in ("fills while copied", "below the floor"):
                with open(big, "rb") as f, pytest.raises(openai.APIStatusError) as e:
                    client.files.create(file=f, purpose="batch")
                assert e.value.status_code == 507, case
                err = e.value.body if isinstance(e.value.body, dict) else {}
                err = err.get("error", err)
                assert err["code"] == "disk_full" and err["type"] == "server_error"
                assert err["message"].startswith("the server's disk is full (")
                assert "nothing was stored" in err["message"]
                assert str(mnt) not in err["message"]  # no server path in an HTTP answer
                assert client.files.list().data == []
                assert [p.name for p in (wb.root / "files").iterdir()] == []
                fill(mnt, name="filler2")


def test_partial_uploads_of_a_dead_server_are_removed_at_start(tmp_path: Path) -> None:
    from workbench.server.app import create_app

    wb = Workbench(tmp_path / "wb")
    files = wb.root / "files"
    files.mkdir()
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    left = files / f".file-{'a' * 32}.{dead}.part"
    left.write_bytes(b"x" * 1000)
    legacy = files / f".file-{'b' * 32}.part"  # named before pids were
    legacy.write_bytes(b"y")
    live = files / f".file-{'c' * 32}.{os.getpid()}.part"  # a live server's upload
    live.write_bytes(b"z")
    up = wb.root / "uploads" / f"{dead}-{'d' * 32}"
    up.mkdir(parents=True)
    (up / "video.mp4").write_bytes(b"v")
    create_app(wb, api_key="", model="m")
    assert sorted(p.name for p in files.iterdir()) == [live.name]
    assert list((wb.root / "uploads").iterdir()) == []


def test_the_limits_the_readme_states_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.server.security import max_upload_from_env

    for var in ("WORKBENCH_MIN_FREE_MB", "WORKBENCH_DISK_RESERVE_MB", "WORKBENCH_MAX_UPLOAD_BYTES"):
        monkeypatch.delenv(var, raising=False)
    assert disk.min_free_bytes() == 200 * MIB
    assert disk.reserve_bytes() == 4 * MIB
    assert max_upload_from_env() == 200 * MIB


def test_doctor_names_a_full_store_disk_and_how_ray_authenticates(tmp_path: Path) -> None:
    from tests.test_doctor import doctor

    with small_fs(16) as mnt:
        root = mnt / "wb"
        Workbench(root)
        fill(mnt, leave_bytes=3 * MIB)
        env_before = os.environ.get("WORKBENCH_MIN_FREE_MB")
        os.environ["WORKBENCH_MIN_FREE_MB"] = "4"
        try:
            r = doctor(root=root)
        finally:
            if env_before is None:
                os.environ.pop("WORKBENCH_MIN_FREE_MB")
            else:
                os.environ["WORKBENCH_MIN_FREE_MB"] = env_before
    assert r.returncode == 1, r.stdout + r.stderr
    assert (f"PROBLEM: the store's disk is full: 3 MiB free where the store lives "
            f"({root.resolve()}), below WORKBENCH_MIN_FREE_MB (4 MiB)") in r.stdout, r.stdout
    assert "fix: free disk space there (paused jobs resume by themselves)" in r.stdout
    assert "a random token in the environment for each local cluster (never on disk)" in r.stdout
