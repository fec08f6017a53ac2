"""The job handle: `Job`, what every kind's handle (BatchJob, PhasedJob, GridJob) extends.

It sits in the runtime, below the kinds, so a kind can extend it without importing the
`Workbench` facade that sits above them. What a handle needs of its workbench is only the
store (`Bench`, which `Workbench` satisfies). `panel()` draws a widget, and the widgets
sit above the kinds: the handle cannot import them, so it calls a hook that the layer
that knows both installs (`workbench.api` sets `set_panel_hook(widgets.job_panel)`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from workbench.errors import WorkbenchError
from workbench.runtime import registry
from workbench.runtime.context import RETRY_FINAL, SUPERSEDED, failure_class
from workbench.runtime.progress import eta_now
from workbench.store import JobRow, ResultLog, Status, Store
from workbench.store.status import FINISHED, RESUMABLE, RETRYABLE, RUNNING, held


class Bench(Protocol):
    """What handles and kind APIs need of a workbench: its store (and the store's root)."""

    @property
    def store(self) -> Store: ...

    @property
    def root(self) -> Path: ...


class JobFailed(WorkbenchError):
    pass


class _StderrNow:
    """Whatever `sys.stderr` is at each write: a bar made before a job's output is routed
    (`runtime.quiet`) keeps reaching the terminal, not the job's log."""

    def write(self, s: str) -> int:
        import sys

        return sys.stderr.write(s)

    def flush(self) -> None:
        import sys

        sys.stderr.flush()


#: an interrupted job nobody took up for this long ends `wait()` (a running worker
#: claims one within its poll interval, 0.5 s by default)
WAIT_GRACE_S = 2.0

MAX_NAME = 200
MAX_TAG = 64


def job_labels(name: str | None = None,
               tags: str | Iterable[str] | None = None) -> dict[str, Any]:
    """`name=` and `tags=` of any kind's submit, checked: the keywords for `create_job`.

    A name is free text (one line, up to 200 characters); tags are short labels (one
    string or several, up to 64 characters each, duplicates dropped). Both are shown on
    the dashboard and filter `wb.jobs(name=..., tag=...)`.
    """
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        name = " ".join(name.split())
        if len(name) > MAX_NAME:
            raise ValueError(f"name is {len(name)} characters long; at most {MAX_NAME}")
    if tags is None:
        tags = []
    elif isinstance(tags, str):
        tags = [tags]
    out: list[str] = []
    for t in tags:
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"each tag must be a non-empty string, got {t!r}")
        t = t.strip()
        if len(t) > MAX_TAG:
            raise ValueError(f"tag {t[:20]!r}… is {len(t)} characters long; at most {MAX_TAG}")
        if t not in out:
            out.append(t)
    return {"name": name, "tags": out}


_panel_hook: Callable[[Job], Any] | None = None


def set_panel_hook(hook: Callable[[Job], Any]) -> None:
    """Install what `Job.panel()` calls: the widgets' `job_panel`, via the facade."""
    global _panel_hook
    _panel_hook = hook


class Job:
    """A handle on one job in the store. Cheap: every property reads the store afresh."""

    def __init__(self, wb: Bench, job_id: str) -> None:
        self.wb = wb
        self.id = job_id

    def __repr__(self) -> str:
        r = self.info
        label = f" {r.name!r}" if r.name else ""
        return (f"<Job {r.id}{label} {r.kind} {r.status.value} {r.completed + r.failed}/{r.total}"
                f" {r.progress:.0f}% — {r.message}>")

    @property
    def info(self) -> JobRow:
        return self.wb.store.get(self.id)

    @property
    def status(self) -> str:
        return self.info.status.value

    @property
    def name(self) -> str | None:
        """The label given at submit (`name=`), or None."""
        return self.info.name

    @property
    def tags(self) -> list[str]:
        return self.info.tags

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
        """Block until the job finishes (progress bar in notebooks and terminals).

        Also returns on a job `interrupted` because its backend stayed unreachable or its
        disk is full (it waits for `resume()` or for space, not for a worker), and on one
        whose worker died that no worker took up within `WAIT_GRACE_S` (no worker is
        running: `wb.start_worker()` or `job.resume()`, then wait again). Its message says
        which and why.
        """
        from tqdm.auto import tqdm

        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                r = self.info
                if progress:
                    if bar is None:
                        bar = tqdm(total=100, desc=self.id, unit="%", file=_StderrNow(),
                                   bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")
                    bar.n = r.progress
                    eta = eta_now(r.metrics) if r.status in RUNNING else None
                    when = f" · ETA {eta:.0f} s" if eta is not None and r.done < r.total else ""
                    bar.set_postfix_str(f"{r.status.value}: {r.message}"[:80] + when,
                                        refresh=True)
                if r.status in FINISHED or held(r.status, r.error):
                    return self
                if r.status is Status.INTERRUPTED and time.time() - r.updated_at >= WAIT_GRACE_S:
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

    @property
    def superseded_path(self) -> Path:
        """Error lines replaced by a later attempt (audit trail; not results)."""
        return self.dir / SUPERSEDED

    def resume(self) -> Job:
        """Put an interrupted, failed or cancelled job back in the queue; finished work stays.

        Requests whose only line is a *transient* error (connection refused, timeout,
        5xx...) are sent again; successes and final errors are kept as they are. A
        completed job is re-run with `retry_failed()`.
        """
        r = self.info
        if r.status not in RESUMABLE:
            self.wb.store.transition(self.id, Status.QUEUED)  # raises with the reason
        n = self.failure_counts()["transient"]
        again = f"; re-sending {n} requests that failed transiently" if n else ""
        self.wb.store.transition(self.id, Status.QUEUED, message="resumed" + again)
        return self

    def retry_failed(self, final: bool = False) -> Job:
        """Send the failed requests of a finished job again (a completed one included).

        Transient failures only by default; `final=True` also re-sends final ones (a 401
        after the key was fixed, a 404 after the model was loaded): a final error comes
        back the same unless something changed. The replaced error lines move to
        `errors.superseded.jsonl`; the files keep one line per custom_id. With nothing
        to re-send the job stays as it is.
        """
        r = self.info
        counts = self.failure_counts()
        n = counts["transient"] + (counts["final"] if final else 0)
        if r.status not in RETRYABLE:
            self.wb.store.transition(self.id, Status.QUEUED, retry_failed=True)  # raises
        if n == 0 and r.status is Status.COMPLETED:
            return self
        fields: dict[str, Any] = {"message": f"retrying {n} failed requests"}
        if final:
            fields["metrics"] = {**r.metrics, RETRY_FINAL: True}
        self.wb.store.transition(self.id, Status.QUEUED, retry_failed=True, **fields)
        return self

    def failure_counts(self) -> dict[str, int]:
        """Error lines by class ('transient' / 'final'), read from the error file."""
        counts = {"transient": 0, "final": 0}
        for rec in ResultLog(self.errors_path).records():
            kind = failure_class(rec)
            if kind is not None:
                counts[kind] += 1
        return counts

    def results(self) -> pd.DataFrame:
        """The job's results as a DataFrame; works while it runs (what is there so far)."""
        kind = registry.get(self.info.kind)
        if kind.results is None:
            rows = [*ResultLog(self.output_path).records(), *ResultLog(self.errors_path).records()]
            return pd.DataFrame(rows)
        return kind.results(self.wb.store, self.info)

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
        """The live ipywidgets panel of this job (`workbench.widgets.job_panel`)."""
        if _panel_hook is None:
            raise RuntimeError("no panel hook installed: `import workbench` installs the"
                               " widgets' job_panel (needs the notebook extra, ipywidgets)")
        return _panel_hook(self)
