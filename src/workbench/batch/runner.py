"""The batch runner: stream input → engine window → output/error files, resumable.

Invariant 1: each result is appended and flushed before counters move; on resume the
custom_ids already written are skipped (after a torn last line is cut). Invariant 2:
input is streamed and at most `window` requests are in flight. Invariant 5: cancel
aborts in-flight requests; what was written stays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from workbench.batch.format import iter_lines, to_request
from workbench.batch.output import failure_line, success_line
from workbench.engines import pool
from workbench.engines.base import ChatRequest
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
    model_name: str = spec["model"]
    window = int(spec.get("window", 5000))
    mode = spec.get("mode", "window")
    done = ctx.done_ids()
    ctx.progress(f"loading {model_name}" if pool.loaded() is None else "starting")
    engine = pool.acquire(spec["engine"])
    endpoints: dict[str, str] = {}

    def pending() -> Iterator[ChatRequest]:
        for obj in iter_lines(ctx.dir / "input.jsonl"):
            if obj["custom_id"] in done:
                continue
            req = to_request(obj)
            endpoints[req.custom_id] = req.endpoint
            yield req

    meter = Meter(len(done), ctx.total)
    ctx.buffer_results()
    ctx.progress(f"running: {len(done)} of {ctx.total} already done" if done else "running")
    # engines that pause on outages say so in the job message (engines/outage.py)
    notify = {"notify": ctx.progress} if getattr(engine, "reports_outages", False) else {}
    results = engine.chat(pending(), window=window, mode=mode, stop=ctx.should_stop, **notify)
    for res in results:
        endpoint = endpoints.pop(res.custom_id, "chat")
        if res.ok:
            ctx.record(success_line(res, endpoint, model_name))
        else:
            ctx.record(failure_line(res), error=True)
        meter.add(res.completion_tokens)
        if ctx.due():
            ctx.progress(f"{meter.done}/{ctx.total} requests", **meter.snapshot())
    if ctx.should_stop():
        aborted = engine.abort()
        ctx.progress(f"stopped with {meter.done}/{ctx.total} done; {len(aborted)} in flight aborted",
                     **meter.snapshot())
    else:
        ctx.progress(f"{meter.done}/{ctx.total} requests", **meter.snapshot())
