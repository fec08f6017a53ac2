"""Registers the "grid" job kind: the runner and the results reader."""

from __future__ import annotations

import pandas as pd

from workbench.grid.batch_mode import BatchModeRunner
from workbench.grid.results import results_frame
from workbench.grid.runner import GridRunner
from workbench.runtime.context import JobContext
from workbench.runtime.registry import JobKind, register
from workbench.store import JobRow, Store


def run(ctx: JobContext) -> None:
    """Realtime cells, or (`mode="batch"`) Gemini batches for the Gemini models."""
    runner = BatchModeRunner if ctx.spec.get("mode") == "batch" else GridRunner
    runner(ctx).run()


def _results(store: Store, job: JobRow) -> pd.DataFrame:
    return results_frame(store, job)


KIND = register(JobKind("grid", run, _results))
