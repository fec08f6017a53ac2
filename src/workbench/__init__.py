"""workbench: run long GPU/LLM jobs from JupyterLab and walk away.

    wb = Workbench("data/wb")
    job = wb.batch.submit("candidates.jsonl", model="...")
    job.wait(); job.results()
"""

from workbench.api import Workbench
from workbench.config import Limits, WorkerTiming
from workbench.errors import IllegalTransition, InvalidInput, JobNotFound, QueueFull, WorkbenchError
from workbench.runtime.jobs import Job
from workbench.store import Status

__all__ = ["IllegalTransition", "InvalidInput", "Job", "JobNotFound", "Limits", "QueueFull",
           "Status", "Workbench", "WorkbenchError", "WorkerTiming"]
