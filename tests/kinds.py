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


def run_hog(ctx: JobContext) -> None:
    """The count kind, except that with WB_TEST_HOG=1 unit `hog_at` eats memory until the
    kernel's out-of-memory killer stops the process (run it in a memory-limited cgroup)."""
    if os.environ.get("WB_TEST_HOG") == "1":
        done = len(ctx.done_ids())
        at = int(ctx.spec["hog_at"])
        ctx.spec["n"] = at  # run up to the hog unit, then eat
        if done < at:
            run_count(ctx)
        eaten = []
        while True:
            eaten.append(b"x" * (16 << 20))
    run_count(ctx)


def run_boom(ctx: JobContext) -> None:
    raise RuntimeError("engine would not start")


register(JobKind("count", run_count))
register(JobKind("boom", run_boom))
register(JobKind("hog", run_hog))

import tests.engines  # noqa: E402,F401  (registers the "echo" engine provider for workers)
