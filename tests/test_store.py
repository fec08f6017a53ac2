"""Store: lifecycle transitions, schema version, limits, retention."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_wb
from workbench import IllegalTransition, QueueFull, Status
from workbench.store import Store
from workbench.store.schema import SCHEMA_VERSION
from workbench.store.status import TRANSITIONS


def _force(store: Store, job_id: str, status: Status) -> None:
    store.conn.execute("UPDATE jobs SET status=? WHERE id=?", (status.value, job_id))


@pytest.mark.parametrize("cur,tgt", list(itertools.product(Status, Status)))
def test_every_transition_is_checked_and_persisted(tmp_path: Path, cur: Status, tgt: Status) -> None:
    store = Store(tmp_path / "wb")
    jid = store.create_job("count", {"n": 1}, total=1)
    _force(store, jid, cur)
    if tgt in TRANSITIONS[cur]:
        store.transition(jid, tgt)
        assert Store(tmp_path / "wb").get(jid).status is tgt  # a fresh connection sees it
        assert store.events(jid, "status")[-1]["data"] == {"to": tgt.value}
    else:
        with pytest.raises(IllegalTransition, match=f"'{cur.value}' to '{tgt.value}'"):
            store.transition(jid, tgt)
        assert Store(tmp_path / "wb").get(jid).status is cur


def test_schema_is_versioned_and_reopening_does_not_migrate_twice(tmp_path: Path) -> None:
    s1 = Store(tmp_path / "wb")
    assert s1.schema_version == SCHEMA_VERSION >= 1
    jid = s1.create_job("count", {"n": 3}, total=3)
    s2 = Store(tmp_path / "wb")
    assert s2.schema_version == SCHEMA_VERSION and s2.get(jid).total == 3


def test_limit_errors_name_the_limit_and_numbers(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb", max_requests_per_job=100, max_queued_jobs=2,
                 max_queued_requests=150)
    s = wb.store
    with pytest.raises(QueueFull, match=r"max_requests_per_job: 0 now \+ 101 submitted > 100"):
        s.create_job("count", {}, total=101)
    s.create_job("count", {}, total=100)
    with pytest.raises(QueueFull, match=r"max_queued_requests: 100 now \+ 51 submitted > 150"):
        s.create_job("count", {}, total=51)
    s.create_job("count", {}, total=50)
    with pytest.raises(QueueFull, match=r"max_queued_jobs: 2 now \+ 1 submitted > 2") as e:
        s.create_job("count", {}, total=1)
    assert (e.value.limit, e.value.current, e.value.maximum) == ("max_queued_jobs", 2, 2)
    assert len(s.list_jobs()) == 2
    # a refused submission leaves no folder behind
    assert sorted(p.name for p in (s.root / "jobs").iterdir()) == sorted(j.id for j in s.list_jobs())
    assert list((s.root / "staging").iterdir()) == []


def _submit_many(root: str, n: int, total: int, barrier: Any, results: Any) -> None:
    wb = make_wb(Path(root), max_queued_jobs=7, max_queued_requests=10_000)
    ok = refused = 0
    barrier.wait()
    for _ in range(n):
        staged = wb.store.staging_dir()
        (staged / "input.jsonl").write_text("x\n")
        try:
            wb.store.create_job("count", {}, total=total, staged=staged)
            ok += 1
        except QueueFull:
            refused += 1
    results.put((ok, refused))


@pytest.mark.parametrize("total,expect_jobs", [(10, 7), (1500, 6)])
def test_two_processes_cannot_exceed_queue_limits(tmp_path: Path, total: int, expect_jobs: int) -> None:
    root = tmp_path / "wb"
    make_wb(root)  # create schema once
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_submit_many, args=(str(root), 20, total, barrier, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    res = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sum(ok for ok, _ in res) == expect_jobs
    assert sum(r for _, r in res) == 40 - expect_jobs
    wb = make_wb(root, max_queued_jobs=7, max_queued_requests=10_000)
    assert len(wb.store.list_jobs()) == expect_jobs
    use = wb.store.queue_usage()
    assert use["queued_jobs"] <= 7 and use["queued_requests"] <= 10_000
    assert len(list((root / "jobs").iterdir())) == expect_jobs


def test_retention_purges_old_finished_jobs_only(tmp_path: Path) -> None:
    s = Store(tmp_path / "wb")
    old_done, old_running, new_done, old_failed, old_expired = (
        s.create_job("count", {}, total=1) for _ in range(5))
    for jid in (old_done, old_running, new_done, old_failed, old_expired):
        (s.job_dir(jid) / "output.jsonl").write_text('{"custom_id":"u0"}\n')
    now = time.time()
    s.conn.execute("UPDATE jobs SET status='completed', finished_at=? WHERE id=?", (now - 31 * 86400, old_done))
    s.conn.execute("UPDATE jobs SET status='failed', finished_at=? WHERE id=?", (now - 40 * 86400, old_failed))
    s.conn.execute("UPDATE jobs SET status='expired', finished_at=? WHERE id=?", (now - 35 * 86400, old_expired))
    s.conn.execute("UPDATE jobs SET status='in_progress', started_at=? WHERE id=?", (now - 60 * 86400, old_running))
    s.conn.execute("UPDATE jobs SET status='completed', finished_at=? WHERE id=?", (now - 29 * 86400, new_done))
    assert sorted(s.purge()) == sorted([old_done, old_failed, old_expired])
    # retention is its own field: the status stays what it was
    for jid, status in ((old_done, Status.COMPLETED), (old_failed, Status.FAILED),
                        (old_expired, Status.EXPIRED)):
        row = s.get(jid)
        assert row.status is status and row.purged_at is not None and not s.job_dir(jid).exists()
        assert "files purged by retention" in row.message
        assert [e["name"] for e in s.events(jid)][-1] == "purged"
    assert s.get(old_running).status is Status.IN_PROGRESS and s.job_dir(old_running).exists()
    assert s.get(old_running).purged_at is None
    assert s.get(new_done).status is Status.COMPLETED and (s.job_dir(new_done) / "output.jsonl").exists()
    assert s.purge() == []  # idempotent
    # a purged job cannot be resumed: its input is gone
    with pytest.raises(IllegalTransition, match="purged by retention"):
        s.transition(old_failed, Status.QUEUED)
    assert s.get(old_failed).status is Status.FAILED


def test_migration_2_turns_old_retention_expiry_back_into_the_status_it_had(tmp_path: Path) -> None:
    """Before schema 2 a purge set status `expired`; migrating restores the prior status."""
    import sqlite3

    from workbench.store.schema import MIGRATIONS, run_migrations

    root = tmp_path / "wb"
    root.mkdir()
    c = sqlite3.connect(root / "workbench.db", isolation_level=None)
    run_migrations(c, MIGRATIONS[:1], 0)
    c.execute("PRAGMA user_version=1")
    for jid, prior in (("j_cancelled", "cancelled"), ("j_noevents", None)):
        c.execute("INSERT INTO jobs (id, kind, status, created_at, updated_at, message) VALUES"
                  " (?, 'batch', 'expired', 1, 2, 'files purged by retention')", (jid,))
        if prior:
            for to in ("in_progress", prior, "expired"):
                c.execute("INSERT INTO events (job_id, at, name, data) VALUES (?, 1, 'status', ?)",
                          (jid, f'{{"to": "{to}"}}'))
    c.close()
    s = Store(root)
    assert s.schema_version == SCHEMA_VERSION == 3
    assert (s.get("j_cancelled").status, s.get("j_cancelled").purged_at) == (Status.CANCELLED, 2)
    assert s.get("j_noevents").status is Status.COMPLETED and s.get("j_noevents").purged_at == 2


def test_list_jobs_filters_by_the_start_of_the_error(tmp_path: Path) -> None:
    """The idle worker's disk-full check: only jobs whose error starts with the prefix,
    exactly (no LIKE wildcards: '%' and '_' in the prefix are plain characters)."""
    store = Store(tmp_path / "wb")
    ids = [store.create_job("count", {"n": 1}, total=1) for _ in range(4)]
    errors = ["paused: disk full (12 MiB free)", "paused: disk fullness", "worker died",
              None]
    for jid, err in zip(ids, errors, strict=True):
        store.conn.execute("UPDATE jobs SET status='interrupted', error=? WHERE id=?",
                           (err, jid))
    got = store.list_jobs(status="interrupted", error_prefix="paused: disk full")
    assert [r.id for r in got] == ids[:2]
    assert [r.id for r in store.list_jobs(error_prefix="paused: disk full (")] == ids[:1]
    assert store.list_jobs(error_prefix="paused%") == []
