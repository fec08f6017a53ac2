"""What a runner sees of its job: spec, files, checkpoint, counters, cancel flag.

The runner calls `record()` for every finished unit. The record goes to the output (or
error) file and is flushed first; counters in the database follow, batched to at most a
few writes a second so the store never slows the engine. A flusher thread writes them
out on a timer too (every `flush_every_s`), so answered results never wait for the next
one to arrive (an engine paused on an outage, a slow last request). On resume the
counters are recomputed from the files, which are the truth. Every counter update also
publishes the job's smoothed pace (rate, tokens/s, ETA: `runtime.progress`), the one set of
numbers every widget shows; a metric the runner publishes itself (e.g. a phased job's ETA)
wins.

Re-sending failures: when the job starts, error lines of class *transient* (connection
refused, timeout, 5xx..., `engines.failures`) move from `errors.jsonl` to
`errors.superseded.jsonl` (an audit trail), so `done_ids()` no longer holds them and the
runner sends them again; a `retry_failed(final=True)` moves the *final* ones too. Lines
without a class (kinds that write their own records) are never moved. Output and error
files keep exactly one line per custom_id at every moment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.errors import DiskFull
from workbench.runtime.progress import PACE_KEYS, Pace
from workbench.store import JobRow, ResultLog, Store, disk

log = logging.getLogger("workbench.context")

SUPERSEDED = "errors.superseded.jsonl"
#: metrics key `Job.retry_failed(final=True)` sets: this run re-sends final failures too
RETRY_FINAL = "retry_final"


def failure_class(record: dict[str, Any]) -> str | None:
    """'transient' / 'final' from an error line's `error.workbench.class`, else None."""
    err = record.get("error")
    extra = err.get("workbench") if isinstance(err, dict) else None
    kind = extra.get("class") if isinstance(extra, dict) else None
    return kind if kind in ("transient", "final") else None


def failure_message(record: dict[str, Any]) -> str:
    err = record.get("error")
    return str(err.get("message") or "") if isinstance(err, dict) else ""


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
        #: set when the store's disk fell below the floor or a write found it full: the
        #: runner stops as on a cancel, the worker pauses the job (`store.disk`)
        self.disk_full: DiskFull | None = None
        self._flush_every_s = flush_every_s
        self._last_flush = 0.0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._dirty = False
        self.output.repair()
        self.errors.repair()
        # the previous run's pace is not this run's: it is measured afresh
        self.metrics: dict[str, Any] = {k: v for k, v in job.metrics.items()
                                        if k not in PACE_KEYS}
        retry_final = bool(self.metrics.pop(RETRY_FINAL, False))
        retry = {"transient"} | ({"final"} if retry_final else set())
        #: error lines moved to the audit file this run, to be sent again
        self.superseded = self.errors.supersede(lambda r: failure_class(r) in retry,
                                                self.dir / SUPERSEDED)
        self.completed = self.output.count()
        self.failures: Counter[str] = Counter()
        self.failed = 0
        for r in self.errors.records():
            self.failed += 1
            kind = failure_class(r)
            if kind is not None:
                self.failures[kind] += 1
        self.message = job.message
        #: generated tokens so far in this run (runners pass them to `record`)
        self.tokens = 0
        self.pace = Pace(job.total, self.completed + self.failed)
        #: a kind that knows its ETA better than a rate does (a phased job's queue model)
        #: sets this; its answer is published instead of the pace's ETA
        self.eta_source: Callable[[], float | None] | None = None
        #: explicit progress (0-100) for kinds whose phases are not a count of units
        self.percent: float | None = None
        self._closing = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                         name=f"flush-{job.id}")
        self._flusher.start()
        if self.superseded or retry_final:  # counters and the spent retry flag, at once
            self.flush()

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
        return (self.cancel_requested.is_set() or self.lease_lost.is_set()
                or self.disk_full is not None)

    def note_disk_full(self) -> None:
        """Stop the run: the disk is full (or below the floor). Idempotent."""
        if self.disk_full is None:
            self.disk_full = disk.disk_full(self.store.root)
            log.warning("job %s: %s", self.id, self.disk_full)

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
            try:
                (self.errors if error else self.output).append(record)
            except OSError as e:  # a full disk: the line was not written, nor counted
                if not disk.is_disk_full(e):
                    raise
                self.note_disk_full()
                return
            self.tokens += tokens
            if error:
                self.failed += 1
                kind = failure_class(record)
                if kind is not None:
                    self.failures[kind] += 1
            else:
                self.completed += 1
            self._dirty = True
        self.flush(force=False)

    def set_total(self, total: int) -> None:
        self.job = self.job.model_copy(update={"total": total})
        self.store.update(self.id, total=total)

    def progress(self, message: str | None = None, *, percent: float | None = None,
                 force: bool = True, **metrics: Any) -> None:
        with self._lock:
            if message is not None:
                self.message = message
            if percent is not None:
                self.percent = percent
            self.metrics.update(metrics)
            self._dirty = True
        self.flush(force=force)

    def fraction(self) -> float:
        return (self.completed + self.failed) / self.total if self.total else 0.0

    def due(self) -> bool:
        """Whether a counter update is due (lets a runner skip building progress data)."""
        return time.monotonic() - self._last_flush >= self._flush_every_s

    def flush(self, force: bool = True) -> None:
        """Result files out to the OS first, then the counters (invariant 1).

        A full disk (or one below the floor) stops the run instead of raising: nothing
        more is written, the counters stay where the files are, the worker pauses the job.
        """
        with self._flush_lock:
            if self.disk_full is not None:
                return
            try:
                flushed = self._flush(force)
            except Exception as e:
                if not disk.is_disk_full(e):
                    raise
                self.note_disk_full()
                return
            if flushed and disk.below_floor(self.store.root):
                self.note_disk_full()

    def _flush(self, force: bool) -> bool:
        """One flush; False when skipped (not due)."""
        now = time.monotonic()
        if not force and now - self._last_flush < self._flush_every_s:
            return False
        self._last_flush = now
        with self._lock:
            self.output.flush()
            self.errors.flush()
            if self.failures or "failures" in self.metrics:  # recomputed, never stale
                self.metrics["failures"] = {"transient": self.failures["transient"],
                                            "final": self.failures["final"]}
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
                                         else 100 * self.fraction(), 2),
                          message=self.message, metrics=metrics)
            self._dirty = False
        self.store.update(self.id, **fields)
        return True

    def _flush_loop(self) -> None:
        """Counters out within `flush_every_s` of a result, even if no other follows."""
        while not self._closing.wait(self._flush_every_s):
            if not self._dirty:
                continue
            try:
                self.flush(force=False)
            except Exception:  # database busy beyond its timeout: the next tick retries
                log.warning("flush of %s failed", self.id, exc_info=True)

    # -- how it ended -------------------------------------------------------------------
    def all_failed(self) -> bool:
        """Every request of the job has a classified error line and none succeeded."""
        return (self.total > 0 and self.completed == 0 and self.failed >= self.total
                and sum(self.failures.values()) > 0)

    def common_failure(self) -> str:
        """The most frequent error message (the reason a job that failed whole gives)."""
        seen: Counter[str] = Counter()
        for r in self.errors.records():
            if len(seen) < 1000 or failure_message(r) in seen:
                seen[failure_message(r)] += 1
        return seen.most_common(1)[0][0] if seen else ""

    def summary(self) -> str:
        """'completed 45, failed 5 (3 transient, 2 final)' and what to do about them."""
        text = f"completed {self.completed}, failed {self.failed}"
        if self.failures:
            parts = [f"{self.failures[k]} {k}" for k in ("transient", "final") if self.failures[k]]
            text += f" ({', '.join(parts)})"
            if self.failures["transient"]:
                text += (f"; job.retry_failed() re-sends the {self.failures['transient']}"
                         " transient failures")
        return text

    def close(self) -> None:
        self._closing.set()
        if self._flusher.is_alive() and threading.current_thread() is not self._flusher:
            self._flusher.join()
        with self._lock:
            self.output.close()
            self.errors.close()
        self.flush(force=True)
