"""The batch runner: stream input → engine window → output/error files, resumable.

Invariant 1: each result is appended and flushed before counters move; on resume the
custom_ids already written are skipped (after a torn last line is cut). Invariant 2:
input is streamed and at most `window` requests are in flight. Invariant 5: cancel
aborts in-flight requests; what was written stays. Speed and ETA are the job's pace
(`runtime.progress`, published by the context at each counter update); loading the
model is its own step ("loading <model> (12 s)"), not counted in the speed.
"""

from __future__ import annotations

from collections.abc import Iterator

from workbench.batch.format import iter_lines, to_request
from workbench.batch.output import error_line, success_line
from workbench.engines import pool
from workbench.engines.base import ChatRequest
from workbench.runtime.context import JobContext
from workbench.runtime.progress import loading


def run(ctx: JobContext) -> None:
    spec = ctx.spec
    model_name: str = spec["model"]
    window = int(spec.get("window", 5000))
    mode = spec.get("mode", "window")
    done = ctx.done_ids()
    ctx.pace.unit_key = "requests_per_s"
    with loading(ctx, f"loading {model_name}", then="starting"):
        engine = pool.acquire(spec["engine"])
    endpoints: dict[str, str] = {}

    def pending() -> Iterator[ChatRequest]:
        for obj in iter_lines(ctx.dir / "input.jsonl"):
            if obj["custom_id"] in done:
                continue
            req = to_request(obj)
            endpoints[req.custom_id] = req.endpoint
            yield req

    ctx.buffer_results()
    ctx.progress(f"running: {len(done)} of {ctx.total} already done" if done else "running")
    results = engine.chat(pending(), window=window, mode=mode, stop=ctx.should_stop)
    for res in results:
        endpoint = endpoints.pop(res.custom_id, "chat")
        if ctx.due():  # the flush inside record() publishes this with the counters
            ctx.message = f"running: {ctx.completed + ctx.failed + 1:,}/{ctx.total:,} requests"
        if res.ok:
            ctx.record(success_line(res, endpoint, model_name), tokens=res.completion_tokens)
        else:
            ctx.record(error_line(res.custom_id, res.error or "failed", res.error_code), error=True,
                       tokens=res.completion_tokens)
    done_now = ctx.completed + ctx.failed
    if ctx.should_stop():
        aborted = engine.abort()
        ctx.progress(f"stopped with {done_now:,}/{ctx.total:,} done; "
                     f"{len(aborted)} in flight aborted")
    else:
        ctx.progress(f"{done_now:,}/{ctx.total:,} requests")
