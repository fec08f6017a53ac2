"""Widgets without a browser: clicks cancel/resume jobs in the store, bars follow it.

Everything here drives the ipywidgets objects directly (`Button.click()`, `.value`):
no kernel and no frontend are needed, and the store is the real one.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, spawn_worker, worker_env
from tests.conftest import wait_until as poll_until
from workbench import Status, Workbench
from workbench.batch.output import error_line, success_line
from workbench.engines.base import ChatResult, Choice
from workbench.store import JobRow
from workbench.widgets import (
    Dashboard,
    JobPanel,
    StatusBadge,
    job_panel,
    wait_until,
    wait_until_async,
)
from workbench.widgets import format as fmt
from workbench.widgets.batch import BatchForm, BatchJobPanel
from workbench.widgets.grid import GridForm, GridJobPanel, heatmap_html, score_color, text_bar
from workbench.widgets.panel import panel_class
from workbench.widgets.phased import PhasedJobPanel
from workbench.widgets.preview import tail_records
from workbench.widgets.rates import speed_of


def _text(widget: object) -> str:
    """What an HTML widget shows, as text (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", widget.value))  # type: ignore[attr-defined]


def _count(wb: Workbench, n: int, **spec: object) -> str:
    return wb.store.create_job("count", {"n": n, **spec}, total=n)


def _until(pred, timeout: float = 60, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    poll_until(pred, timeout, what, interval=0.02)


def _ids(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(json.loads(x)["custom_id"] for x in path.read_text().splitlines())


# -- the dashboard -----------------------------------------------------------------------


def test_dashboard_lists_jobs_newest_first_with_counts(wb: Workbench) -> None:
    dash = wb.dashboard(interval=None)
    assert "No jobs yet" in dash.rows.children[0].value
    assert "0 running · 0 waiting · 0 finished" in dash.header.value
    first, second = _count(wb, 3), _count(wb, 7)
    dash.refresh()
    assert dash.job_ids == [second, first]
    row = dash.view(first)
    assert (row.badge.status, row.badge.text) == ("queued", "queued")
    assert _text(row.counts) == "0/3"
    assert "0 running · 2 waiting · 0 finished" in dash.header.value
    assert not row.cancel_button.disabled and row.resume_button.disabled
    with pytest.raises(KeyError, match="not on this dashboard"):
        dash.view("count_nope")


def test_dashboard_limit_and_kind_filter(wb: Workbench) -> None:
    ids = [_count(wb, 1) for _ in range(4)]
    boom = wb.store.create_job("boom", {}, total=1)
    dash = Dashboard(wb, limit=2, interval=None)
    assert dash.job_ids == [boom, ids[-1]]
    assert "3 older not shown" in dash.header.value
    only_count = Dashboard(wb, kind="count", limit=None, interval=None)
    assert only_count.job_ids == ids[::-1]
    assert "kind count" in only_count.header.value
    with pytest.raises(ValueError, match="limit must be >= 1"):
        Dashboard(wb, limit=0, interval=None)


def test_progress_bar_follows_the_store(wb: Workbench) -> None:
    jid = _count(wb, 20)
    dash = wb.dashboard(interval=None)
    view = dash.view(jid)
    assert view.bar.value == 0
    wb.store.transition(jid, Status.IN_PROGRESS)
    wb.store.update(jid, completed=9, failed=1, progress=50.0, message="unit 10/20",
                    metrics={"requests_per_s": 2.5, "tokens_per_s": 120.0, "eta_s": 4.0})
    dash.refresh()
    assert view.bar.value == 50.0 and _text(view.percent) == "50%"
    assert _text(view.counts) == "10/20 · 1 failed"
    assert _text(view.rate) == "2.50 units/s · 120 tok/s"
    assert _text(view.eta) == "ETA 4s"
    assert _text(view.message) == "unit 10/20"
    assert (view.badge.status, view.bar.bar_style) == ("in_progress", "info")
    wb.store.update(jid, completed=19, progress=100.0)
    wb.store.transition(jid, Status.FINALIZING)
    wb.store.transition(jid, Status.COMPLETED, message="completed 19, failed 1")
    dash.refresh()
    assert (view.bar.value, view.badge.status, view.bar.bar_style) == (100.0, "completed",
                                                                       "success")
    assert _text(view.eta) == ""  # a finished job has no ETA
    assert view.cancel_button.disabled and view.resume_button.disabled


def test_click_cancel_on_queued_job_cancels_it_in_the_store(wb: Workbench) -> None:
    jid = _count(wb, 5)
    dash = wb.dashboard(interval=None)
    view = dash.view(jid)
    view.cancel_button.click()
    assert wb.store.get(jid).status is Status.CANCELLED
    assert view.badge.status == "cancelled"
    assert view.cancel_button.disabled and not view.resume_button.disabled
    view.resume_button.click()
    assert wb.store.get(jid).status is Status.QUEUED
    assert view.badge.status == "queued"


def test_cancel_then_resume_a_running_job_by_clicks(wb: Workbench) -> None:
    jid = _count(wb, 40, sleep=0.05)
    out = wb.store.job_dir(jid) / "output.jsonl"
    dash = wb.dashboard(interval=None)
    view = dash.view(jid)
    wb.start_worker()
    _until(lambda: sum(_ids(out).values()) >= 3, what="3 units")
    dash.refresh()
    assert view.badge.status == "in_progress"
    view.cancel_button.click()
    assert wb.store.get(jid).status in (Status.CANCELLING, Status.CANCELLED)
    assert view.cancel_button.disabled  # a cancelling job cannot be cancelled twice
    _until(lambda: wb.store.get(jid).status is Status.CANCELLED, what="cancelled")
    dash.refresh()
    row = wb.store.get(jid)
    assert view.badge.status == "cancelled" and view.badge.text == "cancelled"
    assert 3 <= row.completed < 40 and sum(_ids(out).values()) == row.completed
    assert not view.resume_button.disabled

    view.resume_button.click()
    assert view.badge.status in ("queued", "in_progress", "completed")
    row = dash.wait(jid, timeout=60)
    assert row.status is Status.COMPLETED and row.completed == 40
    ids = _ids(out)
    assert set(ids) == {f"u{i}" for i in range(40)} and max(ids.values()) == 1
    assert view.badge.status == "completed" and view.bar.value == 100.0


def test_refused_click_says_why_and_changes_nothing(wb: Workbench) -> None:
    jid = _count(wb, 2)
    wb.start_worker()
    wb.job(jid).wait(timeout=30, progress=False)
    dash = wb.dashboard(interval=None)
    view = dash.view(jid)
    assert view.cancel_button.disabled
    view.cancel_button.click()  # .click() fires even on a disabled button: must be harmless
    assert wb.store.get(jid).status is Status.COMPLETED
    assert "cancel refused" in view.notice.value
    assert "cannot go from &#x27;completed&#x27; to &#x27;cancelled&#x27;" in view.notice.value
    view.resume_button.click()
    assert wb.store.get(jid).status is Status.COMPLETED
    assert "resume refused" in view.notice.value


def test_background_refresher_keeps_the_dashboard_live(wb: Workbench) -> None:
    jid = _count(wb, 15, sleep=0.03)
    dash = wb.dashboard(interval=0.05)
    view = dash.view(jid)
    assert dash.refresher is not None and dash.refresher.running
    seen: set[float] = set()
    wb.start_worker()

    def done() -> bool:
        seen.add(view.bar.value)
        return view.badge.status == "completed"

    _until(done, what="dashboard showing completed (no explicit refresh)")
    assert view.bar.value == 100.0 and _text(view.counts) == "15/15"
    assert len(seen) >= 3, seen  # it moved through intermediate values
    later = _count(wb, 1)
    _until(lambda: later in dash.views, what="new job appearing on its own")
    assert dash.refresher.errors == 0 and dash.refresher.ticks > 3
    dash.close()
    assert not dash.refresher.running


def test_dashboard_watches_a_detached_worker_process(wb: Workbench) -> None:
    jid = _count(wb, 200, sleep=0.05)
    dash = wb.dashboard(interval=0.05)
    view = dash.view(jid)
    proc = spawn_worker(wb.root)
    try:
        _until(lambda: view.badge.status == "in_progress" and view.bar.value > 0,
               what="process worker progress on the dashboard")
        assert wb.store.get(jid).worker.split(":")[1] == str(proc.pid)
        view.cancel_button.click()
        _until(lambda: view.badge.status == "cancelled", what="badge cancelled")
        row = wb.store.get(jid)
        assert row.status is Status.CANCELLED and 0 < row.completed < 200
    finally:
        dash.close()
        proc.terminate()
        proc.wait(timeout=30)


# -- one job's panel ---------------------------------------------------------------------


def test_job_panel_shows_results_error_and_dispatches_on_kind(wb: Workbench) -> None:
    jid = _count(wb, 8, fail_units=[6])
    boom = wb.store.create_job("boom", {}, total=1)
    wb.start_worker()
    for j in (jid, boom):
        wb.job(j).wait(timeout=30, progress=False)
    panel = wb.job(jid).panel()
    assert type(panel) is JobPanel and panel_class("count") is JobPanel
    assert panel.status == "completed" and _text(panel.view.counts) == "8/8 · 1 failed"
    assert "newest 5 of 8 results" in panel.preview.value
    assert "u7" in panel.preview.value and "unit failed" in panel.preview.value
    assert "u0" not in panel.preview.value
    assert "took" in panel.details.value
    failed = job_panel(wb.job(boom), interval=None)
    assert failed.status == "failed"
    assert "RuntimeError: engine would not start" in failed.details.value
    assert _text(failed.view.message) == "RuntimeError: engine would not start"
    assert not failed.view.resume_button.disabled
    assert panel.refresher is not None and panel.refresher.running
    panel.close()
    assert not panel.refresher.running


def test_panel_cancel_and_wait(wb: Workbench) -> None:
    jid = _count(wb, 100, sleep=0.05)
    panel = wb.job(jid).panel()
    wb.start_worker()
    _until(lambda: wb.store.get(jid).completed >= 2, what="2 units")
    panel.view.cancel_button.click()
    row = panel.wait(timeout=30)
    assert row.status is Status.CANCELLED
    assert panel.status == "cancelled"
    assert f"of {row.completed:,} results" in panel.preview.value
    panel.close()


def test_wait_times_out_with_the_status_in_the_message(wb: Workbench) -> None:
    jid = _count(wb, 1)
    dash = wb.dashboard(interval=None)
    with pytest.raises(TimeoutError, match=f"job {jid} still queued after 0.2 s"):
        dash.wait(jid, timeout=0.2)
    assert wait_until(lambda: False, timeout=0.1, poll_s=0.02) is False
    assert asyncio.run(wait_until_async(lambda: False, timeout=0.1, poll_s=0.02)) is False


def test_wait_async_returns_the_final_row(wb: Workbench) -> None:
    jid = _count(wb, 5, sleep=0.01)
    dash = wb.dashboard(interval=None)
    wb.start_worker()
    row = asyncio.run(dash.wait_async(jid, timeout=30))
    assert row.status is Status.COMPLETED and dash.view(jid).badge.status == "completed"
    parked = wb.store.create_job("count", {"n": 1}, total=1, status=Status.VALIDATING)
    with pytest.raises(TimeoutError, match=f"job {parked} still validating after 0.05 s"):
        asyncio.run(dash.wait_async(parked, timeout=0.05))


class _Kernel:
    """A real ipykernel driven over ZMQ, as JupyterLab drives it (no browser)."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def start(self, code: str) -> str:
        return self.kc.execute(code)

    def finish(self, msg_id: str, timeout: float = 120) -> str:
        out: list[str] = []
        while True:
            m = self.kc.get_iopub_msg(timeout=timeout)
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            if m["msg_type"] == "stream":
                out.append(m["content"]["text"])
            elif m["msg_type"] == "error":
                raise AssertionError("\n".join(m["content"]["traceback"]))
            elif m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                return "".join(out)

    def click(self, model_id: str) -> None:
        """What the browser sends when a Button is clicked."""
        msg = self.kc.session.msg("comm_msg", {"comm_id": model_id, "data": {
            "method": "custom", "content": {"event": "click"}}})
        self.kc.shell_channel.send(msg)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def test_cancel_click_reaches_the_kernel_while_a_cell_awaits_the_job(tmp_path: Path) -> None:
    env = worker_env(PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    kernel = _Kernel(REPO, env)
    root = tmp_path / "wb"
    try:
        setup = kernel.start(
            "import tests.kinds\n"
            "from workbench import Workbench\n"
            f"wb = Workbench({str(root)!r})\n"
            "jid = wb.store.create_job('count', {'n': 400, 'sleep': 0.05}, total=400)\n"
            "dash = wb.dashboard(interval=0.2)\n"
            "worker = wb.start_worker()\n"
            "print(jid, dash.view(jid).cancel_button.model_id)")
        jid, button = kernel.finish(setup).split()
        waiting = kernel.start("final = await dash.wait_async(jid, timeout=120)\n"
                               "print(final.status.value, final.completed)")
        store = Workbench(root).store
        _until(lambda: store.get(jid).completed >= 3, what="the job running in the kernel")
        kernel.click(button)
        status, completed = kernel.finish(waiting, timeout=60).split()
        assert status == "cancelled" and 3 <= int(completed) < 400
        assert store.get(jid).status is Status.CANCELLED
        shown = kernel.finish(kernel.start("print(dash.view(jid).badge.text)"))
        assert shown.strip() == "cancelled"
    finally:
        kernel.close()


# -- pieces ------------------------------------------------------------------------------


def test_badge_text_colour_and_css_class() -> None:
    b = StatusBadge("in_progress")
    assert b.text == "in progress"
    assert "wb-badge-in_progress" in b.widget.value and "var(--jp-brand-color1" in b.widget.value
    assert "color:white" not in b.widget.value  # the theme's inverse text colour, not white
    assert "var(--jp-ui-inverse-font-color1" in b.widget.value
    b.set("cancelled")
    assert "wb-badge-cancelled" in b.widget.value and ">cancelled<" in b.widget.value
    assert set(fmt.STATUS_COLORS) == set(Status)


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "—"), (float("inf"), "—"), (-1, "—"), (0, "0s"), (59.4, "59s"), (95, "1m 35s"),
    (3600 * 5 + 60 * 7, "5h 07m"), (86400 * 3 + 3600 * 2, "3d 2h"),
])
def test_duration(seconds: float | None, text: str) -> None:
    assert fmt.duration(seconds) == text


def _row(status: Status, done: int, total: int = 100, **metrics: float) -> JobRow:
    return JobRow(id="j", kind="count", status=status, spec={}, total=total, completed=done,
                  failed=0, progress=100 * done / total, message="", error=None,
                  metrics=metrics, group_id=None, created_at=0, updated_at=0, started_at=0,
                  finished_at=None, worker=None, heartbeat_at=None, attempts=1)


def test_every_view_reads_the_published_pace() -> None:
    row = _row(Status.IN_PROGRESS, 20, units_per_s=2.0, tokens_per_s=50.0, eta_s=40.0,
               eta_at=1000.0)
    sp = speed_of(row, now=1010.0)  # ten seconds after the runner published it
    assert (sp.units_per_s, sp.tokens_per_s, sp.eta_s, sp.unit) == (2.0, 50.0, 30.0, "units")
    legacy = speed_of(_row(Status.IN_PROGRESS, 20, requests_per_s=8.0))  # no eta: none shown
    assert (legacy.units_per_s, legacy.eta_s) == (8.0, None)
    done = speed_of(_row(Status.COMPLETED, 100, units_per_s=8.0, eta_s=0.0))
    assert (done.units_per_s, done.eta_s) == (8.0, None)  # a finished job keeps its average


def test_tail_records_reads_only_complete_lines(tmp_path: Path) -> None:
    p = tmp_path / "out.jsonl"
    assert tail_records(p) == []
    lines = [json.dumps({"custom_id": f"r{i}", "pad": "x" * 300}) for i in range(500)]
    p.write_text("\n".join(lines) + "\n" + '{"custom_id": "torn", "pa')
    got = tail_records(p, 4)
    assert [r["custom_id"] for r in got] == ["r496", "r497", "r498", "r499"]
    assert [r["custom_id"] for r in tail_records(p, 60)][:2] == ["r440", "r441"]


# -- batch: the form and the panel --------------------------------------------------------


def _frame(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"who": [f"c{i}" for i in range(n)],
                         "profile": [f"{i} years of SQL" for i in range(n)]})


def test_batch_form_submits_a_dataframe_with_the_chosen_sampling(wb: Workbench) -> None:
    form = BatchForm(wb, _frame(), model="/models/some-model", panel_interval=None)
    assert form.source.value == "DataFrame" and form.prompt.value == "{who}"
    form.prompt.value = "Rate: {profile}"
    form.system.value = "Be brief."
    form.id_column.value = "who"
    form.max_tokens.value = 12
    form.temperature.value = 0.5
    form.window.value = 3
    form.submit_button.click()
    assert form.job is not None, form.message.value
    row = wb.store.get(form.job.id)
    assert (row.kind, row.status, row.total) == ("batch", Status.QUEUED, 4)
    assert row.spec["window"] == 3 and row.spec["model"] == "/models/some-model"
    lines = [json.loads(x) for x in (form.job.dir / "input.jsonl").read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == ["c0", "c1", "c2", "c3"]
    body = lines[2]["body"]
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Rate: 2 years of SQL"}]
    assert (body["max_tokens"], body["temperature"]) == (12, 0.5) and "top_p" not in body
    assert f"submitted <code>{row.id}</code>: 4 requests" in form.message.value
    assert isinstance(form.panel, BatchJobPanel)
    assert form.job_box.children == (form.panel.widget,)
    assert form.panel.status == "queued"


def test_batch_form_refuses_bad_input_and_queues_nothing(wb: Workbench, tmp_path: Path) -> None:
    form = BatchForm(wb, _frame(), folder=tmp_path, panel_interval=None)
    form.prompt.value = "Rate: {salary}"
    assert form.submit() is None
    assert "salary" in form.message.value and "wb-form-error" in form.message.value
    form.source.value = "JSONL file"
    assert form.frame_box.layout.display == "none" and form.temperature.disabled
    assert form.submit() is None and "choose a JSONL file first" in form.message.value
    bad = tmp_path / "in" / "bad.jsonl"
    bad.parent.mkdir()
    good_line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                 "body": {"messages": [{"role": "user", "content": "hi"}]}}
    bad.write_text(json.dumps(good_line) + "\n" + json.dumps({**good_line, "custom_id": "b",
                                                             "url": "/v1/nope"}) + "\n")
    form2 = BatchForm(wb, folder=tmp_path, panel_interval=None)
    assert form2.path.options == (str(bad),)
    form2.path.value = str(bad)
    assert form2.submit() is None
    assert "line 2" in form2.message.value and "nothing was queued" in form2.message.value
    assert wb.store.list_jobs() == [] and form2.job is None


def test_batch_panel_shows_speed_and_growing_preview(wb: Workbench) -> None:
    path = wb.batch.from_dataframe(_frame(12), "Rate: {profile}", id_column="who",
                                   max_tokens=8)
    job = wb.batch.submit(path, model="/models/m", window=4)
    panel = job_panel(job, interval=None)
    assert isinstance(panel, BatchJobPanel) and panel_class("batch") is BatchJobPanel
    assert "no results yet" in panel.preview.value
    wb.store.transition(job.id, Status.IN_PROGRESS)
    for i in range(3):
        ctx_line = success_line(ChatResult(custom_id=f"c{i}", choices=[
            Choice(text=f"answer number {i}", finish_reason="stop")], prompt_tokens=5,
            completion_tokens=3), "chat", "/models/m")
        with open(job.dir / "output.jsonl", "a") as f:
            f.write(json.dumps(ctx_line) + "\n")
    wb.store.update(job.id, completed=3, progress=25.0,
                    metrics={"requests_per_s": 12.0, "tokens_per_s": 36.0, "eta_s": 0.75})
    panel.refresh()
    assert "12.0 req/s" in panel.speed.value and "36.0 tok/s" in panel.speed.value
    assert "3/12" in panel.speed.value and "/models/m" in panel.speed.value
    assert "newest 3 of 3 results" in panel.preview.value
    assert "answer number 2" in panel.preview.value
    with open(job.dir / "errors.jsonl", "a") as f:
        f.write(json.dumps(error_line("c3", "prompt too long")) + "\n")
    wb.store.update(job.id, failed=1, progress=33.3)
    panel.refresh()
    assert "newest 4 of 4 results" in panel.preview.value
    assert "prompt too long" in panel.preview.value


@pytest.mark.vllm
def test_batch_form_runs_on_vllm_and_the_panel_follows(wb: Workbench, tiny_llama: Path) -> None:
    form = BatchForm(wb, _frame(6), model=str(tiny_llama), max_tokens=8, panel_interval=0.1)
    form.prompt.value = "Rate: {profile}"
    job = form.submit()
    assert job is not None, form.message.value
    wb.start_worker()
    assert form.panel is not None
    row = asyncio.run(form.panel.wait_async(timeout=600))
    assert row.status is Status.COMPLETED and row.completed == 6
    form.panel.refresh()
    assert "newest 6 of 6 results" in form.panel.preview.value
    assert "row-5" in form.panel.preview.value
    assert "tok/s" in form.panel.speed.value and row.metrics["tokens_per_s"] > 0
    form.close()


# -- phased: the students' queue ----------------------------------------------------------


@pytest.mark.stt
def test_phased_panel_shows_each_students_place_then_results(
        wb: Workbench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.speech import have_espeak, speak

    monkeypatch.setenv("WORKBENCH_LOCK_DIR", str(tmp_path / "locks"))  # no other job's device

    if not have_espeak():
        pytest.skip("espeak-ng is not installed")
    said = {"alice": "the cat sat on the mat", "bob": "photosynthesis makes sugar from light",
            "carol": "water boils at one hundred degrees"}
    wavs = {k: speak(v, tmp_path / f"{k}.wav") for k, v in said.items()}
    gate = tmp_path / "gate"
    job = wb.phased.submit(
        wavs, rubric={"accuracy": "is it right", "clarity": "is it clear"}, batch_size=2,
        stt={"isolation": "inline"},
        llm={"model": "scripted", "engine": "tests.phased_doubles:ScriptedJudge",
             "isolation": "inline", "options": {"gate": str(gate)}})
    panel = job_panel(job, interval=None)
    assert isinstance(panel, PhasedJobPanel) and panel_class("phased") is PhasedJobPanel
    assert [v for _, v in panel.student.options] == ["", "alice", "bob", "carol"]
    assert panel.queue.value.count("wb-item-waiting") == 3
    panel.student.value = "carol"
    assert "Your position: Batch 2, Student 1/2, estimated wait" in panel.card.value
    panel.student.value = "bob"
    assert "Your position: Batch 1, Student 2/2" in panel.card.value

    wb.start_worker()  # the judge holds its first answer until the gate exists

    def evaluating() -> bool:
        panel.refresh()
        return "evaluating" in panel.phase.value

    _until(evaluating, timeout=120, what="batch 1 in its evaluation phase")
    assert "Now:</b> batch 1 of 2 · evaluating" in panel.phase.value
    assert "1 waiting · 2 evaluating" in panel.phase.value
    assert "Now evaluating your recording" in panel.card.value  # maybe "(loading …)" first
    assert "(Batch 1, Student 2/2); result in about" in panel.card.value
    panel.student.value = "carol"
    assert "Your position: Batch 2, Student 1/2" in panel.card.value

    gate.touch()
    row = panel.wait(timeout=120)
    assert row.status is Status.COMPLETED
    assert "3 done" in panel.phase.value and panel.queue.value.count("wb-item-done") == 3
    results = job.results().set_index("item_id")
    overall = int(results.loc["carol", "overall"])
    assert f"Done: overall {overall}/10" in panel.card.value
    transcript = str(results.loc["carol", "transcript"])
    assert "degrees" in transcript.lower()  # Whisper heard the recording
    assert f"transcript: {html.escape(' '.join(transcript.split())[:40])}" in panel.card.value
    assert "3 of 3 recordings finished" in panel.preview.value
    assert "score_accuracy" in panel.preview.value


# -- grid: form, progress line, heatmap, cards --------------------------------------------


@pytest.fixture
def gemini(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from tests.fake_gemini import API_KEY, FakeGemini

    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with FakeGemini(latency_s=0.02) as server:
        yield server


def _grid_form(wb: Workbench, folder: Path, gemini, **kw: object) -> GridForm:  # type: ignore[no-untyped-def]
    from tests.fake_gemini import engine_settings

    folder.mkdir(exist_ok=True)
    for n in "abc":
        (folder / f"{n}.mp4").write_bytes(b"\x00\x01video-" + n.encode() * 300)
    (folder / "notes.bin").write_bytes(b"not media")
    return GridForm(wb, folder=folder, prompts=["Describe the clip.", "List the objects."],
                    models=["gemini-a", "gemini-b"], judge="gemini-judge", default_rpm=60_000,
                    gemini=engine_settings(gemini.url), **kw)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_grid_form_counts_runs_and_panel_shows_heatmap_and_cards(
        wb: Workbench, tmp_path: Path, gemini) -> None:  # type: ignore[no-untyped-def]
    form = _grid_form(wb, tmp_path / "media", gemini, panel_interval=None)
    assert [Path(p).name for p in form.media.options] == ["a.mp4", "b.mp4", "c.mp4"]
    assert form.run_button.description == "Run 0 × 2 = 0 comparisons"
    assert form.run_button.disabled
    form.media.value = form.media.options
    assert form.run_button.description == "Run 3 × 2 = 6 comparisons"
    assert not form.run_button.disabled
    form.run_button.click()
    assert form.job is not None, form.message.value
    assert "6 comparisons" in form.message.value
    panel = form.panel
    assert isinstance(panel, GridJobPanel) and panel_class("grid") is GridJobPanel
    wb.start_worker()
    row = panel.wait(timeout=120)
    assert row.status is Status.COMPLETED
    assert "Completed: ████████████ 100% — completed 6, failed 0" in panel.line.value
    scores = form.job.scores()
    assert list(scores.index) == ["gemini-a", "gemini-b"]
    for model in scores.index:
        assert f">{html.escape(model)}</th>" in panel.heatmap.value
        assert f">{scores.loc[model, 'all']:.1f}</td>" in panel.heatmap.value
    assert panel.preview.value.count("class='wb-card wb-card-ok'") == 6
    assert panel.preview.value.count("wb-model-card") == 12
    assert "6 of 6 comparisons done" in panel.preview.value
    comps = form.job.comparisons()["comparisons"]
    assert html.escape(comps[0]["overall_summary"]) in panel.preview.value


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_grid_panel_follows_progress_and_cancel_keeps_finished_cells(
        wb: Workbench, tmp_path: Path, gemini) -> None:  # type: ignore[no-untyped-def]
    gemini.latency_s = 0.3
    form = _grid_form(wb, tmp_path / "media", gemini, panel_interval=None,
                      max_cells_in_flight=1)
    form.media.value = form.media.options
    job = form.submit()
    assert job is not None and form.panel is not None
    panel = form.panel
    wb.start_worker()

    def in_cells() -> bool:
        panel.refresh()
        return "Processing combinations: 2/6 done" in panel.line.value

    _until(in_cells, timeout=120, what="the seed's progress message")
    assert "Running batch analysis... " in panel.line.value
    panel.view.cancel_button.click()
    row = panel.wait(timeout=60)
    assert row.status is Status.CANCELLED
    done = [c for c in job.comparisons()["comparisons"] if c["status"] == "ok"]
    assert 1 <= len(done) < 6
    assert panel.preview.value.count("wb-card-ok") == len(done)
    assert f"{len(done)} of 6 comparisons done" in panel.preview.value
    assert panel.heatmap.value == heatmap_html(job.scores())  # the kept cells' scores


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_grid_form_says_the_grids_warnings_in_its_message(
        wb: Workbench, tmp_path: Path, gemini) -> None:  # type: ignore[no-untyped-def]
    import warnings

    form = _grid_form(wb, tmp_path / "media", gemini, panel_interval=None)
    form.models.value = ["gemini-a", "gemini-judge"]  # the judge also competes
    form.media.value = form.media.options[:1]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        job = form.submit()
    assert job is not None and "submitted" in form.message.value
    assert "note: the judge gemini-judge is also a competitor" in form.message.value
    assert not [x for x in seen if "competitor" in str(x.message)]  # not on stderr too


def test_grid_form_refuses_bad_input_whole(wb: Workbench, tmp_path: Path) -> None:
    form = GridForm(wb, folder=tmp_path, media=[tmp_path / "missing.mp4"],
                    prompts=["Describe."], models=["vllm:/nowhere/model"], panel_interval=None)
    assert form.run_button.description == "Run 1 × 1 = 1 comparisons"
    assert form.submit() is None
    assert "missing.mp4" in form.message.value and "nothing was queued" in form.message.value
    assert wb.store.list_jobs() == []


def test_text_bar_and_score_colours() -> None:
    assert text_bar(45) == "█████░░░░░░░" and text_bar(0) == "░" * 12
    assert text_bar(100) == "█" * 12 and text_bar(250) == "█" * 12
    assert score_color(1) == "hsl(0, 70%, 72%)" and score_color(10) == "hsl(120, 70%, 72%)"
    assert score_color(None) == score_color(float("nan")) == "var(--jp-layout-color3, #e0e0e0)"
    assert heatmap_html(pd.DataFrame()) == "<i>no scores yet</i>"
