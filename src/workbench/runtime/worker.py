"""The worker loop: claim a job, keep its lease alive, run it, settle its status.

Runs as a thread inside a notebook kernel (`wb.start_worker()`) or as its own process
(`workbench worker --root DIR`) that outlives the kernel. Several workers may share a
root: `Store.claim` hands each job to exactly one of them. A worker that dies leaves a
stale lease; the next claim marks that job `interrupted` and runs it again, and the
runner resumes from the job's result files.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Sequence

from workbench.config import WorkerTiming
from workbench.errors import BackendUnreachable, IllegalTransition
from workbench.runtime import registry
from workbench.runtime.context import JobContext
from workbench.runtime.quiet import ENGINE_LOG, quiet_output
from workbench.store import JobRow, Status, Store, worker_identity
from workbench.store.status import FINISHED

log = logging.getLogger("workbench.worker")


def quiet_http_logs() -> None:
    """httpx/httpcore log one INFO line per request (~6 MB per 50,000): WARNING only."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Worker:
    def __init__(self, store: Store, *, kinds: Sequence[str] | None = None,
                 timing: WorkerTiming | None = None, name: str | None = None) -> None:
        self.store = store
        self.kinds = list(kinds) if kinds is not None else None
        self.timing = timing or WorkerTiming()
        self.id = name or worker_identity()
        self.stop_event = threading.Event()
        self.current: JobContext | None = None

    # -- loop ----------------------------------------------------------------------------
    def run_forever(self, *, exit_when_idle: bool = False) -> None:
        registry.load_plugins()
        quiet_http_logs()
        log.info("worker %s on %s", self.id, self.store.root)
        while not self.stop_event.is_set():
            if not self.run_once() and exit_when_idle:
                return
            if not self.current:
                self.stop_event.wait(self.timing.poll_s)

    def stop(self) -> None:
        self.stop_event.set()
        if self.current is not None:
            self.current.cancel_requested.set()

    def run_once(self) -> bool:
        """Claim and run one job; False when nothing was waiting."""
        job = self.store.claim(self.id, self.kinds, stale_after_s=self.timing.stale_after_s)
        if job is None:
            return False
        self._run(job)
        return True

    # -- one job -------------------------------------------------------------------------
    def _run(self, job: JobRow) -> None:
        ctx = JobContext(self.store, job, self.id)
        self.current = ctx
        beat_stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(ctx, beat_stop), daemon=True,
                                name=f"heartbeat-{job.id}")
        beat.start()
        error: str | None = None
        unreachable: BackendUnreachable | None = None
        try:
            # engine start-up noise goes to the job's log, not the notebook (runtime.quiet)
            with quiet_output(ctx.dir / ENGINE_LOG):
                registry.get(job.kind).run(ctx)
        except BackendUnreachable as e:  # outage past its deadline: resumable, not failed
            unreachable = e
            log.warning("job %s interrupted: %s", job.id, e)
        except Exception as e:  # a runner bug or an engine that cannot start fails the job
            error = f"{type(e).__name__}: {e}"
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
        finally:
            beat_stop.set()
            beat.join()
            ctx.close()
            self.current = None
        self._settle(ctx, error, unreachable)

    def _heartbeat(self, ctx: JobContext, stop: threading.Event) -> None:
        while not stop.wait(self.timing.heartbeat_s):
            try:
                ctx.flush(force=False)  # counters and pace stay fresh between bursts
                status = self.store.heartbeat(ctx.id, self.id)
            except Exception:  # database busy for longer than the timeout: try next beat
                log.warning("heartbeat failed for %s", ctx.id, exc_info=True)
                continue
            if status is None:
                ctx.lease_lost.set()
                return
            if status is Status.CANCELLING:
                ctx.cancel_requested.set()

    def _settle(self, ctx: JobContext, error: str | None,
                unreachable: BackendUnreachable | None = None) -> None:
        """Move the job to its final status, unless someone else owns it now.

        - cancelled (or stopped: interrupted) wins over everything;
        - a runner exception: failed, with the exception as the reason;
        - a backend unreachable past its outage deadline: interrupted *with an error*,
          which no worker claims on its own (`Store.claim`) until `job.resume()`;
        - every request failed: failed, with the commonest error as the reason;
        - otherwise completed, saying how many failed of each class.
        """
        s = self.store
        try:
            current = s.get(ctx.id)
            if current.status in FINISHED:  # the runner settled it (e.g. a batch's deadline)
                return
            if current.worker != self.id:
                log.warning("job %s: lease lost, leaving its status to its new owner", ctx.id)
                return
            if current.status is Status.CANCELLING or (
                ctx.cancel_requested.is_set() and current.status is Status.IN_PROGRESS
            ):
                if current.status is Status.IN_PROGRESS:  # stopped by Worker.stop()
                    s.transition(ctx.id, Status.INTERRUPTED, worker=self.id,
                                 message="worker stopped; resumable")
                    return
                s.transition(ctx.id, Status.CANCELLED, worker=self.id,
                             message=f"cancelled after {ctx.completed + ctx.failed} of {ctx.total}")
            elif error is not None:
                s.transition(ctx.id, Status.FAILED, worker=self.id, error=error,
                             message="failed")
            elif unreachable is not None:
                left = ctx.total - ctx.completed - ctx.failed
                why = (f"{unreachable}; {left} of {ctx.total} requests not answered yet;"
                       " job.resume() sends them")
                s.transition(ctx.id, Status.INTERRUPTED, worker=self.id, error=why, message=why)
            elif ctx.all_failed():
                why = f"all {ctx.total} requests failed: {ctx.common_failure()}"
                s.transition(ctx.id, Status.FAILED, worker=self.id, error=why, message=why)
            else:
                s.transition(ctx.id, Status.FINALIZING, worker=self.id, message="finalizing")
                s.transition(ctx.id, Status.COMPLETED, worker=self.id, progress=100.0,
                             message=ctx.summary())
        except IllegalTransition as e:
            log.warning("job %s: %s", ctx.id, e)


def start_thread(store: Store, **kw: object) -> Worker:
    """Start a worker as a daemon thread in this process (e.g. a notebook kernel)."""
    w = Worker(store, **kw)  # type: ignore[arg-type]
    t = threading.Thread(target=w.run_forever, daemon=True, name=f"workbench-worker-{w.id}")
    t.start()
    w.thread = t  # type: ignore[attr-defined]
    return w
