"""One job as two lines of widgets: who and how far, then how fast and what it says.

    batch  nightly scoring  batch_18c1…  [in progress]  ██████░░░  61%  245/400  [Cancel] [Resume]
    2.58 req/s · 61.9 tok/s   ETA 1m 37s   running: 245/400 requests

The first line has fixed parts (badge, bar, percent, counts, buttons that never shrink),
the second free text that wraps instead of being cut, so the row fits a narrow notebook
column. Colours are JupyterLab theme variables (`format`). The row reads a `JobRow`
from the store and sends commands through the job handle, the same calls a user types,
so a click and `job.cancel()` cannot behave differently. Speed and ETA are the runner's
published pace (`rates.speed_of`), the same numbers every other view shows.
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
from workbench.widgets.rates import Speed, speed_of

#: Cancel makes sense while the job waits or runs (a `cancelling` job is already stopping).
CANCELLABLE = WAITING | {Status.IN_PROGRESS, Status.FINALIZING}


def _fixed(width: str | None = None, **kw: Any) -> w.Layout:
    """A part of the row that keeps its size (never shrinks into "Can…")."""
    return w.Layout(width=width or "auto", flex="0 0 auto", **kw)


def title_html(row: JobRow) -> str:
    """Kind, name, id (never wrapped inside) and tags."""
    name = (f"<span class='wb-name' style='font-weight:600;color:{fmt.TEXT}'>"
            f"{html.escape(row.name)}</span> ") if row.name else ""
    tags = "".join(f" {fmt.pill(t, None, 'wb-tag', size=11)}" for t in row.tags)
    return (f"<div class='wb-title' style='line-height:1.35;white-space:normal'>"
            f"<b>{html.escape(row.kind)}</b> {name}"
            f"<code class='wb-id' style='font-size:11px;white-space:nowrap;color:{fmt.MUTED};"
            f"background:transparent'>{html.escape(row.id)}</code>{tags}</div>")


def rate_text(speed: Speed) -> str:
    rates = [fmt.rate(speed.units_per_s, speed.unit), fmt.rate(speed.tokens_per_s, "tok")]
    return " · ".join(r for r in rates if r)


class JobView:
    """A live row for one job. `refresh()` re-reads the store; buttons act on the job."""

    def __init__(self, wb: Bench, job_id: str, *, compact: bool = True,
                 on_change: Any = None) -> None:
        self.wb = wb
        self.job_id = job_id
        self.on_change = on_change
        self.row: JobRow | None = None
        self.speed = Speed(None, None, None)
        self._lock = threading.RLock()

        self.title = w.HTML(layout=w.Layout(width="240px", flex="0 1 240px", min_width="180px"))
        self.badge = StatusBadge()
        self.badge.widget.layout = _fixed("104px")
        self.bar = w.FloatProgress(value=0, min=0, max=100, layout=_fixed("120px"))
        self.percent = w.HTML(layout=_fixed("40px"))
        self.counts = w.HTML(layout=_fixed(min_width="88px"))
        self.cancel_button = w.Button(description="Cancel", icon="stop", button_style="danger",
                                      tooltip="Cancel this job (finished results are kept)",
                                      layout=_fixed("92px"))
        self.resume_button = w.Button(description="Resume", icon="play", button_style="success",
                                      tooltip="Queue this job again; it skips finished work",
                                      layout=_fixed("92px"))
        self.rate = w.HTML(layout=_fixed())
        self.eta = w.HTML(layout=_fixed())
        self.message = w.HTML(layout=w.Layout(flex="1 1 240px", min_width="0"))
        self.notice = w.HTML()
        self.cancel_button.add_class("wb-cancel")
        self.resume_button.add_class("wb-resume")
        for part, css in ((self.title, "wb-title-cell"), (self.percent, "wb-percent"),
                          (self.counts, "wb-counts"), (self.rate, "wb-rate"),
                          (self.eta, "wb-eta"), (self.message, "wb-message")):
            part.add_class(css)
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.resume_button.on_click(lambda _b: self.resume())
        self.buttons = w.HBox([self.cancel_button, self.resume_button],  # wrap as one
                              layout=_fixed(grid_gap="6px"))
        self.line = w.HBox([self.title, self.badge.widget, self.bar, self.percent, self.counts,
                            self.buttons],
                           layout=w.Layout(align_items="center", flex_flow="row wrap",
                                           width="100%", grid_gap="2px 8px"))
        self.line.add_class("wb-line")
        self.info_line = w.HBox([self.rate, self.eta, self.message],
                                layout=w.Layout(align_items="baseline", flex_flow="row wrap",
                                                width="100%", grid_gap="0 16px",
                                                padding="0 0 0 4px"))
        self.info_line.add_class("wb-info")
        self.widget = w.VBox([self.line, self.info_line, self.notice],
                             layout=w.Layout(width="100%", margin="0 0 6px 0"))
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
            self.speed = speed_of(row)
            _set(self.title, title_html(row))
            self.badge.set(row.status.value)
            self.bar.value = max(0.0, min(100.0, row.progress))
            self.bar.bar_style = fmt.BAR_STYLES.get(row.status, "")
            _set(self.percent, _nowrap(f"{row.progress:.0f}%"))
            _set(self.counts, _nowrap(fmt.counts(row)))
            _set(self.rate, _nowrap(rate_text(self.speed), fmt.MUTED))
            _set(self.eta, _nowrap(f"ETA {fmt.duration(self.speed.eta_s)}")
                 if self.speed.eta_s is not None and row.done < row.total else "")
            text = row.error if row.status is Status.FAILED and row.error else row.message
            color = fmt.ERROR if row.status is Status.FAILED else fmt.TEXT
            _set(self.message, f"<span style='color:{color};white-space:normal;"
                 f"overflow-wrap:anywhere'>{html.escape(text)}</span>" if text else "")
            self.cancel_button.disabled = row.status not in CANCELLABLE
            self.resume_button.disabled = row.status not in RESUMABLE
        return row

    def text(self) -> str:
        """The row in words (what a saved notebook shows without a kernel)."""
        r = self.row
        if r is None:
            return ""
        bits = [r.kind, *([r.name] if r.name else []), r.id, r.status.value.replace("_", " "),
                f"{r.progress:.0f}%", fmt.counts(r)]
        rt = rate_text(self.speed)
        if rt:
            bits.append(rt)
        if self.speed.eta_s is not None and r.done < r.total:
            bits.append(f"ETA {fmt.duration(self.speed.eta_s)}")
        if r.message:
            bits.append(r.message)
        return " · ".join(bits)

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
            self.notice.value = (f"<span class='wb-notice' style='color:{fmt.ERROR}'>"
                                 f"{verb} refused: {html.escape(str(e))}</span>")
        self.refresh()
        if self.on_change is not None:
            self.on_change()

    def close(self) -> None:
        for child in [*self.line.children, *self.buttons.children, *self.info_line.children,
                      self.notice, self.line, self.info_line]:
            child.close()
        self.widget.close()

    def _repr_mimebundle_(self, **kw: Any) -> dict[str, Any] | None:
        return self.widget._repr_mimebundle_(**kw)


def _nowrap(text: str, color: str | None = None) -> str:
    style = f"white-space:nowrap;color:{color}" if color else "white-space:nowrap"
    return f"<span style='{style}'>{html.escape(text)}</span>" if text else ""


def _set(widget: w.HTML, value: str) -> None:
    """Set only on change: every trait set is a message to the browser."""
    if widget.value != value:
        widget.value = value
