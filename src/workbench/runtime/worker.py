"""The worker loop: claim a job, keep its lease alive, run it, settle its status.

Runs as a thread inside a notebook kernel (`wb.start_worker()`) or as its own process
(`workbench worker --root DIR`) that outlives the kernel. Several workers may share a
root: `Store.claim` hands each job to exactly one of them. A worker that dies leaves a
stale lease; every reader then sees the job `interrupted` (`store.liveness`), the next
claim runs it again, and the runner resumes from the job's result files.

A worker does not die of its jobs' troubles: an error in its own loop (the store busy
past its timeout, a full disk) is logged, recorded as a `worker_error` event (the reason
readers show if it dies later anyway) and retried with a growing pause. A full disk
pauses the job (`store.disk`): `interrupted` with the free space in words; the worker
claims nothing while the disk is below the floor and puts the paused jobs back in the
queue by itself when space is back.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Sequence

from workbench.config import WorkerTiming
from workbench.errors import BackendUnreachable, IllegalTransition, mib
from workbench.runtime import registry
from workbench.runtime.context import JobContext
from workbench.runtime.quiet import ENGINE_LOG, quiet_output
from workbench.store import JobRow, Status, Store, disk, worker_identity
from workbench.store.liveness import WORKER_ERROR
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
        self.reserve = disk.Reserve(store.root)
        self._waiting_for_space = False
        self._troubles = 0

    # -- loop ----------------------------------------------------------------------------
    def run_forever(self, *, exit_when_idle: bool = False) -> None:
        registry.load_plugins()
        quiet_http_logs()
        log.info("worker %s on %s", self.id, self.store.root)
        self.reserve.ensure()
        try:
            while not self.stop_event.is_set():
                try:
                    ran = self.run_once()
                except Exception as e:  # its own loop's trouble: say it, wait, go on
                    self._trouble(e)
                    continue
                self._troubles = 0
                if not ran and exit_when_idle:
                    return
                if not self.current:
                    self.stop_event.wait(self.timing.poll_s)
        except BaseException as e:  # dying (SystemExit, KeyboardInterrupt): say why
            self._record_error(e)
            raise

    def _trouble(self, e: Exception) -> None:
        self._troubles += 1
        if disk.is_disk_full(e):
            log.warning("worker %s: %s", self.id, disk.disk_full(self.store.root))
        else:
            log.error("worker %s: %s (retrying)", self.id, e, exc_info=True)
        self._record_error(e)
        self.stop_event.wait(min(30.0, self.timing.poll_s * 2 ** min(self._troubles, 8)))

    def _record_error(self, e: BaseException) -> None:
        try:
            self.store.add_event(None, WORKER_ERROR,
                                 {"worker": self.id, "error": f"{type(e).__name__}: {e}"[:500]})
        except Exception:  # the store may be what is failing
            log.debug("could not record the worker's error", exc_info=True)

    def stop(self) -> None:
        self.stop_event.set()
        if self.current is not None:
            self.current.cancel_requested.set()

    def run_once(self) -> bool:
        """Claim and run one job; False when nothing was waiting (or the disk is full)."""
        if not self._space_to_run():
            return False
        job = self.store.claim(self.id, self.kinds, stale_after_s=self.timing.stale_after_s)
        if job is None:
            return False
        self._run(job)
        return True

    def _space_to_run(self) -> bool:
        """Below the disk floor: claim nothing. Above it: re-queue jobs a full disk paused."""
        root = self.store.root
        if disk.below_floor(root):
            if not self._waiting_for_space:
                log.warning("worker %s: %s; waiting", self.id, disk.disk_full(root))
            self._waiting_for_space = True
            return False
        self._waiting_for_space = False
        paused = [r for r in self.store.list_jobs(status=Status.INTERRUPTED.value,
                                                  error_prefix=disk.PAUSED)
                  if self.kinds is None or r.kind in self.kinds]
        if paused:
            self.reserve.ensure()
            why = f"resumed: disk space is back ({mib(disk.free_bytes(root))} free on {root})"
            for r in paused:
                try:
                    self.store.transition(r.id, Status.QUEUED, message=why)
                except IllegalTransition:  # another worker or the user was first
                    continue
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
            if disk.is_disk_full(e):  # ... but a full disk pauses it
                ctx.note_disk_full()
            else:
                error = f"{type(e).__name__}: {e}"
                log.error("job %s failed:\n%s", job.id, traceback.format_exc())
        finally:
            beat_stop.set()
            beat.join()
            try:
                ctx.close()
            except Exception as e:
                if not disk.is_disk_full(e):
                    raise
                ctx.note_disk_full()
            self.current = None
        self._until_written(lambda: self._settle(ctx, error, unreachable))

    def _until_written(self, write: Callable[[], None]) -> None:
        """Run a store write that a full disk may refuse: give back the reserve, retry
        (with a growing pause) until it is written or the worker is stopped."""
        pause = self.timing.poll_s
        while True:
            try:
                write()
                return
            except Exception as e:
                if not disk.is_disk_full(e):
                    raise
                if self.reserve.release():
                    log.warning("worker %s: disk full; released the store's reserve", self.id)
                    continue
                log.warning("worker %s: cannot record the job's state: %s", self.id, e)
            if self.stop_event.wait(pause):
                return
            pause = min(30.0, pause * 2)

    def _heartbeat(self, ctx: JobContext, stop: threading.Event) -> None:
        while not stop.wait(self.timing.heartbeat_s):
            try:
                ctx.flush(force=False)  # counters and pace stay fresh between bursts
                status = self.store.heartbeat(ctx.id, self.id)
            except Exception as e:  # database busy past its timeout, or full: next beat
                if disk.is_disk_full(e):
                    ctx.note_disk_full()
                else:
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
        - a full disk: interrupted *with the reason* (held: `job.wait()` returns), which
          this worker re-queues by itself once space is back (`_space_to_run`);
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
                and ctx.disk_full is None
            ):
                if current.status is Status.IN_PROGRESS:  # stopped by Worker.stop()
                    s.transition(ctx.id, Status.INTERRUPTED, worker=self.id,
                                 message="worker stopped; resumable")
                    return
                s.transition(ctx.id, Status.CANCELLED, worker=self.id,
                             message=f"cancelled after {ctx.completed + ctx.failed} of {ctx.total}")
            elif ctx.disk_full is not None:
                why = str(ctx.disk_full)
                s.transition(ctx.id, Status.INTERRUPTED, worker=self.id, error=why, message=why)
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
