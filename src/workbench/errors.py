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


#: Where a problem is: a line number of an input file (1-based; 0 = the input as a whole),
#: or a label naming the entry in words ("file 4 (notes.wav)", "settings", "model 2").
Where = int | str | None


def where_text(where: Where) -> str:
    """`line 12: ` for a line of a file, `file 4 (notes.wav): ` for a labelled entry, or ``."""
    if isinstance(where, int) and where > 0:
        return f"line {where}: "
    if isinstance(where, str) and where:
        return f"{where}: "
    return ""


class InvalidInput(WorkbenchError):
    """Input refused whole: `problems` lists (where, field, reason); nothing was queued.

    `where` is a line number for line-oriented files (batch JSONL), a label for entries
    that have no line (the 4th file of a list, "settings"), or 0/None for the input as a
    whole; `field` may be empty when the label already names it.
    """

    def __init__(self, problems: list[tuple[Where, str, str]], total_problems: int | None = None,
                 source: str = "input") -> None:
        self.problems = problems
        self.total_problems = total_problems if total_problems is not None else len(problems)
        head = "\n".join(f"  {where_text(ln)}{f'{field}: ' if field else ''}{reason}"
                         for ln, field, reason in problems[:50])
        more = self.total_problems - min(len(problems), 50)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{source} refused, nothing was queued ({self.total_problems} problem"
            f"{'s' if self.total_problems != 1 else ''}):\n{head}{tail}"
        )


class NotFound(WorkbenchError, LookupError):
    """An item asked for by id that its job does not have (names the id and the job)."""

    def __init__(self, what: str, item_id: str, job_id: str, known: list[str] | None = None) -> None:
        hint = ""
        if known is not None:
            shown = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
            hint = f"; it has {len(known)}: {shown}" if known else "; it has none"
        super().__init__(f"no {what} {item_id!r} in job {job_id}{hint}")
        self.what, self.item_id, self.job_id = what, item_id, job_id


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


def mib(n_bytes: float) -> str:
    """`12 MiB`, `1.5 GiB`: a size in words."""
    if n_bytes >= 1 << 30:
        return f"{n_bytes / (1 << 30):.1f} GiB"
    return f"{n_bytes / (1 << 20):.0f} MiB"


class DiskFull(WorkbenchError):
    """The store's disk is (nearly) full: a running job pauses, a submission is refused.

    `free` and `needed` are bytes; `folder` is the store root. The words say what to do:
    a paused job resumes by itself once space is back; a refused submission queued nothing.
    """

    def __init__(self, folder: str, free: int, needed: int, *, submit: bool = False) -> None:
        state = f"{mib(free)} free on {folder} (needs {mib(needed)})"
        text = (f"disk full: {state}; nothing was queued: free space and submit again"
                if submit else f"paused: disk full — {state}; free space and it resumes")
        super().__init__(text)
        self.folder, self.free, self.needed = folder, free, needed
