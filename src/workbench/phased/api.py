"""`wb.phased`: submit recordings for transcription + rubric scoring, and follow each one.

    job = wb.phased.submit("recordings/", rubric={"accuracy": "...", "clarity": "..."},
                           llm={"model": "path/to/model"})
    job.status             # the job's status, like every job: "queued", "in_progress", ...
    job.item("alice")      # one recording: waiting / transcribing / transcribed /
                           # evaluating / done / failed, with its place, step and ETA
    job.intake_failures    # recordings that could not be read (failed at once, alone)
    job.add(["late/bob.wav"])
    job.results()          # DataFrame: transcript, scores, feedback, timings
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import pandas as pd
from pydantic import ValidationError

from workbench.errors import InvalidInput, NotFound
from workbench.phased.eta import estimate as estimate_waits
from workbench.phased.eta import load_rates
from workbench.phased.intake import Files, Intake, prepare_items
from workbench.phased.items import Items
from workbench.phased.links import link_url
from workbench.phased.links import revoke as revoke_token
from workbench.phased.runner import rate_keys, resolve_device
from workbench.phased.spec import LLMSettings, PhasedSpec, Rubric, STTSettings
from workbench.phased.status import ItemStatus, item_status, phase_step, shown_state
from workbench.runtime.jobs import Bench, Job, job_labels
from workbench.runtime.phase import PHASE_MIGRATIONS, phases
from workbench.store import Status, Store
from workbench.store.status import RUNNING

KIND = "phased"


class IntakeWarning(UserWarning):
    """Some submitted recordings failed at intake (unreadable) or were skipped (not media)."""


def _spec(rubric: Any, batch_size: int, stt: dict[str, Any] | STTSettings | None,
          llm: dict[str, Any] | LLMSettings | str | None, device: str,
          residue_bound_mib: int) -> PhasedSpec:
    """The validated spec, or InvalidInput naming the part ("rubric", "llm", ...) and field."""
    from workbench.config import default_model

    if llm is None:
        llm = {"model": default_model()}
    elif isinstance(llm, str):
        llm = {"model": llm}
    problems: list[tuple[str, str, str]] = []

    def check(part: str, build: Any) -> Any:
        try:
            return build()
        except ValidationError as e:
            problems.extend((part, ".".join(map(str, x["loc"])), x["msg"]) for x in e.errors())
        except (ValueError, TypeError) as e:
            problems.append((part, "", str(e)))
        return None

    rub = check("rubric", lambda: Rubric.coerce(rubric))
    stt_s = check("stt", lambda: stt if isinstance(stt, STTSettings) else STTSettings(**(stt or {})))
    llm_s = check("llm", lambda: llm if isinstance(llm, LLMSettings) else LLMSettings(**llm))
    spec = None
    if not problems:
        spec = check("settings", lambda: PhasedSpec(
            rubric=rub, batch_size=batch_size, stt=stt_s, llm=llm_s, device=device,
            residue_bound_mib=residue_bound_mib))
    if problems or spec is None:
        raise InvalidInput(problems, source="phased job settings")
    return spec


# -- the job handle ---------------------------------------------------------------------------

class PhasedJob(Job):
    """A phased STT → evaluation job; `job.status` is the job's, `job.item(id)` a student's."""

    @property
    def _items(self) -> Items:
        return Items(self.wb.store)

    @property
    def spec(self) -> PhasedSpec:
        return PhasedSpec.model_validate(self.info.spec)

    @property
    def intake_failures(self) -> list[ItemStatus]:
        """Recordings that could not be read when they were submitted (failed at once)."""
        ids = [i.item_id for i in self._items.intake_failures(self.id)]
        return self.items_status(ids) if ids else []

    @property
    def skipped_files(self) -> list[str]:
        """Files of a submitted folder that were skipped (not audio or video by extension)."""
        return list(self.info.metrics.get("intake_skipped", []))

    def add(self, files: Files) -> list[str]:
        """Add recordings while the job runs; they join the next batch that forms."""
        items = self._items
        state = items.job(self.id)
        if not state.accepting or self.info.status in (Status.COMPLETED, Status.EXPIRED):
            raise InvalidInput([(f"job {self.id}", "", f"the job is {self.status} and takes no"
                                 " more recordings; submit a new job")], source="recordings")
        taken = {i.item_id for i in items.all(self.id)}
        intake = prepare_items(self.wb.store, files, taken)
        limit = self.wb.store.limits.max_requests_per_job
        if len(taken) + len(intake.rows) > limit:
            raise InvalidInput([(f"job {self.id}", "files", f"{len(taken)} + {len(intake.rows)}"
                                 f" recordings exceed the per-job limit of {limit}")],
                               source="recordings")
        try:
            added = items.add(self.id, intake.rows)
        except ValueError as e:
            raise InvalidInput([(f"job {self.id}", "", str(e))], source="recordings") from None
        _warn(intake)
        return added

    def item(self, item_id: str) -> ItemStatus:
        """Where one recording is: waiting (place, batch, ETA), transcribing, transcribed,
        evaluating, done (+ result) or failed (+ reason)."""
        return self.items_status([item_id])[0]

    def revoke_link(self, item_id: str) -> str:
        """A new link for one student; the old one answers "not found" from now on."""
        try:
            return link_url(revoke_token(self.wb.store, self.id, item_id)) or ""
        except KeyError:
            raise NotFound("recording", item_id, self.id,
                           [i.item_id for i in self._items.all(self.id)]) from None

    def items_status(self, item_ids: list[str] | None = None) -> list[ItemStatus]:
        store, items = self.wb.store, self._items
        info, state = self.info, items.job(self.id)
        all_items = items.all(self.id)
        by_id = {i.item_id: i for i in all_items}
        wanted = item_ids if item_ids is not None else [i.item_id for i in all_items]
        for iid in wanted:
            if iid not in by_id:
                raise NotFound("recording", iid, self.id, list(by_id))
        spec = self.spec
        rates = load_rates(store, *rate_keys(spec, resolve_device(spec.device)), job_id=self.id)
        if info.status not in RUNNING:
            state = state.model_copy(update={"phase": None, "phase_started": None})
        plan = estimate_waits(all_items, state, rates)
        step = phase_step(state, _last_phase(store, self.id))
        return [item_status(by_id[iid], all_items, state, plan.get(iid), rates.basis, step)
                for iid in wanted]

    def items(self) -> pd.DataFrame:
        """Every recording's status, one row each (what a class dashboard shows)."""
        return pd.DataFrame([s.model_dump(exclude={"result"}) for s in self.items_status()])

    def phases(self) -> pd.DataFrame:
        """This job's load/unload timeline with memory before, loaded and after each phase
        (bytes), batches numbered from 1 as everywhere else."""
        df = pd.DataFrame([p.model_dump() for p in phases(self.wb.store, job_id=self.id)])
        if "batch" in df:
            df["batch"] = df["batch"].map(lambda b: None if pd.isna(b) else int(b) + 1)
        return df

    def results(self) -> pd.DataFrame:
        return results_frame(self.wb.store, self.id)


def _last_phase(store: Store, job_id: str) -> Any | None:
    store.ensure_tables("phase", PHASE_MIGRATIONS)
    return store.conn.execute("SELECT name, batch, state FROM phases WHERE job_id=?"
                              " ORDER BY id DESC LIMIT 1", (job_id,)).fetchone()


def _warn(intake: Intake) -> None:
    if intake.failures or intake.skipped:
        warnings.warn(IntakeWarning(intake.summary()), stacklevel=3)


def results_frame(store: Store, job_id: str) -> pd.DataFrame:
    """One row per recording: state (as `job.item()` says it), transcript, integer scores
    per criterion, overall, feedback, timings."""
    items = Items(store)
    info = store.get(job_id)
    spec = PhasedSpec.model_validate(info.spec)
    state = items.job(job_id)
    if info.status not in RUNNING:
        state = state.model_copy(update={"phase": None, "phase_started": None})
    rows = []
    for it in items.all(job_id):
        tr, ev = it.transcript or {}, it.result or {}
        row: dict[str, Any] = {
            "item_id": it.item_id, "file": it.name, "batch": None if it.batch is None else it.batch + 1,
            "state": shown_state(it, state), "transcript": tr.get("text"),
            "language": tr.get("language"), "audio_s": it.audio_s,
        }
        for c in spec.rubric.criteria:
            row[f"score_{c.name}"] = (ev.get("scores") or {}).get(c.name)
        if spec.llm.uses_logprobs:  # the probability-weighted values behind the integers
            for c in spec.rubric.criteria:
                row[f"expected_{c.name}"] = (ev.get("expected") or {}).get(c.name)
            row["overall_expected"] = ev.get("overall_expected")
        row.update(
            overall=ev.get("overall"), feedback=ev.get("feedback"), error=it.error,
            link=link_url(it.link),
            stt_s=tr.get("elapsed_s"),
            eval_s=(None if it.eval_finished is None or it.eval_started is None
                    else round(it.eval_finished - it.eval_started, 3)),
            wait_s=(None if it.eval_finished is None else round(it.eval_finished - it.added_at, 3)),
            added_at=pd.to_datetime(it.added_at, unit="s"),
        )
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:  # integer rubric → integer columns (missing scores stay <NA>, not NaN)
        for col in [f"score_{c.name}" for c in spec.rubric.criteria] + ["overall", "batch"]:
            df[col] = pd.array(df[col].tolist(), dtype="Int64")
    return df


class PhasedAPI:
    """`wb.phased.submit(files, rubric=...)` and `wb.phased.job(id)`."""

    def __init__(self, wb: Bench) -> None:
        self.wb = wb

    def job(self, job_id: str) -> PhasedJob:
        self.wb.store.get(job_id)
        return PhasedJob(self.wb, job_id)

    def submit(self, files_or_dir: Files, *, rubric: Any, batch_size: int = 10,
               stt: dict[str, Any] | STTSettings | None = None,
               llm: dict[str, Any] | LLMSettings | str | None = None, device: str = "auto",
               residue_bound_mib: int = 128, name: str | None = None,
               tags: str | list[str] | None = None) -> PhasedJob:
        """Queue recordings (files, a folder, or {item_id: path}) for STT then evaluation.

        Settings, the rubric and the list itself are checked first and refused whole with
        the reasons (a missing path, an empty list, an id used twice: nothing is queued).
        A file that exists but cannot be read fails alone, at once: its item is `failed`
        with the reason, `job.intake_failures` lists it, and a warning says so.
        """
        labels = job_labels(name, tags)  # the dashboard's label for the job
        spec = _spec(rubric, batch_size, stt, llm, device, residue_bound_mib)
        store = self.wb.store
        intake = prepare_items(store, files_or_dir)
        rows = intake.rows
        items = Items(store)
        job_id = store.create_job(KIND, spec.model_dump(mode="json"), total=len(rows),
                                  status=Status.VALIDATING, message="adding recordings",
                                  **labels)
        try:
            items.create_job(job_id, spec.batch_size)
            items.add(job_id, rows)
        except BaseException as e:
            store.transition(job_id, Status.FAILED, error=f"{type(e).__name__}: {e}",
                             message="could not record the submitted files")
            raise
        n_ok = len(rows) - len(intake.failures)
        message = f"{n_ok} recordings in batches of {spec.batch_size}"
        if intake.failures or intake.skipped:
            message += f"; {intake.summary()}"
        store.update(job_id, failed=len(intake.failures),
                     metrics={"intake_skipped": intake.skipped} if intake.skipped else {})
        store.transition(job_id, Status.QUEUED, message=message)
        store.add_event(job_id, "phased_submitted", {"items": len(rows), "at": time.time(),
                                                     "intake_failures": len(intake.failures)})
        _warn(intake)
        return PhasedJob(self.wb, job_id)
