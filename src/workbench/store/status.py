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


def check_transition(job_id: str, current: str, target: str) -> Status:
    """Return `target` as a Status, or raise IllegalTransition."""
    cur, tgt = Status(current), Status(target)
    if tgt not in TRANSITIONS[cur]:
        raise IllegalTransition(job_id, cur.value, tgt.value)
    return tgt
