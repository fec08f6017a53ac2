"""What one student's own page says (`GET /s/<token>`), as data: no HTML here.

The lab's words for each state, in the order a recording goes through them:

    waiting · your position: batch 2, student 3/10 · estimated wait 5 min
    your video is being processed · STT phase (8/10 students complete) · next: evaluation (est. 3 min)
    your video is being evaluated · evaluation phase (3/10 students complete) · est. 1 min
    done · overall 7/10 (+ scores, feedback, transcript)

Everything comes from `job.item(id)` (state, place, ETA: `phased.status`, `phased.eta`)
plus the counts of the student's own batch. Nothing about another student is included:
not their names, files, scores or transcripts — only how many of the batch are through
the running phase.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from workbench.phased.api import PhasedJob
from workbench.phased.items import Items
from workbench.phased.status import minutes
from workbench.store.status import FINISHED


class Score(BaseModel):
    criterion: str
    score: int | None
    max_score: int


class StudentResult(BaseModel):
    scores: list[Score]
    overall: int | None
    overall_max: int
    feedback: str | None
    transcript: str


class StudentView(BaseModel):
    """One student's page: a headline and its details, the result once done."""

    #: waiting | transcribing | transcribed | evaluating | done | failed | stopped
    state: str
    #: the first words of the line ("waiting", "your video is being processed", ...)
    headline: str
    #: the rest of the line, shown joined by " · "
    details: list[str]
    #: finer step while a phase starts ("loading the speech-to-text model"), if any
    step: str | None = None
    #: what the estimate rests on ("default guess", "this job's batch 1", ...)
    eta_basis: str | None = None
    file: str
    #: True when nothing more will change (the page stops refreshing)
    final: bool
    result: StudentResult | None = None

    @property
    def line(self) -> str:
        return " · ".join([self.headline, *self.details])


def _through(items: list[Any], phase: str) -> int:
    """How many of a batch are past `phase` (STT: transcribed or further; LLM: finished)."""
    if phase == "stt":
        return sum(1 for i in items if i.stt_finished is not None or i.state in
                   ("transcribed", "evaluating", "done", "failed"))
    return sum(1 for i in items if i.state in ("done", "failed"))


def student_view(job: PhasedJob, item_id: str) -> StudentView:
    """The page of one recording of `job` (raises NotFound for an unknown item)."""
    st = job.item(item_id)
    spec = job.spec
    info = job.info
    eta = None if st.eta_s is None else minutes(st.eta_s)
    common: dict[str, Any] = {"file": st.file, "eta_basis": st.eta_basis if eta else None}
    if st.state == "done":
        res = st.result or {}
        scores = [Score(criterion=c.name, score=(res.get("scores") or {}).get(c.name),
                        max_score=c.max_score) for c in spec.rubric.criteria]
        overall = res.get("overall")
        result = StudentResult(scores=scores, overall=overall,
                               overall_max=spec.rubric.overall_max,
                               feedback=res.get("feedback"), transcript=res.get("transcript") or "")
        return StudentView(state="done", headline="done",
                           details=[f"overall {overall}/{spec.rubric.overall_max}"],
                           final=True, result=result, **{**common, "eta_basis": None})
    if st.state == "failed":
        return StudentView(state="failed", headline="we could not process your recording",
                           details=[st.reason or "failed"], final=True,
                           **{**common, "eta_basis": None})
    if info.status in FINISHED:  # the job stopped before this recording was finished
        return StudentView(state="stopped", headline="stopped",
                           details=[f"the lab's job was {info.status.value} before your "
                                    "recording was finished; ask your teacher"], final=True,
                           **{**common, "eta_basis": None})
    step = st.step if st.step != st.state else None
    if st.state == "waiting":
        details = [f"your position: batch {st.batch}, student {st.position_in_batch}/"
                   f"{st.batch_size}"]
        if st.queue_position is not None and st.queue_position > 1:
            details.append(f"{st.queue_position - 1} ahead of you")
        if eta:
            details.append(f"estimated wait {eta}")
        return StudentView(state="waiting", headline="waiting", details=details, step=step,
                           final=False, **common)
    batch = Items(job.wb.store).batch(job.id, (st.batch or 1) - 1)
    n = len(batch)
    est = f" (est. {eta})" if eta else ""
    if st.state == "transcribing":
        return StudentView(state="transcribing", headline="your video is being processed",
                           details=[f"STT phase ({_through(batch, 'stt')}/{n} students "
                                    "complete)", f"next: evaluation{est}"],
                           step=step, final=False, **common)
    if st.state == "transcribed":
        details = [f"transcribed; evaluation starts when the STT phase of batch {st.batch} "
                   f"ends ({_through(batch, 'stt')}/{n} students complete)"]
        if eta:
            details.append(f"result in about {eta}")
        return StudentView(state="transcribed", headline="your video is transcribed",
                           details=details, step=step, final=False, **common)
    details = [f"evaluation phase ({_through(batch, 'llm')}/{n} students complete)"]
    if eta:
        details.append(f"est. {eta}")
    return StudentView(state="evaluating", headline="your video is being evaluated",
                       details=details, step=step, final=False, **common)
