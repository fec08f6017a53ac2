"""What a student sees of their recording: its state, its step, its place and its ETA.

States only move forward: waiting → transcribing → transcribed → evaluating → done (or
failed at any point). A state is the furthest of what the item's row says and what the
phase running on its batch implies, so two readings taken while the runner moves never
show a step back. Within a state, `step` says what is happening in words, including the
model load as its own step ("loading the speech-to-text model"), which on a cold machine
takes longer than the work itself.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from workbench.phased.items import Item, JobState
from workbench.phased.links import link_url

State = Literal["waiting", "transcribing", "transcribed", "evaluating", "done", "failed"]
#: forward order of the states (done and failed are both final)
ORDER: dict[str, int] = {"waiting": 0, "transcribing": 1, "transcribed": 2, "evaluating": 3,
                         "done": 4, "failed": 4}
#: the items table's own states → what a student is told
FROM_ROW: dict[str, State] = {"queued": "waiting", "assigned": "waiting",
                              "transcribing": "transcribing", "transcribed": "transcribed",
                              "evaluating": "evaluating", "done": "done", "failed": "failed"}
PHASE_STATE: dict[str, State] = {"stt": "transcribing", "llm": "evaluating"}
MODEL_WORDS = {"stt": "the speech-to-text model", "llm": "the evaluation model"}


class ItemStatus(BaseModel):
    """Where one recording is, in words a student understands (`message`)."""

    item_id: str
    file: str
    state: State
    #: finer than the state: "waiting for the device", "loading the evaluation model", ...
    step: str
    #: 1-based batch number and position in it (predicted while still waiting)
    batch: int | None = None
    position_in_batch: int | None = None
    batch_size: int
    #: 1 + unfinished recordings submitted before this one (None once it is finished)
    queue_position: int | None = None
    #: seconds until this recording's evaluation is expected, and what that rests on
    eta_s: float | None = None
    eta_basis: str | None = None
    result: dict[str, Any] | None = None
    reason: str | None = None
    message: str
    #: the student's own page (`GET /s/<token>` on `workbench serve`): send it to them only
    link: str | None = None


def shown_state(it: Item, job: JobState) -> State:
    """The furthest of the row's state and the state its batch's running phase implies."""
    own = FROM_ROW.get(it.state, "waiting")
    if ORDER[own] == 4:
        return own
    here = job.phase is not None and job.phase_batch is not None and job.phase_batch == it.batch
    implied: State = PHASE_STATE.get(job.phase or "", "waiting") if here else "waiting"
    return own if ORDER[own] >= ORDER[implied] else implied


def phase_step(job: JobState, phase_row: Any | None) -> str | None:
    """'loading …' / 'waiting for the device' while the running phase has no model yet."""
    if job.phase is None:
        return None
    same = (phase_row is not None and phase_row["name"] == job.phase
            and phase_row["batch"] == job.phase_batch)
    if same and phase_row["state"] == "waiting":
        return "waiting for the device"
    if not same or phase_row["state"] == "loading":
        return f"loading {MODEL_WORDS.get(job.phase, 'the model')}"
    if phase_row["state"] == "unloading":
        return f"unloading {MODEL_WORDS.get(job.phase, 'the model')}"
    return None


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def minutes(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


def item_status(it: Item, all_items: list[Item], job: JobState, plan: dict[str, Any] | None,
                basis: str, step_now: str | None) -> ItemStatus:
    """One recording's status, from its row, the job's phase, and the ETA plan."""
    common = dict(item_id=it.item_id, file=it.name, batch_size=job.batch_size,
                  link=link_url(it.link))
    state = shown_state(it, job)
    b1 = None if it.batch is None else it.batch + 1
    if state == "done":
        res = it.result or {}
        return ItemStatus(**common, state="done", step="done", batch=b1,
                          result={"transcript": (it.transcript or {}).get("text", ""), **res},
                          message=f"done: overall {res.get('overall')}")
    if state == "failed":
        when = "at intake" if it.batch is None else f"in batch {b1}"
        return ItemStatus(**common, state="failed", step="failed", batch=b1, reason=it.error,
                          message=f"failed {when}: {it.error}")
    ahead = sum(1 for x in all_items if x.seq < it.seq and not x.finished)
    plan = plan or {}
    batch = plan.get("batch", it.batch)
    eta = plan.get("eta_s")
    b1 = None if batch is None else batch + 1
    pos = plan.get("position_in_batch")
    in_phase = job.phase_batch is not None and job.phase_batch == it.batch
    step = (step_now if in_phase and step_now and state == PHASE_STATE.get(job.phase or "")
            else state)
    when = "" if eta is None else f", about {minutes(eta)} to your result ({basis})"
    if state == "waiting":
        msg = (f"waiting: {ordinal(ahead + 1)} in line, batch {b1}"
               f" (position {pos} of {job.batch_size}){when}")
    else:
        doing = f" — {step}" if step != state else ""
        msg = f"{state}: batch {b1}, position {pos}{doing}{when}"
    return ItemStatus(**common, state=state, step=step, batch=b1, position_in_batch=pos,
                      queue_position=ahead + 1, eta_s=eta, eta_basis=basis, message=msg)
