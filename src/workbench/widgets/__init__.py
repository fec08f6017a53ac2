"""ipywidgets views of the store: `wb.dashboard()` for every job, `job.panel()` for one.

Widgets only read the store and send the same commands a user would type
(`job.cancel()`, `job.resume()`); the logic lives in plain classes whose widgets pytest
can click and read without a browser.
"""

from workbench.widgets.badge import StatusBadge
from workbench.widgets.dashboard import Dashboard
from workbench.widgets.job_view import JobView
from workbench.widgets.panel import JobPanel, job_panel
from workbench.widgets.refresher import Refresher, stop_all, wait_until, wait_until_async

__all__ = ["Dashboard", "JobPanel", "JobView", "Refresher", "StatusBadge", "job_panel",
           "stop_all", "wait_until", "wait_until_async"]
