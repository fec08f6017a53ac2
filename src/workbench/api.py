"""The Python front door: `wb = Workbench("data/wb")`, `wb.jobs()`, `wb.job(id)`.

The facade on top of the layers: it hands out the kinds' APIs (`wb.batch`, `wb.phased`,
`wb.grid`), the workers and the dashboard. The job handle `Job` lives in
`workbench.runtime.jobs` (below the kinds, which extend it); it is re-exported here and
from `workbench` because it is part of the public API.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from workbench.config import Limits, WorkerTiming, default_root
from workbench.runtime.jobs import Job, set_panel_hook
from workbench.runtime.worker import Worker, start_thread
from workbench.store import Store

if TYPE_CHECKING:
    from workbench.batch.api import BatchAPI
    from workbench.grid.api import GridAPI
    from workbench.phased.api import PhasedAPI


def _job_panel(job: Job) -> Any:
    """`Job.panel()`: the widgets sit above the handle, so the facade hands them to it."""
    from workbench.widgets import job_panel  # ipywidgets is the notebook extra: load on use

    return job_panel(job)


set_panel_hook(_job_panel)


class Workbench:
    """One root folder of jobs: `wb = Workbench("data/wb")`."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *,
                 limits: Limits | None = None, timing: WorkerTiming | None = None) -> None:
        self.timing = timing or WorkerTiming()
        self.store = Store(root if root is not None else default_root(), limits=limits,
                           stale_after_s=self.timing.stale_after_s)
        self._workers: list[Worker] = []

    @property
    def root(self) -> Path:
        return self.store.root

    def __repr__(self) -> str:
        return f"Workbench({str(self.root)!r})"

    # -- job kinds -----------------------------------------------------------------------
    @property
    def batch(self) -> BatchAPI:
        from workbench.batch.api import BatchAPI

        return BatchAPI(self)

    @property
    def phased(self) -> PhasedAPI:
        from workbench.phased.api import PhasedAPI

        return PhasedAPI(self)

    @property
    def grid(self) -> GridAPI:
        from workbench.grid.api import GridAPI

        return GridAPI(self)

    # -- jobs ----------------------------------------------------------------------------
    def job(self, job_id: str) -> Job:
        """The handle for a job, of its kind's class (BatchJob, PhasedJob, GridJob)."""
        kind = self.store.get(job_id).kind  # raises JobNotFound
        if kind in ("batch", "phased", "grid"):
            return getattr(self, kind).job(job_id)  # type: ignore[no-any-return]
        return Job(self, job_id)

    def jobs(self, kind: str | None = None, status: str | None = None, *,
             name: str | None = None, tag: str | None = None) -> pd.DataFrame:
        """Every job (oldest first) as a DataFrame; filter by kind, status, name or one tag."""
        rows = self.store.list_jobs(kind=kind, status=status, name=name, tag=tag)
        cols = ["id", "name", "tags", "kind", "status", "total", "completed", "failed",
                "progress", "message", "created_at", "finished_at"]
        df = pd.DataFrame([{c: getattr(r, c) for c in cols} for r in rows], columns=cols)
        for c in ("created_at", "finished_at"):
            df[c] = pd.to_datetime(df[c], unit="s")
        return df

    def purge(self, older_than_days: float | None = None) -> list[str]:
        return self.store.purge(older_than_days)

    def queue(self) -> dict[str, int]:
        lim = self.store.limits
        return {**self.store.queue_usage(), "max_queued_jobs": lim.max_queued_jobs,
                "max_queued_requests": lim.max_queued_requests,
                "max_requests_per_job": lim.max_requests_per_job}

    def dashboard(self, **kw: Any) -> Any:
        """Every job of this root, live (ipywidgets), with Cancel/Resume on each row.

        Options: `kind=`, `name=`, `tag=`, `filter=` (the filter box's text), `limit=`
        (newest rows drawn, default 25), `interval=` (refresh seconds; None = manual
        `refresh()`). Calling it again after a kernel restart re-attaches to the same
        jobs. See `workbench.widgets.Dashboard`.
        """
        from workbench.widgets import Dashboard

        return Dashboard(self, **kw)

    # -- workers -------------------------------------------------------------------------
    def start_worker(self, *, detached: bool = False, kinds: list[str] | None = None,
                     log_path: str | os.PathLike[str] | None = None) -> Worker | subprocess.Popen[bytes]:
        """A worker thread in this kernel, or (detached=True) a process that outlives it."""
        if detached:
            log = Path(log_path or self.root / "worker.log")
            cmd = [sys.executable, "-m", "workbench.cli", "--root", str(self.root), "worker"]
            with open(log, "ab") as fh:
                return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        w = start_thread(self.store, kinds=kinds, timing=self.timing)
        self._workers.append(w)
        return w

    def stop_workers(self, timeout: float = 30) -> None:
        for w in self._workers:
            w.stop()
        for w in self._workers:
            w.thread.join(timeout)  # type: ignore[attr-defined]
        self._workers.clear()
