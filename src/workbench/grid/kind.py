"""Registers the "grid" job kind: the runner and the results reader."""

from __future__ import annotations

import pandas as pd

from workbench.grid.results import results_frame
from workbench.grid.runner import run
from workbench.runtime.registry import JobKind, register
from workbench.store import JobRow, Store


def _results(store: Store, job: JobRow) -> pd.DataFrame:
    return results_frame(store, job)


KIND = register(JobKind("grid", run, _results))
