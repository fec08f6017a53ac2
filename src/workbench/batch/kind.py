"""Registers the `batch` job kind with the worker."""

from workbench.batch import results, runner
from workbench.runtime.registry import JobKind, register

KIND = register(JobKind("batch", runner.run, results.results))
