"""What every submit form shares: an error/ok message line and the new job's panel below.

Like a panel, a form leaves a static snapshot beside itself in a saved notebook: the
panel of the job it submitted, as of the last refresh (`widgets.snapshot`).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from workbench.widgets import format as fmt
from workbench.widgets.snapshot import Snapshot

if TYPE_CHECKING:
    import ipywidgets as w

    from workbench.runtime.jobs import Job
    from workbench.widgets.panel import JobPanel


class SubmitForm:
    """Base of BatchForm and GridForm; subclasses build `widget`, `message` and `job_box`."""

    widget: w.Widget
    message: w.HTML
    job_box: w.VBox
    panel_interval: float | None
    job: Any = None
    panel: JobPanel | None = None
    snapshot: Snapshot | None = None

    def enable_snapshot(self) -> None:
        """Call once `widget` is built (adds the marker that hides the snapshot while live)."""
        self.snapshot = Snapshot(self._snapshot_html, what="form's job",
                                 reattach="wb.job(JOB_ID).panel()")
        self.widget.children = (*self.widget.children, self.snapshot.marker)

    def _snapshot_html(self) -> str:
        if self.panel is None:
            return f"<i style='color:{fmt.MUTED}'>nothing submitted from this form</i>"
        return self.panel.snapshot_html()

    def show_error(self, text: object) -> None:
        self.message.value = (f"<pre class='wb-form-error' style='color:{fmt.ERROR};"
                              f"white-space:pre-wrap'>{html.escape(str(text))}</pre>")

    def show_job(self, job: Job, panel_cls: type[JobPanel], what: str) -> None:
        """Replace the previous job's panel with the new job's, and say what was queued."""
        self.job = job
        if self.panel is not None:
            self.panel.close()
        self.panel = panel_cls(job, interval=self.panel_interval)
        if self.snapshot is not None:
            self.snapshot.reattach = f"wb.job({job.id!r}).panel()"
            self.panel.mirrors = [self.snapshot]
            self.snapshot.update(force=True)
        self.job_box.children = (self.panel.widget,)
        self.message.value = (f"<span class='wb-form-ok'>submitted <code>{job.id}</code>: "
                              f"{what}</span>")

    def close(self) -> None:
        if self.panel is not None:
            self.panel.close()
        self.widget.close()

    def _ipython_display_(self) -> None:
        if self.snapshot is None:
            from IPython.display import display

            display(self.widget)
            return
        self.snapshot.display(self.widget, f"{type(self).__name__} (a live widget)")

    def _repr_mimebundle_(self, **kw: Any) -> dict[str, Any] | None:
        return self.widget._repr_mimebundle_(**kw)
