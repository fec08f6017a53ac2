"""Speed and ETA of a job as a viewer sees it.

Runners that measure their own speed publish it in `job.info.metrics` (`requests_per_s`,
`tokens_per_s`, `eta_s`); those numbers win. For kinds that publish none, the meter
estimates units/s from the counters it has watched move over a sliding window, so
every job row gets a rate and an ETA whatever worker (thread or process) runs it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from workbench.store import JobRow, Status


@dataclass(frozen=True)
class Speed:
    units_per_s: float | None
    tokens_per_s: float | None
    eta_s: float | None


class RateMeter:
    """Units/s over the last `window_s` seconds of observed counter movement."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def observe(self, row: JobRow, now: float | None = None) -> Speed:
        now = time.monotonic() if now is None else now
        m = row.metrics
        published = Speed(_num(m.get("requests_per_s")), _num(m.get("tokens_per_s")),
                          _num(m.get("eta_s")))
        if row.status not in (Status.IN_PROGRESS, Status.FINALIZING):
            self._samples.clear()  # a finished or waiting job has no ETA
            return Speed(published.units_per_s, published.tokens_per_s, None)
        if not self._samples or self._samples[-1][1] != row.done:
            self._samples.append((now, row.done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()
        units = published.units_per_s
        if units is None and len(self._samples) >= 2:
            (t0, d0), (_, d1) = self._samples[0], self._samples[-1]
            # time since the count last moved counts too: a stalled job slows down
            units = (d1 - d0) / (now - t0) if now > t0 else None
        eta = published.eta_s
        if eta is None and units and row.total:
            eta = max(row.total - row.done, 0) / units
        return Speed(units, published.tokens_per_s, eta)

def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
