"""Plain-text formatting of job numbers (rates, durations, counts) shared by every panel.

Kept free of ipywidgets so the wording can be tested on its own and reused by the CLI.
"""

from __future__ import annotations

import html
import math
import time

from workbench.store import JobRow, Status

# -- colours: JupyterLab's theme variables, so a dark theme stays readable -----------------
# (the value after the comma is used only where those variables are not defined)
TEXT = "var(--jp-ui-font-color1, #212121)"
MUTED = "var(--jp-ui-font-color2, #616161)"
FAINT = "var(--jp-ui-font-color3, #757575)"
BORDER = "var(--jp-border-color2, #e0e0e0)"
SURFACE = "var(--jp-layout-color2, #eeeeee)"
INVERSE = "var(--jp-ui-inverse-font-color1, #ffffff)"
BRAND = "var(--jp-brand-color1, #1976d2)"
SUCCESS = "var(--jp-success-color1, #388e3c)"
ERROR = "var(--jp-error-color1, #d32f2f)"
WARN = "var(--jp-warn-color1, #f57c00)"
ACCENT = "var(--jp-accent-color1, #7b1fa2)"
INFO = "var(--jp-info-color1, #0097a7)"

#: Badge colours: one glance tells waiting / running / good / bad / stopped apart. None:
#: an outlined badge in the theme's text colour (waiting, expired).
STATUS_COLORS: dict[str, str | None] = {
    Status.VALIDATING: None,
    Status.QUEUED: None,
    Status.IN_PROGRESS: BRAND,
    Status.FINALIZING: BRAND,
    Status.COMPLETED: SUCCESS,
    Status.FAILED: ERROR,
    Status.CANCELLING: WARN,
    Status.CANCELLED: WARN,
    Status.EXPIRED: None,
    Status.INTERRUPTED: ACCENT,
}


def pill(text: str, color: str | None, css_class: str = "", *, size: int = 12) -> str:
    """A rounded label: filled with `color` (inverse text), or outlined when None."""
    look = (f"background:{color};color:{INVERSE};border:1px solid transparent" if color
            else f"background:transparent;color:{TEXT};border:1px solid {BORDER}")
    cls = f" class='{css_class}'" if css_class else ""
    return (f"<span{cls} style='{look};border-radius:10px;padding:1px 9px;"
            f"font-size:{size}px;white-space:nowrap'>{html.escape(text)}</span>")


def size(n: float | None) -> str:
    """Bytes as people read them: `5503782912` -> `5.1 GiB`; None -> `—`."""
    if n is None or not isinstance(n, int | float) or math.isnan(n):
        return "—"
    sign, n = ("-" if n < 0 else ""), abs(float(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{sign}{n:.0f} {unit}" if unit in ("B", "KiB") else f"{sign}{n:.1f} {unit}"
        n /= 1024
    return f"{sign}{n:.1f} TiB"


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
    """`3.21, "req"` -> `3.21 req/s`; below 0.5/s per minute (`4.2 cells/min`), never 0."""
    if value is None or not math.isfinite(value):
        return ""
    if 0 < value < 0.5:
        per_min = value * 60
        return f"{per_min:.1f} {unit}/min" if per_min >= 1 else f"{per_min:.2f} {unit}/min"
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
