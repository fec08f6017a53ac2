"""A coloured status pill ("in progress", "cancelled", ...) for one job."""

from __future__ import annotations

import html

import ipywidgets as w

from workbench.widgets.format import STATUS_COLORS, pill


class StatusBadge:
    """An HTML widget showing a status; `.status` is the raw value, `.text` what is shown.

    The span carries `wb-badge wb-badge-<status>` classes so a browser test (or a user's
    CSS) can find it; its colours are the theme's (filled while running or finished,
    outlined while waiting).
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
        self.widget.value = pill(self.text, STATUS_COLORS.get(status),
                                 f"wb-badge wb-badge-{html.escape(status)}")

    def _repr_mimebundle_(self, **kw: object) -> dict[str, object] | None:
        return self.widget._repr_mimebundle_(**kw)
