"""A coloured status pill ("in progress", "cancelled", ...) for one job."""

from __future__ import annotations

import html

import ipywidgets as w

from workbench.widgets.format import STATUS_COLORS


class StatusBadge:
    """An HTML widget showing a status; `.status` is the raw value, `.text` what is shown.

    The span carries `wb-badge wb-badge-<status>` classes so a browser test (or a user's
    CSS) can find it.
    """

    def __init__(self, status: str = "") -> None:
        self.widget = w.HTML()
        self.widget.add_class("wb-status")
        self.status = ""
        self.set(status)

    @property
    def text(self) -> str:
        return self.status.replace("_", " ")

    def set(self, status: str) -> None:
        status = str(status)
        if status == self.status and self.widget.value:
            return
        self.status = status
        color = STATUS_COLORS.get(status, "#6c757d")
        self.widget.value = (
            f'<span class="wb-badge wb-badge-{html.escape(status)}" style="background:{color};'
            'color:white;border-radius:10px;padding:2px 10px;font-size:12px;'
            f'white-space:nowrap">{html.escape(self.text)}</span>'
        )

    def _repr_mimebundle_(self, **kw: object) -> dict[str, object] | None:
        return self.widget._repr_mimebundle_(**kw)
