"""A dead worker is seen by every reader, not only by the next worker (issue 19).

Before: a detached worker killed mid-job (kill -9, the OOM killer) left its job reading
`in_progress` for as long as no other worker started: `job.wait()` blocked forever,
`job.resume()` was refused, `workbench status` and the dashboard said it was running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_wb, spawn_worker, wait_until, worker_env
from tests.server_helpers import LiveServer
from workbench import Status
from workbench.store import Store
from workbench.store.liveness import WORKER_ERROR


def _ids(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(json.loads(x)["custom_id"] for x in path.read_text().splitlines())


def test_kill_9_detached_worker_every_reader_sees_interrupted_then_resume_completes(
        tmp_path: Path) -> None:
    from workbench.server.app import create_app

    wb = make_wb(tmp_path / "wb")
    jid = wb.store.create_job("count", {"n": 120, "sleep": 0.02}, total=120)
    out = wb.store.job_dir(jid) / "output.jsonl"
    w = spawn_worker(wb.root)
    wait_until(lambda: len(_ids(out)) >= 30, what="30 units written")
    os.kill(w.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    w.wait()
    written = sum(_ids(out).values())

    job = wb.job(jid)
    wait_until(lambda: job.info.status is Status.INTERRUPTED, timeout=wb.timing.stale_after_s,
               what="the job to read interrupted within the stale time")
    seen_after = time.monotonic() - killed_at
    info = job.info
    assert f"worker {w.pid} on " in info.message and "died" in info.message, info.message
    assert "last heard from" in info.message and "logged no error" in info.message
    assert info.worker is None

    t = time.monotonic()
    assert job.wait(timeout=30, progress=False) is job  # returns: nobody will take it up
    wait_s = time.monotonic() - t

    # the shell and the HTTP jobs API say the same
    env = worker_env()
    st = subprocess.run([sys.executable, "-m", "workbench.cli", "--root", str(wb.root), "status",
                         jid, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["status"] == "interrupted"
    with LiveServer(create_app(wb, api_key="")) as srv:
        got = httpx.get(f"{srv.url}/v1/jobs/{jid}", timeout=10).json()
    assert got["status"] == "interrupted" and "died" in got["progress_message"], got

    job.resume()
    assert job.status == "queued"
    w2 = spawn_worker(wb.root, "--exit-when-idle")
    assert w2.wait(timeout=120) == 0, w2.stderr.read().decode()
    ids = _ids(out)
    assert set(ids) == {f"u{i}" for i in range(120)} and max(ids.values()) == 1
    assert job.status == "completed"
    print(f"\nkill -9 at {written}/120 units: interrupted after {seen_after:.2f} s, "
          f"wait() returned in {wait_s:.2f} s, resumed and completed 120/120 once")


def test_a_worker_on_another_host_is_dead_after_the_stale_time_with_its_last_error(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "wb", stale_after_s=2.0)
    jid = store.create_job("count", {"n": 3}, total=3)
    holder = "gpu-box-7:4242:abc123"
    store.conn.execute("UPDATE jobs SET status='in_progress', worker=?, heartbeat_at=? WHERE id=?",
                       (holder, time.time(), jid))
    assert store.get(jid).status is Status.IN_PROGRESS  # fresh beats: alive
    store.add_event(None, WORKER_ERROR, {"worker": holder,
                                         "error": "OSError: [Errno 5] Input/output error"})
    store.conn.execute("UPDATE jobs SET heartbeat_at=? WHERE id=?", (time.time() - 9, jid))
    row = store.get(jid)
    assert row.status is Status.INTERRUPTED
    assert row.message.startswith("interrupted: worker 4242 on gpu-box-7 died, last heard from 9 s")
    assert "its last error: OSError: [Errno 5] Input/output error" in row.message
    assert [e["name"] for e in store.events(jid)][-2:] == ["worker_lost", "status"]
    # the list every dashboard reads agrees
    assert [r.status for r in store.list_jobs()] == [Status.INTERRUPTED]


def test_a_live_worker_on_this_host_is_not_declared_dead_by_readers(tmp_path: Path) -> None:
    """Readers ask the process on this host; late beats alone do not kill a busy worker."""
    store = Store(tmp_path / "wb", stale_after_s=0.1)
    jid = store.create_job("count", {"n": 3}, total=3)
    import socket

    me = f"{socket.gethostname()}:{os.getpid()}:abcdef"
    store.conn.execute("UPDATE jobs SET status='in_progress', worker=?, heartbeat_at=? WHERE id=?",
                       (me, time.time() - 60, jid))
    assert store.get(jid).status is Status.IN_PROGRESS
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    store.conn.execute("UPDATE jobs SET worker=? WHERE id=?",
                       (f"{socket.gethostname()}:{gone}:abcdef", jid))
    assert store.get(jid).status is Status.INTERRUPTED


@pytest.mark.parametrize("being", ["cancelling"])
def test_a_job_being_cancelled_when_its_worker_died_reads_cancelled(tmp_path: Path,
                                                                     being: str) -> None:
    store = Store(tmp_path / "wb")
    jid = store.create_job("count", {"n": 3}, total=3)
    store.conn.execute("UPDATE jobs SET status=?, worker=?, heartbeat_at=? WHERE id=?",
                       (being, "elsewhere:1:x", time.time() - 3600, jid))
    row = store.get(jid)
    assert row.status is Status.CANCELLED and "died while cancelling" in row.message


@pytest.mark.parametrize(("being", "becomes", "words"), [
    ("cancelling", Status.CANCELLED, "died while cancelling"),
    ("in_progress", Status.INTERRUPTED, "last heard from")])
def test_a_reader_that_cannot_write_the_store_sees_what_the_sweep_would_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, being: str, becomes: Status,
        words: str) -> None:
    """A full disk stops the sweep's write; the reader still shows the settled state and the
    same words the sweep writes (the store keeps the old row until a write succeeds)."""
    import sqlite3

    store = Store(tmp_path / "wb")
    jid = store.create_job("count", {"n": 3}, total=3)
    store.conn.execute("UPDATE jobs SET status=?, worker=?, heartbeat_at=? WHERE id=?",
                       (being, "elsewhere:1:x", time.time() - 3600, jid))

    def full(*a: object, **k: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "sweep_dead_workers", full)
    row = store.get(jid)
    assert row.status is becomes and words in row.message and row.worker is None
    monkeypatch.undo()
    assert store.get(jid, check_lease=False).status.value == being  # nothing was written


def _memory_cgroup(limit_mib: int) -> Path | None:
    """A cgroup (v1 memory controller, or v2) capped at `limit_mib`, or None if refused."""
    name = f"wb-oom-{os.getpid()}"
    for base, limit_file in ((Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"),
                             (Path("/sys/fs/cgroup"), "memory.max")):
        if not (base / "cgroup.procs").exists():
            continue
        cg = base / name
        try:
            cg.mkdir(exist_ok=True)
            (cg / limit_file).write_text(str(limit_mib << 20))
        except OSError:
            continue
        return cg
    return None


def test_a_worker_killed_by_the_oom_killer_reads_interrupted_and_resumes(tmp_path: Path) -> None:
    """A real out-of-memory kill: the worker runs in a 400 MiB memory cgroup and its job
    eats memory at unit 40 (tests/kinds.py `hog`); the kernel kills it (SIGKILL)."""
    cg = _memory_cgroup(400)
    if cg is None:
        pytest.skip("no memory cgroup can be made here (needs root and a cgroup mount)")
    try:
        wb = make_wb(tmp_path / "wb")
        jid = wb.store.create_job("hog", {"n": 80, "hog_at": 40}, total=80)
        procs = str(cg / "cgroup.procs")
        w = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "--root", str(wb.root), "worker"],
            env=worker_env(WB_TEST_HOG="1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=lambda: Path(procs).write_text(str(os.getpid())))
        rc = w.wait(timeout=120)
        assert rc == -signal.SIGKILL, (rc, w.stderr.read().decode()[-2000:])
        oom = (cg / "memory.oom_control").read_text() if (cg / "memory.oom_control").exists() \
            else (cg / "memory.events").read_text()
        assert "oom_kill 1" in oom, oom  # the kernel's OOM killer, not us
        job = wb.job(jid)
        info = job.info
        assert info.status is Status.INTERRUPTED, info
        assert f"worker {w.pid} on " in info.message and "out-of-memory killer" in info.message
        assert job.wait(timeout=30, progress=False).status == "interrupted"
        job.resume()
        w2 = spawn_worker(wb.root, "--exit-when-idle")  # no hog, no memory cap
        assert w2.wait(timeout=120) == 0, w2.stderr.read().decode()
        ids = _ids(wb.store.job_dir(jid) / "output.jsonl")
        assert set(ids) == {f"u{i}" for i in range(80)} and max(ids.values()) == 1
        assert job.status == "completed"
    finally:
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)
