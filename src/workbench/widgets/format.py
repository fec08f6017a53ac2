"""Plain-text formatting of job numbers (rates, durations, counts) shared by every panel.

Kept free of ipywidgets so the wording can be tested on its own and reused by the CLI.
"""

from __future__ import annotations

import math
import time

from workbench.store import JobRow, Status

#: Badge colours: one glance tells waiting / running / good / bad / stopped apart.
STATUS_COLORS: dict[str, str] = {
    Status.VALIDATING: "#6c757d",
    Status.QUEUED: "#6c757d",
    Status.IN_PROGRESS: "#0d6efd",
    Status.FINALIZING: "#0d6efd",
    Status.COMPLETED: "#198754",
    Status.FAILED: "#dc3545",
    Status.CANCELLING: "#fd7e14",
    Status.CANCELLED: "#b35900",
    Status.EXPIRED: "#adb5bd",
    Status.INTERRUPTED: "#6f42c1",
}

#: ipywidgets progress-bar styles per status ('' is the theme's default colour).
BAR_STYLES: dict[str, str] = {
    Status.COMPLETED: "success",
    Status.FAILED: "danger",
    Status.CANCELLING: "warning",
    Status.CANCELLED: "warning",
    Status.INTERRUPTED: "warning",
    Status.IN_PROGRESS: "info",
    Status.FINALIZING: "info",
}


def duration(seconds: float | None) -> str:
    """`95` -> `1m 35s`; None or a non-finite value -> `—` (unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h {m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d {h}h"


def rate(value: float | None, unit: str) -> str:
    """`3.21, "req"` -> `3.2 req/s`; small rates keep two decimals so they never read 0."""
    if value is None or not math.isfinite(value):
        return ""
    if value >= 100:
        return f"{value:,.0f} {unit}/s"
    if value >= 10:
        return f"{value:.1f} {unit}/s"
    return f"{value:.2f} {unit}/s"


def counts(row: JobRow) -> str:
    """`7/15 · 1 failed` (the failed part only when something failed)."""
    text = f"{row.done:,}/{row.total:,}" if row.total else f"{row.done:,}"
    if row.failed:
        text += f" · {row.failed:,} failed"
    return text


def age(ts: float | None, now: float | None = None) -> str:
    """How long ago a timestamp was: `4s ago`."""
    if ts is None:
        return "—"
    return f"{duration((now or time.time()) - ts)} ago"
