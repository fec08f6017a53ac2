"""Comparison grids end to end: the real google-genai SDK against the fake Gemini server.

Every assertion about what was sent comes from the server's request log.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until as poll_until
from tests.fake_gemini import API_KEY, FakeGemini, engine_settings
from workbench import InvalidInput, Workbench
from workbench.grid import tables
from workbench.grid.api import GridJob
from workbench.grid.spec import parse_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROMPTS = {"describe": "Describe what happens in the clip.", "objects": "List the objects you see."}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with FakeGemini(latency_s=0.01) as server:
        yield server


@pytest.fixture
def media(tmp_path: Path) -> list[Path]:
    out = []
    for name, payload in (("a.mp4", b"\x00\x01video-a" * 50), ("b.mp4", b"\x00\x02video-b" * 60)):
        p = tmp_path / name
        p.write_bytes(payload)
        out.append(p)
    return out


def submit(wb: Workbench, fake: FakeGemini, media: list[Path], *,
           models: list[Any] | None = None, **kw: Any) -> GridJob:
    kw.setdefault("judge", "gemini-judge")
    kw.setdefault("default_rpm", 60_000)
    kw.setdefault("gemini", engine_settings(fake.url))
    return wb.grid.submit(media=media, prompts=PROMPTS,
                          models=models or ["gemini-a", "gemini-b"], **kw)


def wait_done(job: GridJob, timeout: float = 60) -> GridJob:
    job.wait(timeout=timeout, progress=False, poll_s=0.05)
    return job


def wait_until(pred, timeout: float = 30, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    poll_until(pred, timeout, what)


def model_requests(fake: FakeGemini, status: int | None = 200) -> list[dict[str, Any]]:
    return [e for e in fake.requests("generate") if not e["schema"]
            and (status is None or e["status"] == status)]


def judge_requests(fake: FakeGemini, status: int | None = 200) -> list[dict[str, Any]]:
    return [e for e in fake.requests("generate") if e["schema"]
            and (status is None or e["status"] == status)]


def call_key(e: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    """What identifies one model call on the wire: model, prompt, files."""
    return e["model"], e["prompt"], tuple(e["files"])


def call_ids_on_the_wire(fake: FakeGemini, job: GridJob,
                         requests: list[dict[str, Any]]) -> list[str]:
    """Map generateContent requests back to the grid's call ids (cell/model, cell/@judge)."""
    spec = job.info.spec
    media = {m["id"]: m["name"] for m in spec["media"]}
    prompts = {p["id"]: p["text"] for p in spec["prompts"]}
    uri = {u["display_name"]: f"{fake.url}/v1beta/files/{u['file']}"
           for u in fake.requests("upload.finalize")}
    labels = {m["name"]: m["label"] for m in spec["models"]}
    out = []
    for e in requests:
        for c in spec["cells"]:
            name, task = media[c["media"]], prompts[c["prompt"]]
            if e["schema"]:
                if f"media file {name!r}" in e["prompt"] and f"<task>\n{task}\n</task>" in e["prompt"]:
                    out.append(f"{c['id']}/@judge")
            elif e["prompt"] == task and e["files"] == [uri[name]]:
                out.append(f"{c['id']}/{labels[e['model']]}")
    assert len(out) == len(requests), "a request matched no call, or several"
    return out


def test_grid_2x2x2_with_judge_completes(wb: Workbench, fake: FakeGemini, media: list[Path]) -> None:
    wb.start_worker()
    job = wait_done(submit(wb, fake, media))
    info = job.info
    assert info.status.value == "completed", info
    assert (info.total, info.completed, info.failed, info.progress) == (4, 4, 0, 100.0)

    # each media uploaded exactly once, with the right bytes
    ups = fake.requests("upload.finalize")
    assert sorted(u["sha256"] for u in ups) == sorted(
        __import__("hashlib").sha256(p.read_bytes()).hexdigest() for p in media)
    assert sorted(u["display_name"] for u in ups) == ["a.mp4", "b.mp4"]

    # 8 model calls (each with its media file), 4 judge calls (structured), nothing twice
    models = model_requests(fake)
    assert len(models) == 8 and len(set(map(call_key, models))) == 8
    assert Counter(e["model"] for e in models) == {"gemini-a": 4, "gemini-b": 4}
    assert all(len(e["files"]) == 1 for e in models)
    judges = judge_requests(fake)
    assert len(judges) == 4 and {e["model"] for e in judges} == {"gemini-judge"}
    assert all('<answer id="A">' in e["prompt"] and '<answer id="B">' in e["prompt"]
               for e in judges)
    assert {e["api_version"] for e in fake.log} == {"v1beta"}

    df = job.results()
    assert len(df) == 8 and set(df["status"]) == {"ok"}
    assert df["score"].between(1, 10).all() and df["error"].isna().all()
    assert (df["latency_s"] > 0).all() and (df["total_tokens"] > 0).all()
    assert set(df["input"]) == {"media"}
    assert df.groupby("cell_id").size().to_dict() == {f"c{i}": 2 for i in range(4)}

    scores = job.scores()
    assert list(scores.index) == ["gemini-a", "gemini-b"]
    assert list(scores.columns) == ["describe", "objects", "all"]
    assert scores.notna().all().all()

    data = job.comparisons()
    assert len(data["comparisons"]) == 4 and data["totals"]["completed_combinations"] == 4
    c0 = data["comparisons"][0]
    assert set(c0) >= {"media", "prompt", "results", "evaluation", "overall_summary"}
    assert set(c0["results"]) == set(c0["evaluation"]) == {"gemini-a", "gemini-b"}
    assert c0["overall_summary"] == "2 answers compared by gemini-judge"
    assert set(c0["evaluation"]["gemini-a"]) == {"score", "reasoning", "strengths", "weaknesses"}
    assert data["totals"]["calls"] == 12 and data["totals"]["calls_failed"] == 0
    saved = json.loads((job.dir / "results.json").read_text())
    assert saved["totals"] == data["totals"] | {"calls": 12}
    assert len((job.dir / "output.jsonl").read_text().splitlines()) == 4
    assert info.metrics["uploads"] == 2 and info.metrics["calls_ok"] == 12

    # rows in the store: one per call, 12 in all
    rows = tables.calls(wb.store, job.id)
    assert len(rows) == 12 and Counter(r.role for r in rows) == {"model": 8, "judge": 4}
    assert sorted(call_ids_on_the_wire(fake, job, fake.requests("generate"))) == sorted(
        r.call_id for r in rows)

    # a second grid over the same media reuses the uploads (files.get, no new upload)
    job2 = wait_done(submit(wb, fake, media, models=["gemini-c"], judge=None))
    assert job2.status == "completed" and len(fake.requests("upload.finalize")) == 2
    assert job2.info.metrics["reused_files"] == 2 and job2.results()["score"].isna().all()


def test_injected_429_is_retried_and_succeeds(wb: Workbench, fake: FakeGemini,
                                              media: list[Path]) -> None:
    fake.inject("generate", 429, times=1, model="gemini-a", retry_delay_s=0.01)
    wb.start_worker()
    job = wait_done(submit(wb, fake, media))
    assert job.status == "completed"
    df = job.results()
    assert set(df["status"]) == {"ok"} and df["score"].notna().all()
    a = df[df["model"] == "gemini-a"]
    assert sorted(a["attempts"]) == [1, 1, 1, 2]
    assert len(fake.requests("generate", "gemini-a")) == 5  # 4 calls + 1 retry
    assert [e["status"] for e in fake.requests("generate", "gemini-a")].count(429) == 1
    assert job.info.metrics["retries"] == 1


def test_model_that_always_fails_gives_error_rows_rest_completes(
        wb: Workbench, fake: FakeGemini, media: list[Path]) -> None:
    fake.fail_always("gemini-down", 500)
    wb.start_worker()
    job = wait_done(submit(wb, fake, media, models=["gemini-a", "gemini-down"]))
    assert job.status == "completed" and job.info.completed == 4
    df = job.results()
    down = df[df["model"] == "gemini-down"]
    assert set(down["status"]) == {"error"} and set(down["error_code"]) == {"500"}
    assert down["error"].str.contains("HTTP 500 INTERNAL: model gemini-down is down").all()
    assert (down["attempts"] == 4).all() and down["score"].isna().all()
    up = df[df["model"] == "gemini-a"]
    assert set(up["status"]) == {"ok"} and up["score"].notna().all()
    # the judge saw only the answers that exist
    assert all(e["prompt"].count("<answer id=") == 1 for e in judge_requests(fake))
    data = job.comparisons()
    assert all(set(c["evaluation"]) == {"gemini-a"} for c in data["comparisons"])
    assert data["totals"]["calls_failed"] == 4


def test_failed_media_is_that_media_error(wb: Workbench, fake: FakeGemini,
                                          media: list[Path]) -> None:
    fake.fail_media("b.mp4")
    wb.start_worker()
    job = wait_done(submit(wb, fake, media))
    assert job.status == "completed"
    df = job.results()
    b = df[df["media"] == "b.mp4"]
    assert set(b["error_code"]) == {"media"} and len(b) == 4
    assert b["error"].str.contains("media b.mp4: processing FAILED").all()
    assert set(df[df["media"] == "a.mp4"]["status"]) == {"ok"}
    assert len([u for u in fake.requests("upload.start")]) == 2  # b uploaded once, not per call
    assert (job.info.completed, job.info.failed) == (2, 2)  # b's cells: no answer to judge
    assert {c["overall_summary"] for c in job.comparisons()["comparisons"]
            if c["media"] == "b.mp4"} == {"no model produced an answer"}


def test_invalid_judge_json_is_retried_then_recorded(wb: Workbench, fake: FakeGemini,
                                                     media: list[Path]) -> None:
    fake.judge_returns_invalid_json(times=1)
    wb.start_worker()
    job = wait_done(submit(wb, fake, media, max_cells_in_flight=1))
    assert job.status == "completed" and job.results()["score"].notna().all()
    judge_rows = [r for r in tables.calls(wb.store, job.id) if r.role == "judge"]
    assert sorted(r.attempts for r in judge_rows) == [1, 1, 1, 2]
    assert len(judge_requests(fake)) == 5

    fake.judge_returns_invalid_json(times=None)  # this judge never returns valid JSON
    job2 = wait_done(submit(wb, fake, media, judge_retries=0))
    assert job2.status == "completed" and (job2.info.completed, job2.info.failed) == (0, 4)
    df = job2.results()
    assert set(df["status"]) == {"ok"} and df["score"].isna().all()  # answers kept
    rows = [r for r in tables.calls(wb.store, job2.id) if r.role == "judge"]
    assert len(rows) == 4 and {r.error_code for r in rows} == {"parse"}
    assert all("not a valid Evaluation" in r.error for r in rows)
    c = job2.comparisons()["comparisons"][0]
    assert c["status"] == "failed" and c["overall_summary"].startswith("judge failed:")
    assert "model A did great" in c["judge"]["raw_output"]


def test_fenced_judge_json_is_parsed_by_the_fallback(wb: Workbench, fake: FakeGemini,
                                                     media: list[Path]) -> None:
    fake.judge_fenced = True
    wb.start_worker()
    job = wait_done(submit(wb, fake, media))
    assert job.status == "completed" and job.results()["score"].notna().all()
    assert len(judge_requests(fake)) == 4  # parsed on the first try, no retries


def test_cancel_keeps_finished_cells_and_resume_sends_only_the_rest(
        wb: Workbench, fake: FakeGemini, media: list[Path]) -> None:
    fake.latency_s = 0.15
    wb.start_worker()
    job = submit(wb, fake, media, max_cells_in_flight=1)
    out = job.dir / "output.jsonl"
    wait_until(lambda: out.exists() and len(out.read_text().splitlines()) >= 1, what="a cell")
    job.cancel()
    wait_done(job)
    assert job.status == "cancelled"
    done_cells = [json.loads(x)["custom_id"] for x in out.read_text().splitlines()]
    assert 1 <= len(done_cells) < 4
    rows_at_cancel = {r.call_id for r in tables.calls(wb.store, job.id)}
    assert len(rows_at_cancel) < 12
    df = job.results()
    assert set(df[df["cell_id"].isin(done_cells)]["status"]) == {"ok"}
    assert df[df["cell_id"].isin(done_cells)]["score"].notna().all()
    assert json.loads((job.dir / "results.json").read_text())["totals"]["completed_combinations"] \
        == len(done_cells)
    sent_before = len(fake.requests("generate"))
    assert sent_before == len(rows_at_cancel)  # nothing was on the wire without a row

    fake.latency_s = 0.01
    job.resume()
    wait_done(job)
    assert job.status == "completed" and job.info.completed == 4
    after = call_ids_on_the_wire(fake, job, fake.requests("generate")[sent_before:])
    assert sorted(after) == sorted({r.call_id for r in tables.calls(wb.store, job.id)}
                                   - rows_at_cancel)  # only unfinished calls were sent
    assert len(model_requests(fake)) == 8 and len(judge_requests(fake)) == 4
    assert len(set(map(call_key, model_requests(fake)))) == 8  # none sent twice
    assert len(fake.requests("upload.finalize")) == 2  # media reused on resume
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()][:len(done_cells)] \
        == done_cells
    assert len(out.read_text().splitlines()) == 4


def test_kill_9_worker_then_resume_never_resends_a_finished_call(
        tmp_path: Path, fake: FakeGemini, media: list[Path]) -> None:
    import os
    import signal

    from tests.conftest import make_wb, spawn_worker

    wb = make_wb(tmp_path / "wb")
    fake.latency_s = 0.1
    job = submit(wb, fake, media, max_cells_in_flight=1)
    w1 = spawn_worker(wb.root)
    wait_until(lambda: len(tables.calls(wb.store, job.id)) >= 3, what="3 finished calls")
    os.kill(w1.pid, signal.SIGKILL)
    w1.wait()
    killed_at = time.monotonic()  # the fake logs a request when it answers: use start times
    rows_before = {r.call_id for r in tables.calls(wb.store, job.id)}
    fake.latency_s = 0.01
    wb.start_worker()  # sees the dead lease holder (same host) and resumes the job
    try:
        wait_done(job)
    finally:
        wb.stop_workers()
    assert job.status == "completed" and job.info.completed == 4 and job.info.attempts == 2
    # calls on the wire when the worker died had no row: they may be sent again; a call
    # with a row never is
    after = call_ids_on_the_wire(fake, job, [e for e in fake.requests("generate")
                                             if e["t0"] > killed_at])
    assert not set(after) & rows_before, set(after) & rows_before
    assert set(after) | rows_before == {r.call_id for r in tables.calls(wb.store, job.id)}
    assert len(tables.calls(wb.store, job.id)) == 12 and len(after) == len(set(after))
    assert len(fake.requests("upload.finalize")) == 2


def test_batch_mode_fills_the_same_rows(wb: Workbench, fake: FakeGemini,
                                        media: list[Path]) -> None:
    wb.start_worker()
    job = wait_done(submit(wb, fake, media, mode="batch", batch_poll_s=0.02))
    assert job.status == "completed" and job.info.completed == 4
    assert fake.requests("generate") == []  # everything went through the Batch API
    created = fake.requests("batch.create")
    assert sorted((e["model"], e["n"]) for e in created) == [
        ("gemini-a", 4), ("gemini-b", 4), ("gemini-judge", 4)]
    df = job.results()
    assert set(df["status"]) == {"ok"} and df["score"].between(1, 10).all()
    assert set(df["mode"]) == {"batch"}
    assert len(fake.requests("upload.finalize")) == 2
    rows = tables.calls(wb.store, job.id)
    assert len(rows) == 12 and all(r.batch_name and r.batch_name.startswith("batches/")
                                   for r in rows)
    assert job.comparisons()["totals"]["completed_combinations"] == 4


def test_batch_mode_cancel_cancels_the_remote_batch_and_resume_resubmits(
        wb: Workbench, fake: FakeGemini, media: list[Path]) -> None:
    fake.batch_polls = 10_000  # the service never finishes this batch
    wb.start_worker()
    job = submit(wb, fake, media, mode="batch", batch_poll_s=0.02)
    wait_until(lambda: len(fake.requests("batch.get")) >= 2, what="batch polling")
    job.cancel()
    wait_done(job)
    assert job.status == "cancelled"
    assert len(fake.requests("batch.cancel")) == 2
    assert tables.calls(wb.store, job.id) == []
    fake.batch_polls = 1
    job.resume()
    wait_done(job)
    assert job.status == "completed" and len(tables.calls(wb.store, job.id)) == 12
    assert len(fake.requests("batch.create")) == 2 + 2 + 1


def test_report_is_one_self_contained_html_file(wb: Workbench, fake: FakeGemini,
                                                media: list[Path], tmp_path: Path) -> None:
    fake.fail_always("gemini-down", 500)
    wb.start_worker()
    job = wait_done(submit(wb, fake, media, models=["gemini-a", "gemini-down"]))
    path = job.report(tmp_path / "out" / "grid.html")
    text = path.read_text()
    assert text.startswith("<!doctype html>") and "<script" not in text and "<link" not in text
    assert text.count('<section class="cmp">') == 4
    assert len(re.findall(r'class="card[ "]', text)) == 8
    for s in ("a.mp4", "b.mp4", PROMPTS["describe"], "gemini-a", "gemini-down",
              "HTTP 500 INTERNAL", "1 answers compared by gemini-judge",
              "strengths", "/10"):
        assert s in text, s


def test_bad_input_is_refused_whole(wb: Workbench, fake: FakeGemini, media: list[Path],
                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    odd = tmp_path / "notes.qqq"
    odd.write_text("x")
    with pytest.raises(InvalidInput) as e:
        wb.grid.submit(media=[media[0], tmp_path / "missing.mp4", odd],
                       prompts=["ok", "  "], models=["gemini-a", "gemini-a", "llama-7b"],
                       judge={"provider": "gemini", "name": "j", "params": {"temprature": 1}},
                       max_in_flight=0, mode="fast")
    msg = str(e.value)
    for needle in (f"media 2 (missing.mp4): no such file: {tmp_path / 'missing.mp4'}",
                   "media 3 (notes.qqq): unknown media type",
                   "prompt 2: is empty or not text",
                   "model 2 (gemini-a): two models are labelled 'gemini-a'",
                   "model 3: unknown model 'llama-7b'", "judge: params: j:", "temprature",
                   "settings: max_in_flight: Input should be greater than or equal to 1",
                   "mode: 'fast' is not 'realtime' or 'batch'"):
        assert needle in msg, (needle, msg)
    for bad in ("line ", "PosixPath", "Errno"):
        assert bad not in msg, (bad, msg)
    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(InvalidInput, match="need GEMINI_API_KEY or GOOGLE_API_KEY"):
        submit(wb, fake, media)
    assert wb.jobs().empty and not list(wb.root.glob("media/*"))


def test_explicit_pairs_and_model_shorthands(wb: Workbench, fake: FakeGemini,
                                             media: list[Path]) -> None:
    from workbench.grid.spec import parse_model

    assert parse_model("gemini-2.5-flash").model_dump(include={"provider", "name", "text_only"}) \
        == {"provider": "gemini", "name": "gemini-2.5-flash", "text_only": False}
    v = parse_model("vllm:/models/qwen")
    assert (v.provider, v.name, v.label, v.text_only) == ("vllm", "/models/qwen", "qwen", True)
    o = parse_model("openai:qwen@http://127.0.0.1:9/v1")
    assert (o.provider, o.name, o.base_url) == ("openai", "qwen", "http://127.0.0.1:9/v1")
    wb.start_worker()
    job = wait_done(wb.grid.submit(
        media=media, prompts=PROMPTS, pairs=[(0, "describe"), (str(media[1]), "objects")],
        models=["gemini-a"], judge=None, default_rpm=60_000, gemini=engine_settings(fake.url)))
    df = job.results()
    assert job.status == "completed" and list(zip(df["media"], df["prompt_id"],
                                                  df["prompt_name"], strict=True)) == [
        ("a.mp4", "p0", "describe"), ("b.mp4", "p1", "objects")]


def test_progress_phases_follow_the_seed(wb: Workbench, fake: FakeGemini,
                                         media: list[Path]) -> None:
    fake.latency_s = 0.08
    wb.start_worker()
    job = submit(wb, fake, media, max_cells_in_flight=1)
    seen: list[tuple[float, str]] = []
    while job.status not in ("completed", "failed", "cancelled"):
        r = job.info
        if not seen or seen[-1] != (r.progress, r.message):
            seen.append((r.progress, r.message))
        time.sleep(0.005)
    seen.append((job.progress, job.info.message))
    percents = [p for p, _ in seen]
    assert percents == sorted(percents), seen  # never goes backwards
    cells = [(p, m) for p, m in seen if m.startswith("Processing combinations:")]
    assert cells and all(10 <= p <= 90 for p, _ in cells), seen
    names = {f"{m} × {p}" for m in ("a.mp4", "b.mp4") for p in PROMPTS}
    for p, m in cells:  # "k/4 done" counts finished cells; the running cell is named
        done = int(m.split(": ")[1].split("/")[0])
        assert p == pytest.approx(10 + 80 * done / 4, abs=0.01), (p, m)
        if "; running " in m:
            assert m.split("; running ")[1] in names, m
    assert len({m for _, m in cells}) >= 2  # it moved through the combinations
    assert any("; running " in m for _, m in cells), cells
    assert seen[-1][0] == 100.0


def test_no_secret_on_disk(wb: Workbench, fake: FakeGemini, media: list[Path]) -> None:
    wb.start_worker()
    job = wait_done(submit(wb, fake, media, mode="batch", batch_poll_s=0.02))
    assert job.status == "completed"
    job.report(wb.root / "grid.html")
    wb.store.close()
    leaks = [p for p in wb.root.rglob("*") if p.is_file() and API_KEY.encode() in p.read_bytes()]
    assert leaks == []


def test_batch_mode_worker_stop_leaves_batches_running_and_resume_polls_them(
        wb: Workbench, fake: FakeGemini, media: list[Path]) -> None:
    fake.batch_polls = 10_000
    wb.start_worker()
    job = submit(wb, fake, media, mode="batch", batch_poll_s=0.02)
    wait_until(lambda: len(fake.requests("batch.get")) >= 2, what="batch polling")
    wb.stop_workers()
    assert job.status == "interrupted"
    assert [b.state for b in tables.batches(wb.store, job.id)] == ["JOB_STATE_RUNNING"] * 2
    fake.batch_polls = 1
    wb.start_worker()
    wait_done(job)
    assert job.status == "completed" and len(tables.calls(wb.store, job.id)) == 12
    assert fake.requests("batch.cancel") == []
    assert sorted(e["model"] for e in fake.requests("batch.create")) == [
        "gemini-a", "gemini-b", "gemini-judge"]  # the answer batches were not resubmitted


def test_call_rows_round_trip_every_column(tmp_path: Path) -> None:
    """CallRow (an engines Outcome plus ids) ↔ grid_calls: every column, both directions."""
    from workbench.engines.gemini_messages import GeminiCall
    from workbench.store import Store

    store = Store(tmp_path / "wb")
    tables.ensure(store)
    table = [r["name"] for r in store.conn.execute("PRAGMA table_info(grid_calls)")]
    assert table == ["job_id", *tables.COLUMNS]
    answer = GeminiCall(model="gemini-x", text="an answer", parsed={"score": 7},
                        finish_reason="STOP", latency_s=1.25, wait_s=0.5, attempts=2,
                        prompt_tokens=11, completion_tokens=13, thoughts_tokens=5,
                        total_tokens=29)
    ok = tables.CallRow.of(answer, call_id="c0|m", cell_id="c0", role="model", model="m",
                           provider="gemini", input_kind="media", mode="batch",
                           batch_name="batches/1", finished_at=100.0)
    bad = tables.CallRow.of(GeminiCall(model="gemini-x", error="HTTP 500", error_code="500",
                                       attempts=6), call_id="c0|judge", cell_id="c0",
                            role="judge", model="j", provider="gemini", input_kind="text",
                            finished_at=101.0)
    assert tables.insert_call(store, "job", ok) and tables.insert_call(store, "job", bad)
    assert not tables.insert_call(store, "job", ok)  # the first write wins
    assert tables.calls(store, "job") == [ok, bad]
    stored = [dict(r) for r in store.conn.execute(
        "SELECT call_id, ok, text, parsed, error_code, wait_s, attempts, total_tokens, batch_name"
        " FROM grid_calls ORDER BY finished_at")]
    assert stored == [
        {"call_id": "c0|m", "ok": 1, "text": "an answer", "parsed": '{"score": 7}',
         "error_code": None, "wait_s": 0.5, "attempts": 2, "total_tokens": 29,
         "batch_name": "batches/1"},
        {"call_id": "c0|judge", "ok": 0, "text": "", "parsed": None, "error_code": "500",
         "wait_s": 0.0, "attempts": 6, "total_tokens": 0, "batch_name": None}]


# -- issue 14: limits, single strings, labels, warnings, resume, file expiry -----------------

def _plain(text: str) -> None:
    for bad in ("line ", "PosixPath", "Errno"):
        assert bad not in text, (bad, text)


def test_more_models_than_the_limit_are_refused_and_the_limit_is_a_setting(
        wb: Workbench, fake: FakeGemini, media: list[Path]) -> None:
    five = [f"gemini-{x}" for x in "abcde"]
    with pytest.raises(InvalidInput) as e:
        submit(wb, fake, media, models=five)
    assert ("models: 5 models given; a cell runs at most 4 (pass max_models=5 to allow more)"
            in str(e.value))
    _plain(str(e.value))
    assert wb.jobs().empty and not list(wb.root.glob("media/*"))  # nothing queued
    job = submit(wb, fake, media[:1], models=five, max_models=5, judge=None)
    assert job.status == "queued" and len(job.info.spec["models"]) == 5
    job.cancel()


def test_a_single_string_is_one_item(wb: Workbench, fake: FakeGemini, media: list[Path]) -> None:
    wb.start_worker()
    job = wait_done(wb.grid.submit(media=str(media[0]), prompts="Describe", models="gemini-a",
                                   judge="gemini-judge", default_rpm=60_000,
                                   gemini=engine_settings(fake.url)))
    spec = job.info.spec
    assert [m["name"] for m in spec["media"]] == ["a.mp4"]
    assert [(p["id"], p["name"], p["text"]) for p in spec["prompts"]] == [("p0", "Describe",
                                                                          "Describe")]
    assert [m["name"] for m in spec["models"]] == ["gemini-a"]
    assert job.status == "completed" and job.info.total == 1
    assert [e["prompt"] for e in model_requests(fake)] == ["Describe"]
    job2 = wb.grid.submit(media=media[1], prompts=["Describe"], models=parse_model("gemini-b"),
                          judge=None, default_rpm=60_000, gemini=engine_settings(fake.url))
    assert [m["name"] for m in job2.info.spec["models"]] == ["gemini-b"]  # a ModelSpec alone
    assert [m["name"] for m in job2.info.spec["media"]] == ["b.mp4"]  # a Path alone
    wait_done(job2)


def test_prompt_labels_summaries_and_warnings(wb: Workbench, fake: FakeGemini,
                                              media: list[Path]) -> None:
    from workbench.grid.api import GridWarning

    texts = ["Summarise the clip in one short sentence, please.", "List the risks.",
             "List the risks."]
    with pytest.warns(GridWarning) as caught:
        job = wb.grid.submit(media=media[:1], prompts=texts, models=["gemini-a", "gemini-judge"],
                             judge="gemini-judge", default_rpm=60_000,
                             gemini=engine_settings(fake.url))
    said = [str(w.message) for w in caught]
    assert said == [
        "the same prompt is given 2 times (List the risks., List the risks. (2)): its cells"
        " are run and judged twice",
        "the judge gemini-judge is also a competitor (gemini-judge): a model judging its own"
        " answers tends to favour them"]
    assert job.warnings == said
    assert [e["data"]["message"] for e in wb.store.events(job.id, "warning")] == said
    wb.start_worker()
    wait_done(job)
    df = job.results()
    assert list(dict.fromkeys(df["prompt_id"])) == ["p0", "p1", "p2"]
    assert list(dict.fromkeys(df["prompt_name"])) == ["Summarise the clip in one…",
                                                      "List the risks.", "List the risks. (2)"]
    assert str(df["score"].dtype) == "Int64"
    assert list(job.scores().columns) == ["Summarise the clip in one…", "List the risks.",
                                          "List the risks. (2)", "all"]
    s = job.summaries()
    assert list(s.columns) == ["cell_id", "media", "prompt_id", "prompt_name", "status",
                               "best_model", "best_score", "overall_summary", "judge_error"]
    assert s["overall_summary"].tolist() == ["2 answers compared by gemini-judge"] * 3
    assert set(s["best_model"]) <= {"gemini-a", "gemini-judge"} and s["status"].eq("ok").all()
    html_text = job.report(wb.root / "r.html").read_text()
    assert "Summarise the clip in one…" in html_text and "prompt 1" not in html_text


def test_progress_never_goes_back_across_cancel_and_resume(
        wb: Workbench, fake: FakeGemini, media: list[Path]) -> None:
    fake.latency_s = 0.12
    wb.start_worker()
    job = submit(wb, fake, media, max_cells_in_flight=1)
    seen: list[tuple[str, float, str]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            r = job.info
            if not seen or seen[-1] != (r.status.value, r.progress, r.message):
                seen.append((r.status.value, r.progress, r.message))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = job.dir / "output.jsonl"
    wait_until(lambda: out.exists() and len(out.read_text().splitlines()) >= 2, what="2 cells")
    job.cancel()
    wait_done(job)
    at_cancel = job.progress
    assert job.status == "cancelled" and 50 <= at_cancel < 90
    mark = len(seen)
    job.resume()
    wait_done(job)
    stop.set()
    sampler.join()
    assert job.status == "completed"
    percents = [p for _, p, _ in seen]
    assert percents == sorted(percents), seen  # never backwards, resume included
    after = [p for st, p, _ in seen[mark:] if st == "in_progress"]
    assert after and min(after) >= at_cancel, seen  # the resume starts from the done fraction
    cancelling = [m for st, _, m in seen if st == "cancelling"]
    assert cancelling and all(m.startswith("cancelling") for m in cancelling), cancelling


def test_resume_reruns_calls_that_ended_in_error_and_nothing_else(
        wb: Workbench, fake: FakeGemini, media: list[Path]) -> None:
    fake.latency_s = 0.1
    down = fake.inject("generate", 500, None, "gemini-b", "model gemini-b is down")
    wb.start_worker()
    job = submit(wb, fake, media, max_cells_in_flight=1)
    out = job.dir / "output.jsonl"
    wait_until(lambda: out.exists() and len(out.read_text().splitlines()) >= 2, what="2 cells")
    job.cancel()
    wait_done(job)
    assert job.status == "cancelled"
    before = {r.call_id: r for r in tables.calls(wb.store, job.id)}
    failed = sorted(cid for cid, r in before.items() if not r.ok)
    done_cells = {r.cell_id for r in before.values() if r.role == "judge"}
    assert failed and all(cid.endswith("/gemini-b") for cid in failed)
    sent_before = len(fake.requests("generate"))
    fake.injections.remove(down)  # the model is back
    fake.latency_s = 0.01
    job.resume()
    wait_done(job)
    assert job.status == "completed" and (job.info.completed, job.info.failed) == (4, 0)
    resent = call_ids_on_the_wire(fake, job, [e for e in fake.requests("generate")[sent_before:]
                                              if e["status"] == 200])
    finished_before = {cid for cid, r in before.items() if r.ok and r.role == "model"}
    assert set(failed) <= set(resent)  # the errored calls ran again ...
    assert not finished_before & set(resent)  # ... the answered ones did not
    # a cell judged without gemini-b's answer is judged again, now with both answers
    assert {f"{c}/@judge" for c in done_cells} <= set(resent)
    rows = tables.calls(wb.store, job.id)
    assert len(rows) == 12 and all(r.ok for r in rows)
    assert job.info.metrics["rerun_after_errors"] == sorted(done_cells | {
        cid.split("/")[0] for cid in failed})
    lines = [json.loads(x)["custom_id"] for x in (job.dir / "output.jsonl").read_text().splitlines()]
    assert sorted(lines) == ["c0", "c1", "c2", "c3"]  # one line per cell; the first run's aside
    assert (job.dir / "output.superseded.jsonl").exists() or (job.dir / "errors.superseded.jsonl").exists()
    assert job.results()["score"].notna().all()


def test_an_uploaded_file_near_its_expiry_is_uploaded_again_within_one_run(
        wb: Workbench, fake: FakeGemini, media: list[Path]) -> None:
    fake.latency_s = 0.4
    # the service's files live 48 h; here 4 s, with a 3 s margin: a file is fresh for 1 s, so
    # three 0.4 s calls need a second upload, and a loaded machine has 3 s between check and use
    fake.file_ttl_s = 4.0
    wb.start_worker()
    job = wait_done(wb.grid.submit(
        media=media[:1], prompts=["one", "two", "three"], models=["gemini-a"], judge=None,
        max_cells_in_flight=1, default_rpm=60_000,
        gemini=engine_settings(fake.url, expiry_margin_s=3.0)))
    assert job.status == "completed" and set(job.results()["status"]) == {"ok"}
    ups = fake.requests("upload.finalize")
    assert len(ups) >= 2 and {u["display_name"] for u in ups} == {"a.mp4"}
    assert {e["status"] for e in fake.requests("generate")} == {200}  # never a stale file


def test_a_local_base_model_judge_scores_from_token_probabilities(
        wb: Workbench, fake: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mechanics of the logprob judge (a double as the model; Gemma's test gives meaning)."""
    import tests.phased_doubles  # noqa: F401  (registers the "base-double" engine provider)
    from tests.speech import speak
    from workbench.media import sha256_file

    monkeypatch.setenv("WORKBENCH_LOCK_DIR", str(tmp_path / "locks"))
    wav = speak("The museum opens at nine.", tmp_path / "museum.wav")
    tables.ensure(wb.store)  # its transcript is known: no Whisper in this test
    tables.put_transcript(wb.store, sha256_file(wav), "default",
                          "The museum opens at nine and the dinosaurs are on the first floor.",
                          "en", 2.0)
    answers = {"gemini-good": "The museum opens at nine; dinosaurs on the first floor.",
               "gemini-junk": ',},"" zz ]]'}
    fake.responder = lambda model, body: answers[model]
    log = tmp_path / "judge.log"
    wb.start_worker()
    job = wait_done(wb.grid.submit(
        media=wav, prompts=["Summarise the clip.", "When does it open?"], models=list(answers),
        judge={"provider": "vllm", "name": "base", "label": "base-judge", "scoring": "logprobs",
               "engine": {"provider": "base-double", "log": str(log)}},
        local_isolation="inline", default_rpm=60_000, gemini=engine_settings(fake.url)))
    assert job.status == "completed", job.info
    assert log.exists(), job.calls()[["call_id", "text", "error"]].to_dict("records")
    sent = [json.loads(x) for x in log.read_text().splitlines()]
    # two scoring completions per answer (the second splits "1" into 1 or 10), 2 × 2 cells
    assert len(sent) == 8 and {(r["endpoint"], r["logprobs"]) for r in sent} == {("completion", 20)}
    df = job.results()
    assert str(df["score"].dtype) == "Int64" and df["expected_score"].between(1, 10).all()
    good = df[df["model"] == "gemini-good"]["expected_score"]
    junk = df[df["model"] == "gemini-junk"]["expected_score"]
    assert good.min() > 7 > 2 > junk.max(), df[["model", "expected_score"]]
    assert df["reasoning"].str.startswith("expected rating").all()
    s = job.summaries()
    assert s["best_model"].eq("gemini-good").all()
    assert s["overall_summary"].str.startswith("Best: gemini-good (").all()
    assert not s["overall_summary"].str.contains(r"[{}\]\[]|,\}", regex=True).any()
