"""The device phase lock and phases: exclusive across processes, freed by kill -9,
memory measured before/after, models run in a child process that dies with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import worker_env
from workbench.runtime.child import ChildEngine, EngineSpec
from workbench.runtime.lock import PhaseCancelled, PhaseLock
from workbench.runtime.phase import Phase, phases
from workbench.store import Store

MiB = 1 << 20
BALLAST = "tests.phased_doubles:Ballast"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "wb")


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "locks"
    monkeypatch.setenv("WORKBENCH_LOCK_DIR", str(d))
    return d


def _python(code: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=worker_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_phases_in_three_processes_never_overlap(store: Store, locks: Path) -> None:
    code = f"""
        import time
        from workbench.store import Store
        from workbench.runtime.child import EngineSpec
        from workbench.runtime.phase import Phase
        store = Store({str(store.root)!r})
        for k in range(3):
            with Phase(store, "p", EngineSpec(target={BALLAST!r}, kwargs={{"mib": 8}}),
                       isolation="inline") as engine:
                time.sleep(0.15)
    """
    procs = [_python(code, WORKBENCH_LOCK_DIR=str(locks)) for _ in range(3)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
    rows = phases(store)
    assert len(rows) == 9 and {r.state for r in rows} == {"done"}
    assert len({r.pid for r in rows}) == 3
    spans = sorted((r.acquired_at, r.released_at) for r in rows)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"two phases held the device at once: {spans}"
    for r in rows:
        assert r.acquired_at <= r.load_start <= r.loaded_at <= r.unload_start  # type: ignore[operator]
        assert r.unload_start <= r.unloaded_at <= r.released_at  # type: ignore[operator]


def test_lock_is_freed_when_its_holder_is_killed(locks: Path) -> None:
    holder = _python("""
        import time
        from workbench.runtime.lock import PhaseLock
        lock = PhaseLock("cuda:1")
        lock.acquire(holder={"job_id": "job-x"})
        print("held", flush=True)
        time.sleep(120)
    """, WORKBENCH_LOCK_DIR=str(locks))
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    lock = PhaseLock("cuda:1")
    assert lock.holder() == {"pid": holder.pid, "at": pytest.approx(time.time(), abs=60),
                             "job_id": "job-x"}
    with pytest.raises(TimeoutError, match="device cuda:1 still locked after 0.3 s"):
        lock.acquire(timeout=0.3)
    other_device = PhaseLock("cpu")
    other_device.acquire(timeout=1)  # one lock per device: cpu is free
    other_device.release()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock.acquire(timeout=10)
    assert lock.is_locked
    lock.release()


def test_waiting_phase_stops_when_asked(store: Store, locks: Path) -> None:
    blocker = PhaseLock("cpu")
    blocker.acquire()
    waits: list[object] = []
    try:
        deadline = time.monotonic() + 0.5
        with pytest.raises(PhaseCancelled, match="waiting for device cpu"):
            with Phase(store, "stt", EngineSpec(target=BALLAST), isolation="inline",
                       should_stop=lambda: time.monotonic() > deadline, on_wait=waits.append):
                pass
    finally:
        blocker.release()
    assert len(waits) == 1 and waits[0]["pid"] == os.getpid()  # type: ignore[index]
    (row,) = phases(store)
    assert row.state == "cancelled" and row.loaded_at is None and "PhaseCancelled" in (row.error or "")


def test_inline_phase_measures_memory_and_remembers_a_leak(store: Store, locks: Path) -> None:
    spec = EngineSpec(target=BALLAST, kwargs={"mib": 200})
    with Phase(store, "stt", spec, isolation="inline") as engine:
        assert engine.pid == os.getpid() and engine.echo(3) == 3
    clean = phases(store)[-1]
    assert clean.isolation == "inline"
    assert clean.mem_loaded - clean.mem_before >= 180 * MiB  # type: ignore[operator]
    assert abs(clean.residue) < 32 * MiB, clean  # type: ignore[arg-type]

    leaky = EngineSpec(target=BALLAST, kwargs={"mib": 200, "leak": True})
    with Phase(store, "stt", leaky, isolation="auto"):
        pass
    leak = phases(store)[-1]
    assert leak.isolation == "inline" and leak.residue >= 180 * MiB  # type: ignore[operator]
    # "a phase that cannot get its memory back runs its model in a child process next time"
    nxt = Phase(store, "stt", leaky, isolation="auto")
    assert nxt.isolation == "process"
    with nxt as engine:
        assert engine.whoami() != os.getpid()
    row = phases(store)[-1]
    assert row.isolation == "process" and abs(row.residue) < 32 * MiB, row  # type: ignore[arg-type]


def test_child_process_engine_calls_streams_errors_and_gives_memory_back(
        store: Store, locks: Path) -> None:
    spec = EngineSpec(target=BALLAST, kwargs={"mib": 200, "fail_on": "boom"})
    with Phase(store, "llm", spec, isolation="process") as engine:
        child = engine.pid
        assert child != os.getpid() and engine.whoami() == child
        assert engine.echo({"a": [1, 2]}) == {"a": [1, 2]}
        assert list(engine.count(5)) == [0, 1, 2, 3, 4]
        with pytest.raises(ValueError, match="cannot echo 'boom'"):
            engine.echo("boom")
        assert engine.echo("still alive") == "still alive"
    (row,) = phases(store)
    assert row.engine_pid == child and not psutil.pid_exists(child)
    assert row.mem_loaded - row.mem_before >= 180 * MiB  # type: ignore[operator]
    assert abs(row.residue) < 16 * MiB, row  # type: ignore[arg-type]
    assert row.engine_peak_rss >= 200 * MiB  # type: ignore[operator]
    report = row.work["engine_report"]
    assert report["unload"] is None and report["rss_loaded"] >= 200 * MiB  # exit, not unload
    e = ChildEngine(spec)
    assert e.close(graceful=True)["unload"] == {"freed_mib": 200}  # the engine's own unload
    assert e.proc.returncode == 0


def test_engine_that_fails_to_load_fails_the_phase_and_frees_the_device(
        store: Store, locks: Path) -> None:
    spec = EngineSpec(target="tests.phased_doubles:NoSuchEngine")
    with pytest.raises(AttributeError, match="NoSuchEngine"):
        with Phase(store, "llm", spec, isolation="process"):
            pass
    (row,) = phases(store)
    assert row.state == "failed" and row.released_at is not None
    lock = PhaseLock("cpu")
    lock.acquire(timeout=1)
    lock.release()


def test_child_engine_dies_with_its_parent(locks: Path) -> None:
    parent = _python(f"""
        import time
        from workbench.runtime.child import ChildEngine, EngineSpec
        e = ChildEngine(EngineSpec(target={BALLAST!r}, kwargs={{"mib": 16}}))
        print(e.pid, flush=True)
        time.sleep(120)
    """)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert psutil.pid_exists(child)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and time.monotonic() < deadline:
        try:
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    alive = psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE
    assert not alive, "the engine process outlived its parent"


def test_child_engine_refuses_interleaved_calls(locks: Path) -> None:
    e = ChildEngine(EngineSpec(target=BALLAST, kwargs={"mib": 1}))
    try:
        stream = e.count(3)
        assert next(stream) == 0
        with pytest.raises(Exception, match="still streaming"):
            e.echo(1)
        stream.close()  # abandoned mid-stream: the child is killed, not reused
        assert e.proc.poll() is not None
    finally:
        e.close()
