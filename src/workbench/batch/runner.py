"""The batch runner: stream input → engine window → output/error files, resumable.

Lines run on the model they name, one model at a time (`batch.routing`); a completion
window that closes stops the run and expires the rest (`batch.expiry`).

Invariant 1: each result is appended and flushed before counters move; on resume the
custom_ids already written are skipped (after a torn last line is cut). Invariant 2:
input is streamed and at most `window` requests are in flight. Invariant 5: cancel
aborts in-flight requests; what was written stays. Speed and ETA are the job's pace
(`runtime.progress`, published by the context at each counter update); loading the
model is its own step ("loading <model> (12 s)"), not counted in the speed.
"""

from __future__ import annotations

from workbench.batch import expiry, routing
from workbench.batch.output import failure_line, success_line
from workbench.engines import pool
from workbench.runtime.context import JobContext
from workbench.runtime.progress import loading


def run(ctx: JobContext) -> None:
    spec = ctx.spec
    window = int(spec.get("window", 5000))
    mode = spec.get("mode", "window")
    done = ctx.done_ids()
    deadline = ctx.job.deadline_at
    expiry.expire_waiting(ctx.store)  # other batches whose window closed while they waited
    ctx.pace.unit_key = "requests_per_s"

    def stop() -> bool:
        return ctx.should_stop() or expiry.overdue(deadline)

    ctx.buffer_results()
    routes = [] if stop() else routing.plan(ctx, done, pool.loaded())
    usage = routing.Usage(ctx)

    def count() -> str:
        return f"{ctx.completed + ctx.failed:,}/{ctx.total:,}"

    for route in routes:
        if stop():
            break
        already = ctx.completed + ctx.failed
        shown = route.name.rstrip("/").rsplit("/", 1)[-1]  # a folder's name, not its path
        with loading(ctx, f"starting {shown}" if pool.loaded() == route.key
                     else f"loading {shown}",
                     then=f"running {shown}: {already:,} of {ctx.total:,} already done"
                     if already else f"running {shown}"):
            engine = pool.acquire(route.engine)
        # engines that pause on outages say so in the job message (engines/outage.py)
        notify = {"notify": ctx.progress} if getattr(engine, "reports_outages", False) else {}
        for res in engine.chat(route.requests(ctx, done, spec), window=window, mode=mode,
                               stop=stop, **notify):
            endpoint = route.endpoints.pop(res.custom_id, "chat")
            if ctx.due():  # the flush inside record() publishes this with the counters
                ctx.message = f"running {shown}: {count()} requests"
                ctx.metrics.update(usage.metrics())
            if res.ok:
                ctx.record(success_line(res, endpoint, route.name), tokens=res.completion_tokens)
                usage.add(res.prompt_tokens, res.completion_tokens, res.cached_tokens)
            else:
                ctx.record(failure_line(res), error=True, tokens=res.completion_tokens)
        if stop():
            aborted = engine.abort()
            ctx.progress(f"stopped with {count()} done; {len(aborted)} in flight aborted",
                         **usage.metrics())
    if expiry.overdue(deadline) and not ctx.should_stop():
        ctx.metrics.update(usage.metrics())
        expiry.expire_rest(ctx)
    elif not ctx.should_stop():
        ctx.progress(f"{count()} requests", **usage.metrics())
