"""`wb.phased`: submit recordings for transcription + rubric scoring, and follow each one.

    job = wb.phased.submit("recordings/", rubric={"accuracy": "...", "clarity": "..."},
                           llm={"model": "path/to/model"})
    job.status("alice")    # waiting / transcribing / evaluating / done / failed, with ETA
    job.add(["late/bob.wav"])
    job.results()          # DataFrame: transcript, scores, feedback, timings
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ValidationError

from workbench.errors import InvalidInput
from workbench.phased.eta import estimate as estimate_waits
from workbench.phased.eta import load_rates
from workbench.phased.items import Item, Items
from workbench.phased.runner import rate_keys, resolve_device
from workbench.phased.spec import LLMSettings, PhasedSpec, Rubric, STTSettings
from workbench.runtime.jobs import Bench, Job, job_labels
from workbench.runtime.phase import phases
from workbench.store import Status, Store
from workbench.store.media import store_media
from workbench.store.status import RUNNING

KIND = "phased"
#: Extensions picked up when a folder is submitted (audio and the video types PyAV reads).
MEDIA_EXTENSIONS = frozenset({
    ".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".wma", ".webm", ".mp4",
    ".mov", ".mkv", ".avi", ".mpg", ".mpeg", ".3gp", ".flv", ".wmv"})

Files = str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Mapping[str, str | os.PathLike[str]]


class ItemStatus(BaseModel):
    """Where one recording is, in words a student understands (`message`)."""

    item_id: str
    file: str
    state: Literal["waiting", "transcribing", "evaluating", "done", "failed"]
    #: 1-based batch number and position in it (predicted while still waiting)
    batch: int | None = None
    position_in_batch: int | None = None
    batch_size: int
    #: 1 + unfinished recordings submitted before this one (None once it is finished)
    queue_position: int | None = None
    #: seconds until this recording's evaluation is expected, from measured rates
    eta_s: float | None = None
    eta_basis: str | None = None
    result: dict[str, Any] | None = None
    reason: str | None = None
    message: str


# -- inputs ---------------------------------------------------------------------------------

def _collect(files: Files) -> list[tuple[str | None, Path]]:
    """(explicit id or None, path) in arrival order; folders by modification time, then name."""
    if isinstance(files, Mapping):
        return [(str(k), Path(v)) for k, v in files.items()]
    if isinstance(files, str | os.PathLike):
        p = Path(files)
        if p.is_dir():
            found = [x for x in p.iterdir() if x.is_file() and x.suffix.lower() in MEDIA_EXTENSIONS]
            return [(None, x) for x in sorted(found, key=lambda x: (x.stat().st_mtime, x.name))]
        return [(None, p)]
    return [(None, Path(f)) for f in files]


def _unique_id(stem: str, taken: set[str]) -> str:
    base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem) or "item"
    cand, n = base, 2
    while cand in taken:
        cand, n = f"{base}-{n}", n + 1
    taken.add(cand)
    return cand


def prepare_items(store: Store, files: Files, taken: set[str] | None = None) -> list[dict[str, Any]]:
    """Check every file, then store it content-addressed under ROOT/media/.

    Refused whole (InvalidInput: which file, why) if any file is missing or unreadable; a
    video without an audio track is accepted here and fails alone in its STT phase.
    """
    from workbench.engines.whisper import MediaError, NoAudioTrack, probe_audio

    entries = _collect(files)
    if not entries:
        raise InvalidInput([(0, "files", f"no audio or video files found in {files!r}")],
                           source="recordings")
    taken = set(taken or ())
    problems: list[tuple[int, str, str]] = []
    rows: list[dict[str, Any]] = []
    for n, (given, path) in enumerate(entries, start=1):
        try:
            audio_s: float | None = probe_audio(path)
        except NoAudioTrack:
            audio_s = None
        except MediaError as e:
            problems.append((n, str(path), str(e).replace(f"{path}: ", "")))
            continue
        if given is not None and given in taken:
            problems.append((n, str(path), f"item id {given!r} is used twice"))
            continue
        item_id = given if given is not None else _unique_id(path.stem, taken)
        taken.add(item_id)
        rows.append({"item_id": item_id, "name": path.name, "src": path, "audio_s": audio_s})
    if problems:
        raise InvalidInput(problems, source="recordings")
    for r in rows:
        digest, dest = store_media(store.root, r.pop("src"))
        r.update(path=str(dest), sha256=digest, size=dest.stat().st_size)
    return rows


def _spec(rubric: Any, batch_size: int, stt: dict[str, Any] | STTSettings | None,
          llm: dict[str, Any] | LLMSettings | str | None, device: str,
          residue_bound_mib: int) -> PhasedSpec:
    from workbench.config import default_model

    if llm is None:
        llm = {"model": default_model()}
    elif isinstance(llm, str):
        llm = {"model": llm}
    try:
        return PhasedSpec(
            rubric=Rubric.coerce(rubric), batch_size=batch_size,
            stt=stt if isinstance(stt, STTSettings) else STTSettings(**(stt or {})),
            llm=llm if isinstance(llm, LLMSettings) else LLMSettings(**llm),
            device=device, residue_bound_mib=residue_bound_mib)
    except ValidationError as e:
        raise InvalidInput([(0, ".".join(map(str, x["loc"])) or "spec", x["msg"])
                            for x in e.errors()], source="phased job settings") from None
    except ValueError as e:
        raise InvalidInput([(0, "rubric", str(e))], source="phased job settings") from None


# -- the job handle ---------------------------------------------------------------------------

class JobStatus(str):
    """The job's status string — and, called with an item id, that recording's status.

    `job.status == "completed"` keeps working like every other job; `job.status("alice")`
    answers a student.
    """

    job: PhasedJob

    def __new__(cls, value: str, job: PhasedJob) -> JobStatus:
        s = super().__new__(cls, value)
        s.job = job
        return s

    def __call__(self, item_id: str) -> ItemStatus:
        return self.job.item(item_id)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _minutes(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


class PhasedJob(Job):
    """A phased STT → evaluation job."""

    @property
    def _items(self) -> Items:
        return Items(self.wb.store)

    @property  # type: ignore[override]
    def status(self) -> JobStatus:
        return JobStatus(self.info.status.value, self)

    @property
    def spec(self) -> PhasedSpec:
        return PhasedSpec.model_validate(self.info.spec)

    def add(self, files: Files) -> list[str]:
        """Add recordings while the job runs; they join the next batch that forms."""
        items = self._items
        state = items.job(self.id)
        if not state.accepting or self.info.status in (Status.COMPLETED, Status.EXPIRED):
            raise InvalidInput([(0, "job", f"job {self.id} is {self.status} and takes no more"
                                 " recordings; submit a new job")], source="recordings")
        taken = {i.item_id for i in items.all(self.id)}
        rows = prepare_items(self.wb.store, files, taken)
        limit = self.wb.store.limits.max_requests_per_job
        if len(taken) + len(rows) > limit:
            raise InvalidInput([(0, "files", f"{len(taken)} + {len(rows)} recordings exceed the"
                                 f" per-job limit of {limit}")], source="recordings")
        try:
            return items.add(self.id, rows)
        except ValueError as e:
            raise InvalidInput([(0, "job", str(e))], source="recordings") from None

    def item(self, item_id: str) -> ItemStatus:
        """Where one recording is: waiting (line, batch, ETA), transcribing, evaluating, done, failed."""
        return self.items_status([item_id])[0]

    def items_status(self, item_ids: list[str] | None = None) -> list[ItemStatus]:
        store, items = self.wb.store, self._items
        info, state = self.info, items.job(self.id)
        all_items = items.all(self.id)
        by_id = {i.item_id: i for i in all_items}
        wanted = item_ids if item_ids is not None else [i.item_id for i in all_items]
        for iid in wanted:
            if iid not in by_id:
                raise KeyError(f"no recording {iid!r} in job {self.id}")
        spec = self.spec
        rates = load_rates(store, *rate_keys(spec, resolve_device(spec.device)))
        running = info.status in RUNNING
        if not running:
            state = state.model_copy(update={"phase": None, "phase_started": None})
        plan = estimate_waits(all_items, state, rates)
        out = []
        for iid in wanted:
            out.append(self._one(by_id[iid], all_items, state, plan.get(iid), rates.basis))
        return out

    def _one(self, it: Item, all_items: list[Item], state: Any, plan: dict[str, Any] | None,
             basis: str) -> ItemStatus:
        common = dict(item_id=it.item_id, file=it.name, batch_size=state.batch_size)
        if it.state == "done":
            return ItemStatus(**common, state="done", batch=(it.batch or 0) + 1,
                              result={"transcript": (it.transcript or {}).get("text", ""),
                                      **(it.result or {})},
                              message=f"done: overall {(it.result or {}).get('overall')}")
        if it.state == "failed":
            return ItemStatus(**common, state="failed", batch=None if it.batch is None else it.batch + 1,
                              reason=it.error, message=f"failed: {it.error}")
        ahead = sum(1 for x in all_items if x.seq < it.seq and not x.finished)
        plan = plan or {}
        batch = plan.get("batch", it.batch)
        eta = plan.get("eta_s")
        here = state.phase_batch is not None and state.phase_batch == it.batch
        if here and state.phase == "stt" and it.state != "transcribed":
            label = "transcribing"
        elif here and state.phase == "llm":
            label = "evaluating"
        elif it.state in ("transcribing", "evaluating"):
            label = it.state
        else:
            label = "waiting"
        b1 = None if batch is None else batch + 1
        pos = plan.get("position_in_batch")
        when = "" if eta is None else f", about {_minutes(eta)} to your result"
        if label == "waiting":
            what = "transcribed, waiting for evaluation" if it.state == "transcribed" else "waiting"
            msg = (f"{what}: {_ordinal(ahead + 1)} in line, batch {b1}"
                   f" (position {pos} of {state.batch_size}){when}")
        else:
            msg = f"{label}: batch {b1}, position {pos}{when}"
        return ItemStatus(**common, state=label, batch=b1, position_in_batch=pos,  # type: ignore[arg-type]
                          queue_position=ahead + 1, eta_s=eta, eta_basis=basis, message=msg)

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


def results_frame(store: Store, job_id: str) -> pd.DataFrame:
    """One row per recording: transcript, per-criterion scores, overall, feedback, timings."""
    items = Items(store)
    spec = PhasedSpec.model_validate(store.get(job_id).spec)
    rows = []
    for it in items.all(job_id):
        tr, ev = it.transcript or {}, it.result or {}
        row: dict[str, Any] = {
            "item_id": it.item_id, "file": it.name, "batch": None if it.batch is None else it.batch + 1,
            "state": it.state, "transcript": tr.get("text"), "language": tr.get("language"),
            "audio_s": it.audio_s,
        }
        for c in spec.rubric.criteria:
            row[f"score_{c.name}"] = (ev.get("scores") or {}).get(c.name)
        row.update(
            overall=ev.get("overall"), feedback=ev.get("feedback"), error=it.error,
            stt_s=tr.get("elapsed_s"),
            eval_s=(None if it.eval_finished is None or it.eval_started is None
                    else round(it.eval_finished - it.eval_started, 3)),
            wait_s=(None if it.eval_finished is None else round(it.eval_finished - it.added_at, 3)),
            added_at=pd.to_datetime(it.added_at, unit="s"),
        )
        rows.append(row)
    return pd.DataFrame(rows)


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

        Everything is checked first — settings, rubric, every file — and refused whole
        with the reasons; nothing is queued unless all of it is good.
        """
        labels = job_labels(name, tags)  # the dashboard's label for the job
        spec = _spec(rubric, batch_size, stt, llm, device, residue_bound_mib)
        store = self.wb.store
        rows = prepare_items(store, files_or_dir)
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
        store.transition(job_id, Status.QUEUED,
                         message=f"{len(rows)} recordings in batches of {spec.batch_size}")
        store.add_event(job_id, "phased_submitted", {"items": len(rows), "at": time.time()})
        return PhasedJob(self.wb, job_id)
