"""A saved view that survives: static HTML next to every live widget, kept up to date.

A notebook saved with live widgets and reopened without their kernel shows "Error
displaying widget: model not found" (JupyterLab saves the widget's id, not its state).
So every dashboard and panel is displayed as two outputs:

1. the live widget (its view, and a one-line `text/plain` for frontends without widgets);
2. a plain `text/html` snapshot — status, counts, progress, speed, ETA — in an output
   with a `display_id`, replaced in place (`update_display_data`) as the widget refreshes,
   so the notebook file always holds the latest one.

While the widget lives, a `<style>` inside it hides its own snapshot; once the kernel is
gone that style is gone too, and the snapshot shows. The snapshot carries a style that
hides the dead widget's error line above it. (In an untrusted notebook the styles are
stripped: the error line and the snapshot both show.) Re-attaching live is one call:
`wb.dashboard()` or `wb.job(id).panel()`.
"""

from __future__ import annotations

import html
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from workbench.widgets import format as fmt

#: at most one snapshot update per this many seconds, unless forced (a status change)
MIN_INTERVAL_S = 2.0


class Snapshot:
    """The static twin of one live widget: `display()` once, `update()` on every refresh."""

    def __init__(self, render: Callable[[], str], *, what: str, reattach: str) -> None:
        self.render = render
        self.what = what
        self.reattach = reattach
        self.uid = uuid.uuid4().hex[:12]
        self.handles: list[Any] = []
        self.last_html = ""
        self.last_at = 0.0
        self._lock = threading.Lock()
        #: goes inside the live widget: hides this snapshot while the widget is alive
        self.marker = w.HTML(f"<style>.wb-snap-{self.uid}{{display:none !important}}</style>",
                             layout=w.Layout(display="none"))
        self.marker.add_class("wb-live-marker")

    @property
    def css_class(self) -> str:
        return f"wb-snap-{self.uid}"

    def html(self) -> str:
        """The snapshot as it would be saved now."""
        saved = time.strftime("%Y-%m-%d %H:%M:%S")
        hide_dead = (f".jp-OutputArea-child:has(+ .jp-OutputArea-child .{self.css_class}) > "
                     ".jp-OutputArea-output.jupyter-widgets:not(:has(*)){display:none}")
        return (f"<style>{hide_dead}</style>"
                f"<div class='wb-snapshot {self.css_class}' style='border:1px dashed "
                f"{fmt.BORDER};border-radius:4px;padding:4px 8px;color:{fmt.TEXT}'>"
                f"<div class='wb-snapshot-note' style='color:{fmt.MUTED};font-size:11px'>"
                f"Saved view of the {html.escape(self.what)} at {saved} (no live kernel). "
                f"Re-attach: <code>{html.escape(self.reattach)}</code></div>"
                f"{self.render()}</div>")

    def display(self, widget: w.Widget, text: str) -> None:
        """Show the live widget and its snapshot below it (IPython's `display`)."""
        from IPython.display import HTML, display

        bundle = widget._repr_mimebundle_()
        if bundle is not None:
            bundle = dict(bundle)
            bundle["text/plain"] = text
            display(bundle, raw=True)
        doc = self.html()
        handle = display(HTML(doc), display_id=True)
        with self._lock:
            self.last_html, self.last_at = doc, time.monotonic()
            if handle is not None:
                self.handles.append(handle)

    def update(self, *, force: bool = False) -> bool:
        """Replace the saved snapshot (throttled); True when one was sent."""
        if not self.handles:
            return False
        now = time.monotonic()
        if not force and now - self.last_at < MIN_INTERVAL_S:
            return False
        from IPython.display import HTML

        doc = self.html()
        with self._lock:
            if doc == self.last_html:
                return False
            self.last_html, self.last_at = doc, now
            handles = list(self.handles)
        for h in handles:
            h.update(HTML(doc))
        return True


def bar_html(percent: float, color: str) -> str:
    """A static progress bar (what the live FloatProgress showed)."""
    p = max(0.0, min(100.0, percent))
    return (f"<span style='display:inline-block;width:120px;height:8px;border-radius:4px;"
            f"background:{fmt.SURFACE};vertical-align:middle;overflow:hidden'>"
            f"<span style='display:block;width:{p:.0f}%;height:100%;background:{color}'>"
            f"</span></span>")


def static_html(widget: Any) -> str:
    """A widget tree as static HTML: what it shows, without what needs a kernel.

    HTML widgets keep their markup, progress bars become drawn bars, rows of boxes stay
    rows (wrapping), buttons and hidden parts are left out. Any panel is thereby its own
    snapshot, sections added by kinds included.
    """
    layout = getattr(widget, "layout", None)
    if layout is not None and getattr(layout, "display", None) == "none":
        return ""
    if isinstance(widget, w.Button | w.ToggleButton):
        return ""
    if isinstance(widget, w.HTML):
        return f"<div style='min-width:0'>{widget.value}</div>" if widget.value else ""
    if isinstance(widget, w.FloatProgress | w.IntProgress):
        span = (widget.max - widget.min) or 1
        color = {"success": fmt.SUCCESS, "danger": fmt.ERROR, "warning": fmt.WARN
                 }.get(widget.bar_style, fmt.BRAND)
        return f"<div>{bar_html(100 * (widget.value - widget.min) / span, color)}</div>"
    if isinstance(widget, w.Label):
        return f"<div>{html.escape(widget.value)}</div>" if widget.value else ""
    if isinstance(widget, w.Dropdown):
        label = next((k for k, v in widget.options if v == widget.value), "") \
            if widget.options and isinstance(widget.options[0], tuple) else widget.value
        return (f"<div>{html.escape(widget.description)}: {html.escape(str(label))}</div>"
                if widget.value not in (None, "") else "")
    if isinstance(widget, w.Box):
        inner = "".join(static_html(c) for c in widget.children)
        if not inner:
            return ""
        if isinstance(widget, w.HBox):
            return (f"<div style='display:flex;flex-wrap:wrap;align-items:center;"
                    f"column-gap:10px;row-gap:2px'>{inner}</div>")
        return f"<div>{inner}</div>"
    return ""
