"""Registers the `phased` job kind (STT → evaluation, one batch at a time) with the worker."""

from __future__ import annotations

import pandas as pd

from workbench.phased import runner
from workbench.runtime.registry import JobKind, register
from workbench.store import JobRow, Store


def results(store: Store, job: JobRow) -> pd.DataFrame:
    from workbench.phased.api import results_frame

    return results_frame(store, job.id)


KIND = register(JobKind("phased", runner.run, results))
