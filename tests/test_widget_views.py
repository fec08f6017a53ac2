"""What the widgets show, without a browser: the layout rules, one set of numbers, the
engine log one click away, and the static snapshot a saved notebook keeps."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import pandas as pd

from workbench import Status, Workbench
from workbench.widgets import format as fmt
from workbench.widgets.batch import FRAME, BatchForm, BatchJobPanel
from workbench.widgets.panel import job_panel
from workbench.widgets.preview import short
from workbench.widgets.snapshot import Snapshot, static_html


def _text(value: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", value)).split())


def _job(wb: Workbench, n: int = 10, **kw: object) -> str:
    return wb.store.create_job("count", {"n": n}, total=n, **kw)  # type: ignore[arg-type]


def _running(wb: Workbench, jid: str, **metrics: object) -> None:
    wb.store.transition(jid, Status.IN_PROGRESS)
    wb.store.update(jid, completed=4, progress=40.0, message="running: 4/10 units",
                    metrics=metrics)


def test_the_row_keeps_its_parts_whole_and_wraps_instead(wb: Workbench) -> None:
    jid = _job(wb, name="a name long enough to need a second line on a narrow column")
    view = wb.dashboard(interval=None).view(jid)
    for button in (view.cancel_button, view.resume_button):
        assert button.layout.flex == "0 0 auto" and button.layout.width == "92px"
    assert view.line.layout.flex_flow == "row wrap" and view.info_line.layout.flex_flow == "row wrap"
    assert "white-space:nowrap" in view.title.value.split("wb-id")[1]  # the id never breaks
    assert view.message.layout.min_width == "0"  # the message wraps, it is never cut
    # rate, ETA and message are separate boxes: "ETA 1m 37srunning" cannot happen
    assert {view.rate, view.eta, view.message} <= set(view.info_line.children)


def test_colours_are_the_themes(wb: Workbench) -> None:
    jid = _job(wb)
    _running(wb, jid, units_per_s=1.0)
    panel = job_panel(wb.job(jid), interval=None)
    markup = static_html(panel.widget) + panel.details.value
    assert "var(--jp-" in markup
    # a fixed colour only as the fallback of a theme variable (a page without JupyterLab's)
    bare = re.sub(r"var\(--jp-[\w-]+(?:, #[0-9a-fA-F]{3,6})?\)", "", markup)
    assert not re.search(r"#[0-9a-fA-F]{3,6}\b|:\s*white\b|:\s*black\b|rgb\(", bare), bare


def test_row_and_tiles_show_the_same_published_pace(wb: Workbench) -> None:
    path = wb.batch.from_dataframe(pd.DataFrame({"q": list("abcdefghij")}), "{q}")
    job = wb.batch.submit(path, model="/models/m")
    _running(wb, job.id, units_per_s=2.0, requests_per_s=2.0, tokens_per_s=61.9,
             eta_s=3.0 + 97, eta_at=time.time())
    panel = job_panel(job, interval=None)
    assert isinstance(panel, BatchJobPanel)
    row_rate = _text(panel.view.rate.value)
    assert row_rate == "2.00 req/s · 61.9 tok/s"
    tiles = _text(panel.speed.value)
    assert "2.00 req/s" in tiles and "61.9 tok/s" in tiles
    assert _text(panel.view.eta.value) in ("ETA 1m 40s", "ETA 1m 39s")
    assert "ETA " + _text(panel.view.eta.value)[4:] in tiles


def test_the_model_field_stays_visible_for_a_dataframe(wb: Workbench) -> None:
    form = BatchForm(wb, pd.DataFrame({"q": ["x"]}), model="/models/m", panel_interval=None)
    assert form.source.value == FRAME
    assert form.model.layout is not form.path.layout
    assert form.path.layout.display == "none" and form.model.layout.display != "none"
    form.name.value = "from the form"
    job = form.submit()
    assert job is not None and job.name == "from the form"


def test_the_log_button_shows_the_end_of_the_engine_log(wb: Workbench) -> None:
    jid = _job(wb)
    panel = job_panel(wb.job(jid), interval=None)
    assert panel.log.layout.display == "none"
    panel.log_button.value = True
    assert "nothing logged yet" in panel.log.value
    lines = [f"\x1b[32mINFO\x1b[0m line {i}" for i in range(100)] + ["NUMA binding: <x>"]
    panel.log_path.write_text("\n".join(lines) + "\n")
    panel.refresh()
    text = html.unescape(panel.log.value)
    assert "line 99" in text and "line 50" not in text and "\x1b[" not in text
    assert "NUMA binding: <x>" in text and "&lt;x&gt;" in panel.log.value
    assert str(panel.log_path) in text and panel.log.layout.display is None
    panel.log_button.value = False
    assert panel.log.layout.display == "none"


def test_snapshot_says_status_counts_progress_and_eta(wb: Workbench) -> None:
    jid = _job(wb, name="overnight")
    _running(wb, jid, units_per_s=0.5, eta_s=12.0, eta_at=time.time())
    dash = wb.dashboard(interval=None)
    snap = dash.snapshot
    assert snap is not None and snap.marker in dash.widget.children
    assert f".wb-snap-{snap.uid}{{display:none" in snap.marker.value
    doc = snap.html()
    text = _text(doc)
    for part in ("overnight", jid, "in progress", "40%", "4/10", "0.50 units/s", "ETA 12s",
                 "running: 4/10 units", "wb.dashboard()"):
        assert part in text, (part, text)
    assert "Cancel" not in text  # buttons need a kernel: not in the saved view
    assert f"wb-snap-{snap.uid}" in doc and ":not(:has(*))" in doc  # hides the dead widget
    panel = job_panel(wb.job(jid), interval=None)
    assert f"wb.job({jid!r}).panel()" in _text(panel.snapshot.html())
    assert "overnight" in panel.summary() and "re-attach" in panel.summary()


class FakeHandle:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def update(self, obj: object) -> None:
        self.sent.append(obj.data)  # type: ignore[attr-defined]


def test_snapshot_updates_are_throttled_but_a_status_change_goes_at_once(wb: Workbench) -> None:
    jid = _job(wb)
    dash = wb.dashboard(interval=None)
    handle = FakeHandle()
    assert dash.snapshot is not None
    dash.snapshot.handles.append(handle)
    dash.snapshot.last_at = time.monotonic()
    wb.store.update(jid, message="still queued")
    dash.refresh()
    assert handle.sent == []  # within the throttle and no status changed
    wb.store.transition(jid, Status.IN_PROGRESS)
    dash.refresh()
    assert len(handle.sent) == 1 and "in progress" in _text(handle.sent[0])
    dash.snapshot.last_at = 0.0
    wb.store.update(jid, completed=7, progress=70.0)
    dash.refresh()
    assert len(handle.sent) == 2 and "7/10" in _text(handle.sent[1])


def test_a_forms_snapshot_shows_the_panel_of_its_job(wb: Workbench) -> None:
    form = BatchForm(wb, pd.DataFrame({"q": ["x", "y"]}), model="/models/m", panel_interval=None)
    assert form.snapshot is not None
    assert "nothing submitted" in _text(form.snapshot.html())
    job = form.submit()
    assert job is not None and form.panel is not None
    assert form.panel.mirrors == [form.snapshot]
    text = _text(form.snapshot.html())
    assert job.id in text and "0/2" in text and f"wb.job({job.id!r}).panel()" in text


def test_short_shows_numpy_numbers_as_numbers() -> None:
    import numpy as np

    assert [short(v) for v in (np.int64(4), np.float64(2.5), 3, True, None)] == [
        "4", "2.5", "3", "true", "null"]
    frame = pd.DataFrame({"batch": [1, 2], "feedback": ["ok", "fine"]}).astype(object)
    assert [short(v) for v in frame["batch"]] == ["1", "2"]  # was '"1"' (json of str(np.int64))


def test_short_folds_line_breaks_written_out_by_a_model() -> None:
    assert short("Good.\\n\\nMore detail.\\tEnd") == "Good. More detail. End"
    assert short("real\n\nbreaks") == "real breaks"


def test_sizes_and_rates_read_like_words() -> None:
    assert fmt.size(5503782912) == "5.1 GiB" and fmt.size(3 * 2**20) == "3.0 MiB"
    assert fmt.size(512) == "512 B" and fmt.size(None) == "—" and fmt.size(-2**30) == "-1.0 GiB"
    assert fmt.rate(0.05, "cells") == "3.0 cells/min" and fmt.rate(2.583, "req") == "2.58 req/s"


def test_snapshot_class_alone(tmp_path: Path) -> None:
    snap = Snapshot(lambda: "<b>inner</b>", what="thing", reattach="again()")
    assert snap.update() is False  # never displayed: nothing to update
    assert "inner" in snap.html() and "again()" in _text(snap.html())


def test_the_form_writes_completion_requests_with_logprobs(wb: Workbench) -> None:
    import json

    form = BatchForm(wb, pd.DataFrame({"id": ["a"], "q": ["x"]}), model="/models/m",
                     prompt="Q: {q}\nA:", system="ignored for completions", max_tokens=1,
                     panel_interval=None)
    form.id_column.value = "id"
    form.endpoint.value = "completions"
    assert form.system.layout.display == "none"
    form.logprobs.value = 20
    job = form.submit()
    assert job is not None, form.message.value
    (line,) = [json.loads(x) for x in (job.dir / "input.jsonl").read_text().splitlines()]
    assert line["url"] == "/v1/completions" and line["custom_id"] == "a"
    assert line["body"] == {"prompt": "Q: x\nA:", "max_tokens": 1, "temperature": 0.0,
                            "logprobs": 20}
    form.endpoint.value = "chat"
    chat = form.submit()
    assert chat is not None
    body = json.loads((chat.dir / "input.jsonl").read_text())["body"]
    assert (body["logprobs"], body["top_logprobs"]) == (True, 20)
    assert body["messages"][0] == {"role": "system", "content": "ignored for completions"}
