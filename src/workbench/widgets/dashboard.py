"""`wb.dashboard()`: every job of a store, live, with Cancel and Resume on each row.

The dashboard reads the store only; it never needs the worker to be in this kernel. A
worker thread (`wb.start_worker()`) and a detached worker process look the same here,
which is what lets an analyst restart the kernel and find the job still moving, and
`wb.dashboard()` again re-attaches. Jobs can be narrowed to a kind, a name, a tag, or
whatever is typed in the filter box (matched against name, tags, id and kind). A saved
notebook keeps a static snapshot of it (`widgets.snapshot`).
"""

from __future__ import annotations

import html
import threading
import time
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from workbench.store import JobRow
from workbench.store.status import FINISHED, RUNNING, WAITING
from workbench.widgets import format as fmt
from workbench.widgets.job_view import JobView
from workbench.widgets.refresher import LiveWidget, Refresher, wait_for_job, wait_for_job_async
from workbench.widgets.snapshot import static_html

if TYPE_CHECKING:
    from workbench.runtime.jobs import Bench, Job


class Dashboard(LiveWidget):
    """All jobs (newest first), refreshed every `interval` s by a background thread.

    `limit` caps how many rows are drawn (the newest ones; the header says how many are
    hidden) so a store with thousands of old jobs still renders quickly. `interval=None`
    turns the background refresh off; call `refresh()` yourself then.
    """

    def __init__(self, wb: Bench, *, kind: str | None = None, limit: int | None = 25,
                 interval: float | None = 1.0, name: str | None = None,
                 tag: str | None = None, filter: str = "") -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"dashboard limit must be >= 1 or None, got {limit}")
        self.wb = wb
        self.kind = kind
        self.name = name
        self.tag = tag
        self.limit = limit
        self.views: dict[str, JobView] = {}
        self.header = w.HTML(layout=w.Layout(flex="1 1 auto", min_width="0"))
        self.filter = w.Text(value=filter, placeholder="filter: name, tag, id or kind",
                             continuous_update=True, layout=w.Layout(width="230px",
                                                                     flex="0 0 auto"))
        self.filter.add_class("wb-filter")
        self.empty = w.HTML("<i>No jobs yet: submit one and it appears here.</i>")
        self.rows = w.VBox(layout=w.Layout(width="100%"))
        self.top = w.HBox([self.header, self.filter],
                          layout=w.Layout(align_items="center", flex_flow="row wrap",
                                          width="100%", grid_gap="4px 12px"))
        self.widget = w.VBox([self.top, self.rows], layout=w.Layout(width="100%"))
        self.widget.add_class("wb-dashboard")
        self.refresher: Refresher | None = None
        self._lock = threading.RLock()
        self._statuses: dict[str, str] = {}
        self.enable_snapshot("dashboard", "wb.dashboard()")
        self.filter.observe(lambda _c: self.refresh(), "value")
        self.refresh()
        if interval is not None:
            # idle = nothing shown is moving; a job submitted meanwhile (by any process)
            # still appears within 2 intervals, not the refresher's default 5
            self.refresher = Refresher(self.refresh, interval=interval, idle_interval=2 * interval,
                                       name=f"workbench-dashboard-{wb.root.name}",
                                       on_exit=wb.store.close).start()

    # -- reading ---------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Re-read the store; returns True while some shown job is waiting or running.

        Called by the refresher thread and by clicks on the main thread, hence the lock.
        """
        with self._lock:
            return self._refresh()

    def _refresh(self) -> bool:
        rows = [r for r in self.wb.store.list_jobs(kind=self.kind, name=self.name, tag=self.tag)
                if self._matches(r)]
        shown = list(reversed(rows))[: self.limit] if self.limit else list(reversed(rows))
        for r in shown:
            view = self.views.get(r.id)
            if view is None:
                self.views[r.id] = JobView(self.wb, r.id, on_change=self.poke)
            else:
                view.refresh(r)
        order = tuple(self.views[r.id].widget for r in shown) or (self.empty,)
        if tuple(self.rows.children) != order:
            self.rows.children = order
        for gone in set(self.views) - {r.id for r in shown}:
            del self.views[gone]
        self.header.value = self._header(rows, shown)
        statuses = {r.id: r.status.value for r in shown}
        changed, self._statuses = statuses != self._statuses, statuses
        self.refreshed(changed=changed)
        return any(r.status in WAITING | RUNNING for r in shown)

    def _matches(self, row: JobRow) -> bool:
        """The filter box: every word must appear in the job's name, tags, id or kind."""
        words = self.filter.value.lower().split()
        if not words:
            return True
        hay = " ".join([row.name or "", *row.tags, row.id, row.kind]).lower()
        return all(word in hay for word in words)

    def summary(self) -> str:
        return (f"workbench dashboard of {self.wb.root}: {len(self.views)} jobs shown "
                "(a live widget; run wb.dashboard() to re-attach)")

    def snapshot_html(self) -> str:
        return static_html(self.widget)

    def _header(self, rows: list[JobRow], shown: list[JobRow]) -> str:
        running = sum(r.status in RUNNING for r in rows)
        waiting = sum(r.status in WAITING for r in rows)
        finished = sum(r.status in FINISHED for r in rows)
        hidden = len(rows) - len(shown)
        scopes = [f"{k} {html.escape(v)}" for k, v in (("kind", self.kind), ("name", self.name),
                                                       ("tag", self.tag)) if v]
        if self.filter.value.strip():
            scopes.append(f"filter “{html.escape(self.filter.value.strip())}”")
        scope = "".join(f" · {x}" for x in scopes)
        more = f" · {hidden} older not shown" if hidden else ""
        return (f"<div class='wb-dashboard-header' style='color:{fmt.TEXT};overflow-wrap:anywhere'>"
                f"<b>workbench</b> "
                f"<code style='background:transparent;color:{fmt.MUTED}'>"
                f"{html.escape(str(self.wb.root))}</code>{scope} — "
                f"{running} running · {waiting} waiting · {finished} finished{more}"
                f" <span style='color:{fmt.MUTED}'>(updated {time.strftime('%H:%M:%S')})"
                f"</span></div>")

    def view(self, job: Job | str) -> JobView:
        """The row of one job (by handle or id), for tests and for scripting clicks."""
        job_id = _id(job)
        try:
            return self.views[job_id]
        except KeyError:
            raise KeyError(f"job {job_id!r} is not on this dashboard "
                           f"(shown: {sorted(self.views)})") from None

    @property
    def job_ids(self) -> list[str]:
        """Ids in display order (newest first)."""
        by_widget = {id(v.widget): k for k, v in self.views.items()}
        return [by_widget[id(c)] for c in self.rows.children if id(c) in by_widget]

    # -- waiting and lifecycle -------------------------------------------------------------
    def wait(self, job: Job | str, timeout: float | None = None) -> JobRow:
        """Block until the job finishes; returns its final row (TimeoutError after `timeout`).

        Clicks on the dashboard are queued by the kernel until this returns; in a notebook
        prefer `await dash.wait_async(job)`, which keeps the buttons working.
        """
        row = wait_for_job(self.wb.store, _id(job), timeout)
        self.refresh()
        return row

    async def wait_async(self, job: Job | str, timeout: float | None = None) -> JobRow:
        """`await` the job's end in a notebook cell; Cancel/Resume clicks work meanwhile."""
        row = await wait_for_job_async(self.wb.store, _id(job), timeout)
        self.refresh()
        return row

    def parts(self) -> list[Any]:
        return list(self.views.values())


def _id(job: Job | str) -> str:
    return job if isinstance(job, str) else job.id
