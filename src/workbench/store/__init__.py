"""SQLite (WAL) + per-job folders: the single source of truth."""

from workbench.store.db import Store
from workbench.store.files import ResultLog
from workbench.store.leases import worker_identity
from workbench.store.schema import JobRow, new_job_id
from workbench.store.status import Status

__all__ = ["JobRow", "ResultLog", "Status", "Store", "new_job_id", "worker_identity"]
