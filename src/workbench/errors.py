"""Exceptions a user can act on. Each says what was wrong and what the numbers were."""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base class of every error workbench raises on purpose."""


class IllegalTransition(WorkbenchError):
    """A job was asked to move between two statuses the lifecycle does not connect."""

    def __init__(self, job_id: str, current: str, target: str, hint: str = "") -> None:
        super().__init__(f"job {job_id}: cannot go from {current!r} to {target!r}"
                         + (f"; {hint}" if hint else ""))
        self.job_id, self.current, self.target = job_id, current, target


class JobNotFound(WorkbenchError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class QueueFull(WorkbenchError):
    """A submission would break a queue limit; nothing of it was queued."""

    def __init__(self, limit: str, current: int, adding: int, maximum: int) -> None:
        super().__init__(
            f"queue limit {limit}: {current} now + {adding} submitted > {maximum} allowed"
        )
        self.limit, self.current, self.adding, self.maximum = limit, current, adding, maximum


class InvalidInput(WorkbenchError):
    """Input refused whole: `problems` lists (line, field, reason); nothing was queued.

    A line of None means the problem is on no line (an engine setting) and is printed
    without one.
    """

    def __init__(self, problems: list[tuple[int | None, str, str]],
                 total_problems: int | None = None, source: str = "input") -> None:
        self.problems = problems
        self.total_problems = total_problems if total_problems is not None else len(problems)
        head = "\n".join(f"  line {ln}: {field}: {reason}" if ln is not None else f"  {field}: {reason}"
                         for ln, field, reason in problems[:50])
        more = self.total_problems - min(len(problems), 50)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{source} refused, nothing was queued ({self.total_problems} problem"
            f"{'s' if self.total_problems != 1 else ''}):\n{head}{tail}"
        )


class BackendUnreachable(WorkbenchError):
    """A backend stayed unreachable past its outage deadline: the job stops, resumable.

    Raised by an engine (after pausing and probing, `engines.outage`); the worker turns
    it into an `interrupted` job that waits for `job.resume()` instead of a `completed`
    job full of connection errors.
    """

    def __init__(self, endpoint: str, since: str, seconds: float, reason: str = "") -> None:
        super().__init__(f"server unreachable: {endpoint} has not answered since {since}"
                         f" ({seconds:.0f} s, past the outage deadline)"
                         + (f"; last error: {reason}" if reason else ""))
        self.endpoint, self.since, self.seconds = endpoint, since, seconds
