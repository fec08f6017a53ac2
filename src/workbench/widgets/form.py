"""What every submit form shares: an error/ok message line and the new job's panel below."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

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

    def show_error(self, text: object) -> None:
        self.message.value = (f"<pre class='wb-form-error' style='color:#dc3545;"
                              f"white-space:pre-wrap'>{html.escape(str(text))}</pre>")

    def show_job(self, job: Job, panel_cls: type[JobPanel], what: str) -> None:
        """Replace the previous job's panel with the new job's, and say what was queued."""
        self.job = job
        if self.panel is not None:
            self.panel.close()
        self.panel = panel_cls(job, interval=self.panel_interval)
        self.job_box.children = (self.panel.widget,)
        self.message.value = (f"<span class='wb-form-ok'>submitted <code>{job.id}</code>: "
                              f"{what}</span>")

    def close(self) -> None:
        if self.panel is not None:
            self.panel.close()
        self.widget.close()

    def _repr_mimebundle_(self, **kw: Any) -> dict[str, Any] | None:
        return self.widget._repr_mimebundle_(**kw)
