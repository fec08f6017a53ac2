"""What a runner sees of its job: spec, files, checkpoint, counters, cancel flag.

The runner calls `record()` for every finished unit. The record goes to the output (or
error) file and is flushed first; counters in the database follow, batched to at most a
few writes a second so the store never slows the engine. On resume the counters are
recomputed from the files, which are the truth. Every counter update also publishes the
job's smoothed pace (rate, tokens/s, ETA: `runtime.progress`), the one set of numbers
every widget shows; a metric the runner publishes itself (e.g. a phased job's ETA) wins.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.runtime.progress import PACE_KEYS, Pace
from workbench.store import JobRow, ResultLog, Store

log = logging.getLogger("workbench.context")


class JobContext:
    def __init__(self, store: Store, job: JobRow, worker: str, flush_every_s: float = 0.5) -> None:
        self.store = store
        self.job = job
        self.worker = worker
        self.dir: Path = store.job_dir(job.id)
        self.output = ResultLog(self.dir / "output.jsonl")
        self.errors = ResultLog(self.dir / "errors.jsonl")
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()
        self._flush_every_s = flush_every_s
        self._last_flush = 0.0
        self._lock = threading.Lock()
        self.output.repair()
        self.errors.repair()
        self.completed = self.output.count()
        self.failed = self.errors.count()
        # the previous run's pace is not this run's: it is measured afresh
        self.metrics: dict[str, Any] = {k: v for k, v in job.metrics.items()
                                        if k not in PACE_KEYS}
        self.message = job.message
        #: generated tokens so far in this run (runners pass them to `record`)
        self.tokens = 0
        self.pace = Pace(job.total, self.completed + self.failed)
        #: a kind that knows its ETA better than a rate does (a phased job's queue model)
        #: sets this; its answer is published instead of the pace's ETA
        self.eta_source: Callable[[], float | None] | None = None
        #: explicit progress (0-100) for kinds whose phases are not a count of units
        self.percent: float | None = None

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def spec(self) -> dict[str, Any]:
        return self.job.spec

    @property
    def total(self) -> int:
        return self.job.total

    def done_ids(self) -> set[str]:
        """custom_ids already written (output or error): resume sends only the rest."""
        return self.output.ids() | self.errors.ids()

    def should_stop(self) -> bool:
        return self.cancel_requested.is_set() or self.lease_lost.is_set()

    def buffer_results(self) -> None:
        """Hold result lines in the file buffer until the next counter update.

        For high-rate runners (batch): `flush()` writes the files out before it moves
        the counters, so invariant 1 still holds; a crash loses only uncounted lines,
        which resume sends again.
        """
        self.output.autoflush = self.errors.autoflush = False

    def record(self, record: dict[str, Any], *, error: bool = False, tokens: int = 0) -> None:
        """Append one unit's result (flushed), then move the counters."""
        with self._lock:
            (self.errors if error else self.output).append(record)
            self.tokens += tokens
            if error:
                self.failed += 1
            else:
                self.completed += 1
        self.flush(force=False)

    def set_total(self, total: int) -> None:
        self.job = self.job.model_copy(update={"total": total})
        self.store.update(self.id, total=total)

    def progress(self, message: str | None = None, *, percent: float | None = None,
                 force: bool = True, **metrics: Any) -> None:
        if message is not None:
            self.message = message
        if percent is not None:
            self.percent = percent
        self.metrics.update(metrics)
        self.flush(force=force)

    def fraction(self) -> float:
        return (self.completed + self.failed) / self.total if self.total else 0.0

    def due(self) -> bool:
        """Whether a counter update is due (lets a runner skip building progress data)."""
        return time.monotonic() - self._last_flush >= self._flush_every_s

    def flush(self, force: bool = True) -> None:
        """Result files out to the OS first, then the counters (invariant 1)."""
        now = time.monotonic()
        if not force and now - self._last_flush < self._flush_every_s:
            return
        self._last_flush = now
        with self._lock:
            self.output.flush()
            self.errors.flush()
            self.pace.observe(self.completed + self.failed, total=self.total,
                              tokens=self.tokens or None)
            metrics = {**self.pace.metrics(), **self.metrics}
            if self.eta_source is not None:
                try:
                    eta = self.eta_source()
                except Exception:  # an estimate must never stop the counters
                    log.debug("eta_source failed for %s", self.id, exc_info=True)
                else:
                    metrics.update(eta_s=None if eta is None else round(eta, 1),
                                   eta_at=round(time.time(), 3))
            fields = dict(completed=self.completed, failed=self.failed,
                          progress=round(self.percent if self.percent is not None
                                         else 100 * self.fraction(), 2), message=self.message,
                          metrics=metrics)
        self.store.update(self.id, **fields)

    def close(self) -> None:
        self.output.close()
        self.errors.close()
        self.flush(force=True)
