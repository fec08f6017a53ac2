"""The Python front door: `wb = Workbench("data/wb")`, `wb.jobs()`, `wb.job(id)`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from workbench.config import Limits, WorkerTiming, default_root
from workbench.errors import WorkbenchError
from workbench.runtime import registry
from workbench.runtime.worker import Worker, start_thread
from workbench.store import JobRow, Status, Store
from workbench.store.status import FINISHED, RESUMABLE

if TYPE_CHECKING:
    from workbench.batch.api import BatchAPI
    from workbench.grid.api import GridAPI
    from workbench.phased.api import PhasedAPI


class JobFailed(WorkbenchError):
    pass


class Job:
    """A handle on one job in the store. Cheap: every property reads the store afresh."""

    def __init__(self, wb: Workbench, job_id: str) -> None:
        self.wb = wb
        self.id = job_id

    def __repr__(self) -> str:
        r = self.info
        return (f"<Job {r.id} {r.kind} {r.status.value} {r.completed + r.failed}/{r.total}"
                f" {r.progress:.0f}% — {r.message}>")

    @property
    def info(self) -> JobRow:
        return self.wb.store.get(self.id)

    @property
    def status(self) -> str:
        return self.info.status.value

    @property
    def progress(self) -> float:
        return self.info.progress

    @property
    def dir(self) -> Path:
        return self.wb.store.job_dir(self.id)

    @property
    def output_path(self) -> Path:
        return self.dir / "output.jsonl"

    @property
    def errors_path(self) -> Path:
        return self.dir / "errors.jsonl"

    def wait(self, timeout: float | None = None, progress: bool = True,
             poll_s: float = 0.5) -> Job:
        """Block until the job finishes (progress bar in notebooks and terminals)."""
        from tqdm.auto import tqdm

        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                r = self.info
                if progress:
                    if bar is None:
                        bar = tqdm(total=100, desc=self.id, unit="%",
                                   bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")
                    bar.n = r.progress
                    bar.set_postfix_str(f"{r.status.value}: {r.message}"[:80], refresh=True)
                if r.status in FINISHED:
                    return self
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id} still {r.status.value} after {timeout} s")
                time.sleep(poll_s)
        finally:
            if bar is not None:
                bar.close()

    def cancel(self) -> Job:
        """Queued jobs are cancelled at once; running ones within one unit of work."""
        r = self.info
        if r.status in (Status.QUEUED, Status.VALIDATING, Status.INTERRUPTED):
            self.wb.store.transition(self.id, Status.CANCELLED, message="cancelled before it ran")
        elif r.status is Status.IN_PROGRESS:
            self.wb.store.transition(self.id, Status.CANCELLING, message="cancelling")
        elif r.status is not Status.CANCELLING:
            self.wb.store.transition(self.id, Status.CANCELLED)  # raises: illegal move
        return self

    def resume(self) -> Job:
        """Put an interrupted, failed or cancelled job back in the queue; finished work stays."""
        r = self.info
        if r.status not in RESUMABLE:
            self.wb.store.transition(self.id, Status.QUEUED)  # raises with the reason
        self.wb.store.transition(self.id, Status.QUEUED, message="resumed")
        return self

    def results(self) -> pd.DataFrame:
        """The job's results as a DataFrame; works while it runs (what is there so far)."""
        kind = registry.get(self.info.kind)
        if kind.results is None:
            rows = [*self._records(self.output_path), *self._records(self.errors_path)]
            return pd.DataFrame(rows)
        return kind.results(self.wb.store, self.info)

    @staticmethod
    def _records(path: Path) -> list[dict[str, Any]]:
        from workbench.store import ResultLog

        return list(ResultLog(path).records())

    def download(self, path: str | os.PathLike[str], errors: bool = True) -> Path:
        """Copy output (and error) lines into one JSONL file at `path`."""
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as out:
            for src in [self.output_path] + ([self.errors_path] if errors else []):
                if src.exists():
                    with open(src, "rb") as f:
                        shutil.copyfileobj(f, out)
        return dest

    def panel(self) -> Any:
        from workbench.widgets import job_panel

        return job_panel(self)


class Workbench:
    """One root folder of jobs: `wb = Workbench("data/wb")`."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *,
                 limits: Limits | None = None, timing: WorkerTiming | None = None) -> None:
        self.store = Store(root if root is not None else default_root(), limits=limits)
        self.timing = timing or WorkerTiming()
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

    def jobs(self, kind: str | None = None, status: str | None = None) -> pd.DataFrame:
        rows = self.store.list_jobs(kind=kind, status=status)
        cols = ["id", "kind", "status", "total", "completed", "failed", "progress", "message",
                "created_at", "finished_at"]
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

        Options: `kind=`, `limit=` (newest rows drawn, default 25), `interval=` (refresh
        seconds; None = manual `refresh()`). See `workbench.widgets.Dashboard`.
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
