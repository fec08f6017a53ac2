"""The phased STT → evaluation job in widgets: the students' queue and their results.

Every student sees where their recording is — "Your position: Batch 2, Student 3/10,
estimated wait 5 minutes" — then its transcript and scores. The numbers come from
`PhasedJob.items_status()`, the same call the API and the HTTP server answer students
with, so the panel never has its own idea of the queue.
"""

from __future__ import annotations

import html
import time

import ipywidgets as w
import pandas as pd

from workbench.phased.api import PhasedJob
from workbench.phased.items import Items
from workbench.phased.status import ItemStatus
from workbench.store import JobRow
from workbench.widgets import format as fmt
from workbench.widgets.panel import JobPanel
from workbench.widgets.preview import frame_html, short, table_html

STATE_COLORS: dict[str, str | None] = {"waiting": None, "transcribing": fmt.BRAND,
                                       "transcribed": fmt.INFO, "evaluating": fmt.ACCENT,
                                       "done": fmt.SUCCESS, "failed": fmt.ERROR}


def _pill(state: str) -> str:
    return fmt.pill(state, STATE_COLORS.get(state), f"wb-item-{html.escape(state)}", size=11)


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} seconds"
    return f"{seconds / 60:.0f} minutes"


def student_sentence(s: ItemStatus, overall_max: int | None = None) -> str:
    """What one student reads about their recording, in plain words."""
    where = (f"Batch {s.batch}, Student {s.position_in_batch}/{s.batch_size}"
             if s.batch is not None and s.position_in_batch is not None else "not in a batch yet")
    if s.state == "waiting":
        return f"Your position: {where}, estimated wait {_minutes(s.eta_s)}"
    if s.state in ("transcribing", "evaluating"):
        doing = f" ({s.step})" if s.step != s.state else ""
        return (f"Now {s.state} your recording{doing} ({where}); result in about"
                f" {_minutes(s.eta_s)}")
    if s.state == "transcribed":
        return (f"Transcribed, next: evaluation ({where}); result in about"
                f" {_minutes(s.eta_s)}")
    if s.state == "done":
        r = s.result or {}
        out_of = f"/{overall_max}" if overall_max else ""
        return f"Done: overall {r.get('overall')}{out_of}. {r.get('feedback') or ''}".strip()
    return f"Could not be processed: {s.reason}"


class PhasedJobPanel(JobPanel):
    """Phase now running, every student's place in the queue, a per-student card, results."""

    preview_rows = 10

    def sections(self) -> list[w.Widget]:
        self.phased = PhasedJob(self.wb, self.job.id)
        self.statuses: list[ItemStatus] = []
        self.phase = w.HTML()
        self.phase.add_class("wb-phase")
        self.queue = w.HTML()
        self.queue.add_class("wb-queue")
        self.student = w.Dropdown(options=[("choose a student…", "")], value="",
                                  description="Student")
        self.card = w.HTML(layout=w.Layout(flex="1 1 300px", min_width="0"))
        self.card.add_class("wb-student-card")
        self.student.observe(lambda _c: self._show_student(), "value")
        return [self.phase, self.queue, w.HBox([self.student, self.card],
                                               layout=w.Layout(flex_flow="row wrap"))]

    def update(self, row: JobRow) -> None:
        self.statuses = self.phased.items_status()
        ids = [s.item_id for s in self.statuses]
        if [v for _, v in self.student.options[1:]] != ids:
            current = self.student.value
            self.student.options = [("choose a student…", "")] + [(i, i) for i in ids]
            self.student.value = current if current in ids else ""
        self.phase.value = self._phase_line(row)
        self.queue.value = self._queue_table()
        self._show_student()

    def _phase_line(self, row: JobRow) -> str:
        state = Items(self.wb.store).job(row.id)
        batches = max((s.batch or 0) for s in self.statuses) if self.statuses else 0
        counts = {k: sum(s.state == k for s in self.statuses) for k in STATE_COLORS}
        tally = " · ".join(f"{n} {k}" for k, n in counts.items() if n)
        if row.status.value == "in_progress" and state.phase is not None:
            since = (f" for {fmt.duration(time.time() - state.phase_started)}"
                     if state.phase_started else "")
            doing = {"stt": "transcribing", "llm": "evaluating"}.get(state.phase, state.phase)
            step = next((x.step for x in self.statuses if x.state == doing and x.step != doing), "")
            doing += f" ({step})" if step else ""
            now = f"<b>Now:</b> batch {(state.phase_batch or 0) + 1} of {batches} · {doing}{since}"
        else:
            now = f"<b>{html.escape(row.status.value.replace('_', ' '))}</b>"
        return (f"<div class='wb-phase-line'>{now} — {tally} "
                f"<span style='color:{fmt.MUTED}'>(batches of {state.batch_size})</span></div>")

    def _queue_table(self) -> str:
        rows = []
        for s in self.statuses:
            waiting = s.state in ("waiting", "transcribing", "transcribed", "evaluating")
            overall = (s.result or {}).get("overall") if s.result else None
            rows.append({
                "student": s.item_id, "file": s.file, "state": s.state,
                "batch": s.batch if s.batch is not None else "",
                "position": (f"{s.position_in_batch}/{s.batch_size}"
                             if s.position_in_batch is not None else ""),
                "in line": s.queue_position if s.queue_position is not None else "",
                "ETA": fmt.duration(s.eta_s) if waiting and s.eta_s is not None else "",
                "result": overall if overall is not None else short(s.reason or "", 60),
            })
        if not rows:
            return "<i>no recordings</i>"
        table = table_html(pd.DataFrame(rows), "wb-queue-table", {"state": _pill})
        return f"<div style='max-height:340px;overflow-y:auto'>{table}</div>"

    def _show_student(self) -> None:
        chosen = self.student.value
        s = next((x for x in self.statuses if x.item_id == chosen), None)
        if s is None:
            self.card.value = ""
            return
        overall_max = self.phased.spec.rubric.overall_max
        extra = ""
        if s.state == "done" and s.result:
            scores = ", ".join(f"{k} {v}" for k, v in (s.result.get("scores") or {}).items())
            extra = (f"<div style='font-size:12px;color:{fmt.MUTED}'>scores: "
                     f"{html.escape(scores)}</div>"
                     f"<div style='font-size:12px;color:{fmt.MUTED}'>transcript: "
                     f"{html.escape(short(s.result.get('transcript') or '', 200))}</div>")
        self.card.value = (f"<div class='wb-student' style='padding:4px 10px;overflow-wrap:anywhere;"
                           f"border-left:3px solid"
                           f" {STATE_COLORS.get(s.state) or fmt.BORDER}'>{_pill(s.state)} "
                           f"{html.escape(student_sentence(s, overall_max))}{extra}</div>")

    def preview_html(self, row: JobRow) -> str:
        df = self.phased.results()
        if df.empty:
            return frame_html(df, caption="no results yet")
        done = df[df["state"].isin(["done", "failed"])]
        keep = [c for c in done.columns if c in ("item_id", "batch", "overall", "feedback",
                                                 "error") or c.startswith("score_")]
        view = done[keep].tail(self.preview_rows).copy()
        for c in ("feedback", "error"):
            if c in view:
                view[c] = view[c].map(lambda v: short(v, 80) if isinstance(v, str) else "")
        return frame_html(view, caption=f"{len(done)} of {len(df)} recordings finished")
