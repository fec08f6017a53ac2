"""The batch runner: stream input → engine window → output/error files, resumable.

Lines run on the model they name, one model at a time (`batch.routing`); a completion
window that closes stops the run and expires the rest (`batch.expiry`).

Invariant 1: each result is appended and flushed before counters move; on resume the
custom_ids already written are skipped (after a torn last line is cut). Invariant 2:
input is streamed and at most `window` requests are in flight. Invariant 5: cancel
aborts in-flight requests; what was written stays.
"""

from __future__ import annotations

import time
from typing import Any

from workbench.batch import expiry, routing
from workbench.batch.output import failure_line, success_line
from workbench.engines import pool
from workbench.runtime.context import JobContext


class Meter:
    """Requests/s, generated tokens/s and ETA over this run (a resumed run starts afresh)."""

    def __init__(self, already_done: int, total: int) -> None:
        self.t0 = time.monotonic()
        self.start_done = already_done
        self.done = already_done
        self.total = total
        self.tokens = 0

    def add(self, completion_tokens: int) -> None:
        self.done += 1
        self.tokens += completion_tokens

    def snapshot(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = (self.done - self.start_done) / elapsed
        remaining = self.total - self.done
        return {"requests_per_s": round(rate, 2), "tokens_per_s": round(self.tokens / elapsed, 1),
                "eta_s": round(remaining / rate, 1) if rate > 0 else None,
                "elapsed_s": round(elapsed, 1)}


def run(ctx: JobContext) -> None:
    spec = ctx.spec
    window = int(spec.get("window", 5000))
    mode = spec.get("mode", "window")
    done = ctx.done_ids()
    deadline = ctx.job.deadline_at
    expiry.expire_waiting(ctx.store)  # other batches whose window closed while they waited

    def stop() -> bool:
        return ctx.should_stop() or expiry.overdue(deadline)

    ctx.buffer_results()
    routes = [] if stop() else routing.plan(ctx, done, pool.loaded())
    usage = routing.Usage(ctx)
    meter = Meter(len(done), ctx.total)
    for route in routes:
        if stop():
            break
        ctx.progress(f"starting {route.name}" if pool.loaded() == route.key
                     else f"loading {route.name}")
        engine = pool.acquire(route.engine)
        ctx.progress(f"running {route.name}: {meter.done} of {ctx.total} already done"
                     if meter.done else f"running {route.name}")
        # engines that pause on outages say so in the job message (engines/outage.py)
        notify = {"notify": ctx.progress} if getattr(engine, "reports_outages", False) else {}
        for res in engine.chat(route.requests(ctx, done, spec), window=window, mode=mode,
                               stop=stop, **notify):
            endpoint = route.endpoints.pop(res.custom_id, "chat")
            if res.ok:
                ctx.record(success_line(res, endpoint, route.name))
                usage.add(res.prompt_tokens, res.completion_tokens, res.cached_tokens)
            else:
                ctx.record(failure_line(res), error=True)
            meter.add(res.completion_tokens)
            if ctx.due():
                ctx.progress(f"{meter.done}/{ctx.total} requests", **usage.metrics(),
                             **meter.snapshot())
        if stop():
            aborted = engine.abort()
            ctx.progress(f"stopped with {meter.done}/{ctx.total} done; {len(aborted)} in flight"
                         " aborted", **usage.metrics(), **meter.snapshot())
    if expiry.overdue(deadline) and not ctx.should_stop():
        ctx.metrics.update(usage.metrics())
        expiry.expire_rest(ctx)
    elif not ctx.should_stop():
        ctx.progress(f"{meter.done}/{ctx.total} requests", **usage.metrics(),
                     **meter.snapshot())
