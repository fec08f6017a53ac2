"""The job lifecycle: statuses (OpenAI Batch vocabulary where it fits) and legal moves.

Every status change in the code base goes through `check_transition`, so the lifecycle
lives in exactly one table.
"""

from __future__ import annotations

from enum import StrEnum

from workbench.errors import IllegalTransition


class Status(StrEnum):
    VALIDATING = "validating"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    INTERRUPTED = "interrupted"


S = Status

#: Where each status may go next. `interrupted` means its worker died; it is resumable.
#: `expired` is OpenAI's: the job's completion window (a deadline) passed before it finished;
#: what finished is kept, the rest is reported as expired, and it is not resumable. File
#: retention is not a status: a purge sets `purged_at` and leaves the status alone.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.VALIDATING: frozenset({S.QUEUED, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset({S.IN_PROGRESS, S.CANCELLED, S.EXPIRED}),
    S.IN_PROGRESS: frozenset({S.FINALIZING, S.FAILED, S.CANCELLING, S.INTERRUPTED, S.EXPIRED}),
    S.FINALIZING: frozenset({S.COMPLETED, S.FAILED, S.INTERRUPTED}),
    S.CANCELLING: frozenset({S.CANCELLED}),
    S.INTERRUPTED: frozenset({S.QUEUED, S.IN_PROGRESS, S.CANCELLED, S.EXPIRED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset({S.QUEUED}),
    S.EXPIRED: frozenset(),
}

INITIAL = frozenset({S.VALIDATING, S.QUEUED})
#: A worker holds the job (a lease with a heartbeat).
RUNNING = frozenset({S.IN_PROGRESS, S.FINALIZING, S.CANCELLING})
#: Waiting for a worker; these count against the queue limits.
WAITING = frozenset({S.VALIDATING, S.QUEUED, S.INTERRUPTED})
#: Nothing more will happen unless the user resumes.
FINISHED = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED})
#: `job.resume()` puts these back in the queue.
RESUMABLE = frozenset({S.INTERRUPTED, S.FAILED, S.CANCELLED})
#: Moves allowed only to `job.retry_failed()`: a completed job with failed requests goes
#: back to the queue to send them again (a plain resume of a completed job is refused).
RETRY_TRANSITIONS: dict[Status, frozenset[Status]] = {S.COMPLETED: frozenset({S.QUEUED})}
#: `job.retry_failed()` re-queues these.
RETRYABLE = RESUMABLE | {S.COMPLETED}


def held(status: Status | str, error: str | None) -> bool:
    """Interrupted *with an error*: its runner gave up (a backend unreachable past the
    outage deadline). Unlike a job whose worker died, no worker claims it on its own:
    it waits for `job.resume()`. `job.wait()` returns on it."""
    return Status(status) is S.INTERRUPTED and bool(error)


def check_transition(job_id: str, current: str, target: str, *,
                     retry_failed: bool = False) -> Status:
    """Return `target` as a Status, or raise IllegalTransition."""
    cur, tgt = Status(current), Status(target)
    allowed = TRANSITIONS[cur] | (RETRY_TRANSITIONS.get(cur, frozenset()) if retry_failed
                                  else frozenset())
    if tgt not in allowed:
        hint = ("job.retry_failed() re-sends its failed requests"
                if tgt in RETRY_TRANSITIONS.get(cur, ()) else "")
        raise IllegalTransition(job_id, cur.value, tgt.value, hint)
    return tgt
