"""OpenAI's completion window: a batch not finished by its deadline becomes `expired`.

What finished stays in the output (and error) file; every request that did not run is
written to the error file as OpenAI writes it (`response: null`, error code
`batch_expired`), so `completed + failed == total` at the end. A running batch stops at
its deadline (in-flight requests are aborted); a batch still waiting at its deadline
expires without running (`expire_waiting`, called by the runner and by front doors that
read the queue, so an overdue batch shows `expired` even while the worker is busy).
"""

from __future__ import annotations

import re
import time

from workbench.batch.format import iter_lines
from workbench.batch.output import expired_line
from workbench.errors import IllegalTransition
from workbench.runtime.context import JobContext
from workbench.store import ResultLog, Status, Store

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def window_seconds(window: str | float | int | None) -> float | None:
    """'24h' → 86400.0; '90s', '15m', '2d', or a number of seconds. None: no deadline."""
    if window is None:
        return None
    if isinstance(window, int | float):
        seconds = float(window)
    else:
        m = _WINDOW.match(window)
        if m is None:
            raise ValueError(f"completion window {window!r}: expected seconds or a number "
                             "with s, m, h or d (e.g. '24h')")
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"completion window {window!r} must be longer than 0 seconds")
    return seconds


def overdue(deadline_at: float | None, now: float | None = None) -> bool:
    return deadline_at is not None and (now or time.time()) >= deadline_at


def _message(expired: int, done: int, total: int) -> str:
    return (f"expired: the completion window closed with {done} of {total} done;"
            f" {expired} request{'s' if expired != 1 else ''} did not run (batch_expired)")


def expire_rest(ctx: JobContext) -> int:
    """Write every request not yet answered as `batch_expired`; the job becomes `expired`.

    Called by the runner once its deadline stopped it (or found it passed at the start).
    The transition checks this worker still holds the lease.
    """
    ctx.flush()
    done = ctx.done_ids()
    before = ctx.completed + ctx.failed
    n = 0
    for obj in iter_lines(ctx.dir / "input.jsonl"):
        if obj["custom_id"] not in done:
            ctx.record(expired_line(obj["custom_id"]), error=True)
            n += 1
    ctx.progress(_message(n, before, ctx.total))  # files flushed, then the counters
    try:
        ctx.store.transition(ctx.id, Status.EXPIRED, worker=ctx.worker, message=ctx.message,
                             progress=100.0)
    except IllegalTransition:  # cancelled (or taken over) meanwhile: the worker settles it
        pass
    return n


def expire_waiting(store: Store, now: float | None = None) -> list[str]:
    """Batches still waiting (queued, interrupted) past their deadline → `expired` now.

    The move comes first (a worker that claims the job at the same moment wins, and its
    runner expires it instead); the error lines follow, then the counters.
    """
    expired = []
    for job in store.overdue("batch", now):
        try:
            store.transition(job.id, Status.EXPIRED, message="expired before it ran")
        except IllegalTransition:
            continue
        d = store.job_dir(job.id)
        out, err = ResultLog(d / "output.jsonl"), ResultLog(d / "errors.jsonl")
        err.repair()
        done = out.ids() | err.ids()
        n = 0
        for obj in iter_lines(d / "input.jsonl"):
            if obj["custom_id"] not in done:
                err.append(expired_line(obj["custom_id"]))
                n += 1
        err.close()
        completed, failed = out.count(), err.count()
        store.update(job.id, completed=completed, failed=failed, progress=100.0,
                     message=_message(n, completed + failed - n, job.total))
        expired.append(job.id)
    return expired
