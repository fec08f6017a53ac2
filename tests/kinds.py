"""Job kinds used only by tests: a countable multi-unit job with a controllable pace."""

from __future__ import annotations

import os
import time

from workbench.runtime.context import JobContext
from workbench.runtime.registry import JobKind, register


def run_count(ctx: JobContext) -> None:
    """Unit i writes {"custom_id": "u<i>", "square": i*i, "pid": ...}; resumable."""
    n, pause = int(ctx.spec["n"]), float(ctx.spec.get("sleep", 0.0))
    done = ctx.done_ids()
    for i in range(n):
        cid = f"u{i}"
        if cid in done:
            continue
        if ctx.should_stop():
            return
        if pause:
            time.sleep(pause)
        if i in ctx.spec.get("fail_units", []):
            ctx.record({"custom_id": cid, "error": {"message": "unit failed"}}, error=True)
        else:
            ctx.record({"custom_id": cid, "square": i * i, "pid": os.getpid()})
        ctx.progress(f"unit {i + 1}/{n}", force=False)


def run_boom(ctx: JobContext) -> None:
    raise RuntimeError("engine would not start")


register(JobKind("count", run_count))
register(JobKind("boom", run_boom))

import tests.engines  # noqa: E402,F401  (registers the "echo" engine provider for workers)
