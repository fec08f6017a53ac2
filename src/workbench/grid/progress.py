"""A grid's progress, in the seed's bands and never backwards.

0–5 % init, 5–10 % validation, 10–90 % the work, 90–100 % finalize. Realtime cells move
the work band by cells done, and the message names the cells running now ("Processing
combinations: 3/8 done; running a.mp4 × Summarise the…"); with local models (which take
the device in turn, `grid.local`) it moves by calls answered, and the message says which
model holds the device. A resumed job starts from the percent it stood at (the highest
reported so far is kept), and once a cancel is asked for every message says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.grid.spec import call_id, judge_call_id
from workbench.store import Status

if TYPE_CHECKING:
    from workbench.engines.gemini import GeminiEngine
    from workbench.grid.spec import GridSpec, MediaRef, PromptRef
    from workbench.grid.tables import CallRow
    from workbench.runtime.context import JobContext


class GridProgress:
    """Mixed into GridRunner: counters and progress from its rows and finished cells."""

    ctx: JobContext
    spec: GridSpec
    total: int
    rows: dict[str, CallRow]
    done_cells: set[str]
    cell_status: dict[str, str]
    running: dict[str, None]
    media: dict[str, MediaRef]
    prompts: dict[str, PromptRef]
    gemini: GeminiEngine | None
    in_flight: int
    high: float
    stage: str

    def recount(self) -> None:
        """Counters from each cell's latest record: a cell re-run after an error counts once."""
        self.ctx.completed = sum(1 for s in self.cell_status.values() if s == "ok")
        self.ctx.failed = sum(1 for s in self.cell_status.values() if s != "ok")

    def cell_name(self, cell_id: str) -> str:
        c = next(c for c in self.spec.cells if c.id == cell_id)
        return f"{self.media[c.media].name} × {self.prompts[c.prompt].name}"

    def cell_progress(self) -> None:
        """Realtime cells: 10–90 % by cells done; the message names the cells running now."""
        done = len(self.done_cells)
        ok = sum(1 for r in self.rows.values() if r.ok)
        running = list(self.running)
        now = ""
        if running:
            more = f" (+{len(running) - 1} more)" if len(running) > 1 else ""
            now = f"; running {self.cell_name(running[-1])}{more}"
        self.progress(f"Processing combinations: {done}/{self.total} done{now}",
                      10.0 + 80.0 * done / max(1, self.total), force=done in (0, self.total),
                      cells_done=done, calls_ok=ok, calls_failed=len(self.rows) - ok,
                      in_flight=self.in_flight)

    def percent_now(self) -> float:
        """10–90 % by calls recorded (local phases finish cells only at the end)."""
        per_cell = len(self.spec.models) + (1 if self.spec.judge is not None else 0)
        done = sum(1 for c in self.spec.cells
                   for cid in [call_id(c.id, m.label) for m in self.spec.models]
                   + ([judge_call_id(c.id)] if self.spec.judge is not None else [])
                   if cid in self.rows or c.id in self.done_cells)
        return 10.0 + 80.0 * done / max(1, per_cell * self.total)

    def call_progress(self, force: bool = False) -> None:
        done = len(self.done_cells)
        ok = sum(1 for r in self.rows.values() if r.ok)
        stage = f"{self.stage}: " if self.stage else ""
        self.progress(f"{stage}{len(self.rows)} calls answered, {done}/{self.total}"
                      " combinations done", self.percent_now(), force=force, cells_done=done,
                      calls_ok=ok, calls_failed=len(self.rows) - ok, in_flight=self.in_flight)

    def progress(self, message: str, percent: float, force: bool = True, **metrics: Any) -> None:
        """Never backwards (a resume starts where it stood), and a cancel stays said."""
        if self.gemini is not None:
            metrics.update(uploads=self.gemini.stats["uploads"],
                           reused_files=self.gemini.stats["reused_files"],
                           retries=self.gemini.stats["retries"])
        self.high = max(self.high, percent)
        if not self.ctx.cancel_requested.is_set() \
                and self.ctx.store.get(self.ctx.id).status is Status.CANCELLING:
            self.ctx.cancel_requested.set()  # asked before the next heartbeat says so
        if self.ctx.cancel_requested.is_set():
            message = f"cancelling: finishing the calls on the wire ({message})"
        self.ctx.progress(message, percent=round(self.high, 2), force=force, **metrics)

