"""Speed and ETA of a job as every widget shows them: the runner's published pace.

The job's runner publishes one smoothed rate, tokens/s and ETA in `job.info.metrics`
(`workbench.runtime.progress`); the dashboard row, a panel's tiles and a kind's tables
all read them through `speed_of`, so they can never disagree. Nothing is estimated here
except the countdown of the published ETA since it was computed.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.runtime.progress import eta_now
from workbench.store import JobRow
from workbench.store.status import RUNNING

#: what one unit of work is called on screen, per kind
UNITS = {"batch": "req", "grid": "cells", "phased": "recordings"}


@dataclass(frozen=True)
class Speed:
    units_per_s: float | None
    tokens_per_s: float | None
    eta_s: float | None
    unit: str = "units"


def speed_of(row: JobRow, now: float | None = None) -> Speed:
    """The published rate (a finished job keeps its run's average) and, while it runs,
    the ETA counted down to `now`."""
    m = row.metrics
    units = _num(m.get("units_per_s"))
    if units is None:
        units = _num(m.get("requests_per_s"))
    eta = eta_now(m, now) if row.status in RUNNING else None
    return Speed(units, _num(m.get("tokens_per_s")), eta, UNITS.get(row.kind, "units"))


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
