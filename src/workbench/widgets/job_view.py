"""One job as a row of widgets: badge, progress bar, counts, speed, ETA, Cancel/Resume.

The row reads a `JobRow` from the store and sends commands through the job handle (`workbench.runtime.jobs.Job`),
the same calls a user types, so a click and `job.cancel()` cannot behave differently.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as w

from workbench.errors import WorkbenchError
from workbench.runtime.jobs import Bench, Job
from workbench.store import JobRow, Status
from workbench.store.status import RESUMABLE, WAITING
from workbench.widgets import format as fmt
from workbench.widgets.badge import StatusBadge
from workbench.widgets.rates import RateMeter, Speed

#: Cancel makes sense while the job waits or runs (a `cancelling` job is already stopping).
CANCELLABLE = WAITING | {Status.IN_PROGRESS, Status.FINALIZING}


class JobView:
    """A live row for one job. `refresh()` re-reads the store; buttons act on the job."""

    def __init__(self, wb: Bench, job_id: str, *, compact: bool = True,
                 on_change: Any = None) -> None:
        self.wb = wb
        self.job_id = job_id
        self.on_change = on_change
        self.meter = RateMeter()
        self.row: JobRow | None = None
        self.speed = Speed(None, None, None)
        self._lock = threading.RLock()

        self.title = w.HTML(layout=w.Layout(width="210px"))
        self.badge = StatusBadge()
        self.bar = w.FloatProgress(value=0, min=0, max=100, layout=w.Layout(width="160px"))
        self.percent = w.Label(layout=w.Layout(width="44px"))
        self.counts = w.Label(layout=w.Layout(width="120px"))
        self.rate = w.Label(layout=w.Layout(width="160px"))
        self.eta = w.Label(layout=w.Layout(width="95px"))
        self.message = w.Label(layout=w.Layout(flex="1 1 auto", min_width="120px"))
        self.cancel_button = w.Button(description="Cancel", icon="stop", button_style="danger",
                                      tooltip="Cancel this job (finished results are kept)",
                                      layout=w.Layout(width="90px"))
        self.resume_button = w.Button(description="Resume", icon="play", button_style="success",
                                      tooltip="Queue this job again; it skips finished work",
                                      layout=w.Layout(width="90px"))
        self.notice = w.HTML()
        self.cancel_button.add_class("wb-cancel")
        self.resume_button.add_class("wb-resume")
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.resume_button.on_click(lambda _b: self.resume())
        cells = [self.title, self.badge.widget, self.bar, self.percent, self.counts, self.rate,
                 self.eta, self.message, self.cancel_button, self.resume_button]
        self.line = w.HBox(cells, layout=w.Layout(align_items="center", width="100%"))
        self.widget = w.VBox([self.line, self.notice])
        self.widget.add_class("wb-job")
        self.widget.add_class(f"wb-job-{job_id}")
        self.refresh()

    # -- reading ---------------------------------------------------------------------------
    @property
    def job(self) -> Job:
        return Job(self.wb, self.job_id)

    @property
    def status(self) -> str:
        return self.badge.status

    def refresh(self, row: JobRow | None = None) -> JobRow:
        """Show `row` (or the job as the store has it now). Safe from any thread."""
        row = row if row is not None else self.wb.store.get(self.job_id)
        with self._lock:
            self.row = row
            self.speed = self.meter.observe(row)
            self.title.value = (f"<b>{html.escape(row.kind)}</b> "
                                f"<code style='font-size:11px'>{html.escape(row.id)}</code>")
            self.badge.set(row.status.value)
            self.bar.value = max(0.0, min(100.0, row.progress))
            self.bar.bar_style = fmt.BAR_STYLES.get(row.status, "")
            self.percent.value = f"{row.progress:.0f}%"
            self.counts.value = fmt.counts(row)
            rates = [fmt.rate(self.speed.units_per_s, "req"),
                     fmt.rate(self.speed.tokens_per_s, "tok")]
            self.rate.value = " · ".join(r for r in rates if r)
            self.eta.value = f"ETA {fmt.duration(self.speed.eta_s)}" if self.speed.eta_s else ""
            self.message.value = row.error if row.status is Status.FAILED and row.error \
                else row.message
            self.message.tooltip = self.message.value
            self.cancel_button.disabled = row.status not in CANCELLABLE
            self.resume_button.disabled = row.status not in RESUMABLE
        return row

    # -- commands --------------------------------------------------------------------------
    def cancel(self) -> None:
        self._act("cancel")

    def resume(self) -> None:
        self._act("resume")

    def _act(self, verb: str) -> None:
        try:
            getattr(self.job, verb)()
            self.notice.value = ""
        except WorkbenchError as e:  # e.g. the job finished between render and click
            self.notice.value = (f"<span class='wb-notice' style='color:#dc3545'>"
                                 f"{verb} refused: {html.escape(str(e))}</span>")
        self.refresh()
        if self.on_change is not None:
            self.on_change()

    def close(self) -> None:
        for child in [*self.line.children, self.notice, self.line]:
            child.close()
        self.widget.close()

    def _repr_mimebundle_(self, **kw: Any) -> dict[str, Any] | None:
        return self.widget._repr_mimebundle_(**kw)
