"""`job.panel()`: the live view of one job, whatever its kind.

`JobPanel` shows what every job has (status, progress, counts, speed, timings, worker,
error, a preview of the newest results, and the engine's log one click away: the Log
button shows the tail of `ROOT/jobs/<id>/engine.log`, where the worker sends what vLLM
and torch print). Kind packages' panels extend it with what only
they know (a batch's tokens/s, the students' queue, the grid's heatmap); `job_panel`
picks the right one by the job's kind.
"""

from __future__ import annotations

import html
import importlib
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import pandas as pd

from workbench.runtime.quiet import ENGINE_LOG
from workbench.store import JobRow
from workbench.store.status import RUNNING, WAITING
from workbench.widgets import format as fmt
from workbench.widgets.job_view import JobView
from workbench.widgets.preview import frame_html, short, tail_records
from workbench.widgets.refresher import LiveWidget, Refresher, wait_for_job, wait_for_job_async
from workbench.widgets.snapshot import static_html

#: terminal colour codes vLLM puts in its log lines
ANSI = re.compile(r"\x1b\[[0-9;]*m")

if TYPE_CHECKING:
    from workbench.runtime.jobs import Job


class JobPanel(LiveWidget):
    """The live view of one job; subclasses add sections through `sections()`/`update()`."""

    #: how many of the newest results the preview shows
    preview_rows = 5

    def __init__(self, job: Job, *, interval: float | None = 1.0) -> None:
        self.job = job
        self.wb = job.wb
        self._lock = threading.RLock()
        self._preview_key: tuple[int, int, str] | None = None
        self._status = ""
        self.view = JobView(self.wb, job.id, on_change=self.poke)
        self.details = w.HTML(layout=w.Layout(flex="1 1 auto", min_width="0"))
        self.log_button = w.ToggleButton(description="Log", icon="file-text",
                                         tooltip="Show the end of this job's engine log",
                                         layout=w.Layout(width="80px", flex="0 0 auto"))
        self.log_button.add_class("wb-log-button")
        self.log = w.HTML(layout=w.Layout(display="none"))
        self.log.add_class("wb-log")
        self.log_button.observe(lambda _c: self._show_log(), "value")
        self.preview = w.HTML()
        self.preview.add_class("wb-preview")
        details = w.HBox([self.details, self.log_button],
                         layout=w.Layout(align_items="center", width="100%", grid_gap="8px"))
        self.widget = w.VBox([self.view.widget, *self.sections(), details, self.log,
                              self.preview], layout=w.Layout(width="100%"))
        self.widget.add_class("wb-panel")
        self.widget.add_class(f"wb-panel-{job.info.kind}")
        self.refresher: Refresher | None = None
        self.enable_snapshot(f"panel of job {job.id}", f"wb.job({job.id!r}).panel()")
        self.refresh()
        if interval is not None:
            self.refresher = Refresher(self.refresh, interval=interval,
                                       name=f"workbench-panel-{job.id}",
                                       on_exit=self.wb.store.close).start()

    # -- extension points ------------------------------------------------------------------
    def sections(self) -> list[w.Widget]:
        """Kind-specific widgets placed between the job row and the details."""
        return []

    def update(self, row: JobRow) -> None:
        """Refresh the kind-specific widgets from `row` (called on every tick)."""

    def preview_frame(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        """The newest result records as a table; kinds override to pick readable columns."""
        rows = []
        for r in records:
            rest = {k: v for k, v in r.items() if k != "custom_id"}
            rows.append({"custom_id": r.get("custom_id", ""), "result": short(rest)})
        return pd.DataFrame(rows)

    # -- refresh ---------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self.view.status

    def refresh(self) -> bool:
        """Re-read the store; returns True while the job still waits or runs."""
        with self._lock:
            row = self.view.refresh()
            self.details.value = self._details(row)
            self.update(row)
            key = (row.completed, row.failed, row.status.value)
            if key != self._preview_key:  # re-read results only when the counts move
                self._preview_key = key
                self.results_changed(row)
            if self.log_button.value:
                self._show_log()
            changed, self._status = row.status.value != self._status, row.status.value
            self.refreshed(changed=changed)
            return row.status in WAITING | RUNNING

    # -- the engine's log ------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.wb.store.job_dir(self.job.id) / ENGINE_LOG

    def log_tail(self, lines: int = 40, max_bytes: int = 16384) -> str:
        """The last `lines` lines of the engine log (colour codes removed)."""
        p = self.log_path
        if not p.exists():
            return ""
        with open(p, "rb") as f:
            f.seek(max(0, p.stat().st_size - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
        text = ANSI.sub("", text).replace("\r", "\n")
        return "\n".join(text.splitlines()[-lines:])

    def _show_log(self) -> None:
        on = bool(self.log_button.value)
        self.log.layout.display = None if on else "none"
        if not on:
            return
        tail = self.log_tail()
        body = html.escape(tail) if tail else "(nothing logged yet)"
        self.log.value = (f"<div style='color:{fmt.MUTED};font-size:11px;overflow-wrap:anywhere'>"
                          f"end of "
                          f"<code>{html.escape(str(self.log_path))}</code></div>"
                          f"<pre class='wb-log-text' style='max-height:260px;overflow:auto;"
                          f"font-size:11px;margin:2px 0;padding:4px 6px;white-space:pre-wrap;"
                          f"overflow-wrap:anywhere;background:{fmt.SURFACE};color:{fmt.TEXT}'>"
                          f"{body}</pre>")

    def summary(self) -> str:
        return (f"workbench panel of job {self.job.id}: {self.view.text()} "
                f"(a live widget; run wb.job({self.job.id!r}).panel() to re-attach)")

    def snapshot_html(self) -> str:
        return static_html(self.widget)

    def results_changed(self, row: JobRow) -> None:
        """Called when the job's counts moved: redraw whatever shows results."""
        self.preview.value = self.preview_html(row)

    def preview_html(self, row: JobRow) -> str:
        """The results preview; by default the newest lines of the job's result files."""
        d = self.wb.store.job_dir(row.id)
        out = tail_records(d / "output.jsonl", self.preview_rows)
        err = tail_records(d / "errors.jsonl", self.preview_rows)
        records = (out + err)[-self.preview_rows:] if err else out
        df = self.preview_frame(records)
        cap = (f"newest {len(df)} of {row.done:,} results" if len(df)
               else "no results yet")
        return frame_html(df, caption=cap)

    def _details(self, row: JobRow) -> str:
        now = time.time()
        bits = [f"created {time.strftime('%H:%M:%S', time.localtime(row.created_at))}"]
        if row.started_at:
            end = row.finished_at or now
            bits.append(f"running for {fmt.duration(end - row.started_at)}"
                        if not row.finished_at else f"took {fmt.duration(end - row.started_at)}")
        if row.status in RUNNING and row.worker:
            bits.append(f"worker {html.escape(row.worker)} "
                        f"(heartbeat {fmt.age(row.heartbeat_at, now)})")
        if row.attempts > 1:
            bits.append(f"attempt {row.attempts}")
        text = " · ".join(bits)
        if row.error:
            text += (f"<div class='wb-error' style='color:{fmt.ERROR}'>error: "
                     f"{html.escape(row.error)}</div>")
        return (f"<div class='wb-details' style='color:{fmt.MUTED};font-size:12px;"
                f"overflow-wrap:anywhere'>{text}</div>")

    # -- waiting and lifecycle -------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> JobRow:
        """Block until the job finishes (clicks wait too; see `wait_async`)."""
        row = wait_for_job(self.wb.store, self.job.id, timeout)
        self.refresh()
        return row

    async def wait_async(self, timeout: float | None = None) -> JobRow:
        """`await` the job's end in a notebook cell; the panel's buttons keep working."""
        row = await wait_for_job_async(self.wb.store, self.job.id, timeout)
        self.refresh()
        return row

    def parts(self) -> list[Any]:
        return [self.view]


#: kind name -> "module:Class" of its panel; imported lazily so a kind that is not
#: installed never breaks the panels of the others.
KIND_PANELS: dict[str, str] = {
    "batch": "workbench.widgets.batch:BatchJobPanel",
    "phased": "workbench.widgets.phased:PhasedJobPanel",
    "grid": "workbench.widgets.grid:GridJobPanel",
}


def panel_class(kind: str) -> type[JobPanel]:
    target = KIND_PANELS.get(kind)
    if target is None:
        return JobPanel
    module, _, name = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return JobPanel
        raise
    return getattr(mod, name)


def job_panel(job: Job, **kw: Any) -> JobPanel:
    """The live panel for `job`, specialised for its kind when one exists."""
    return panel_class(job.info.kind)(job, **kw)
