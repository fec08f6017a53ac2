"""The grid runner: cells overlap, bounded only by rate limits and in-flight settings.

The seed ran one cell at a time (its models in parallel, then the judge), so a 20-cell
grid spent most of its wall time waiting on one slow answer while every other model sat
idle. Here every cell is a task: a semaphore bounds the cells in flight, another bounds
the calls in flight, and each model's token bucket keeps its rate. Set
`max_cells_in_flight=1` to get the seed's order back (the benchmark does).

Progress follows the seed: 0–5 % init, 5–10 % validation (media, transcripts), 10–90 %
combinations ("Processing combinations: 7/15 done; running a.mp4 × Summarise…"), 90–100 %
finalize; it never goes back, a resume included (`grid.progress`). Local (vLLM) models do
not overlap: they take the device in turn (`grid.local`).
Every finished call is a row in the store before anything depends on it; a finished cell
is a line in output.jsonl (or errors.jsonl). Resume skips finished cells, sends only the
calls without a row, and sends again the calls that ended in error (with the judge of
their cell). Cancel stops new calls at once (rate-limiter waits included); calls already
on the wire finish and are kept.
"""

from __future__ import annotations

import asyncio
import logging
import time

from workbench.engines.base import ChatEngine, Outcome
from workbench.engines.gemini import GeminiEngine
from workbench.engines.gemini_client import MissingApiKey, api_key_from_env
from workbench.engines.ratelimit import RateLimiter, Stopped
from workbench.errors import WorkbenchError
from workbench.grid import tables
from workbench.grid.callers import Caller, CallInput, EngineBridge, EngineCaller, GeminiCaller
from workbench.grid.geval import judge_cell
from workbench.grid.judge import (
    JUDGE_SYSTEM,
    json_schema_for,
    judge_prompt,
    labels_for,
    schema_for,
    unmask,
)
from workbench.grid.local import LocalPhases, resolve_device, uses_local_phases
from workbench.grid.progress import GridProgress
from workbench.grid.results import cell_record, write_results
from workbench.grid.spec import CellRef, GridSpec, ModelSpec, call_id, judge_call_id
from workbench.grid.tables import CallRow
from workbench.grid.transcripts import transcribe
from workbench.runtime.context import JobContext

log = logging.getLogger("workbench.grid")


class GridRunner(GridProgress):
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.spec = GridSpec.model_validate(ctx.spec)
        self.settings = self.spec.settings
        self.media = self.spec.media_by_id()
        self.prompts = self.spec.prompts_by_id()
        self.total = len(self.spec.cells)
        self.rows: dict[str, CallRow] = {}
        self.done_cells: set[str] = set()
        self.transcripts: dict[str, str] = {}
        self.transcript_errors: dict[str, str] = {}
        self.callers: dict[str, Caller] = {}
        self.gemini: GeminiEngine | None = None
        self.bridges: list[EngineBridge] = []
        self.engines: list[ChatEngine] = []
        self.stop: asyncio.Event | None = None
        self.slots: asyncio.Semaphore | None = None
        self.in_flight = 0
        self.started = time.monotonic()
        #: progress never goes back: a resumed job starts from where it stood
        self.high = float(ctx.job.progress or 0.0)
        self.cell_status: dict[str, str] = {}
        self.running: dict[str, None] = {}
        self.local: LocalPhases | None = None
        #: what the job is doing now, for the progress message (local phases, judge)
        self.stage = ""

    # -- entry -----------------------------------------------------------------------------
    def run(self) -> None:
        asyncio.run(self.main())

    async def main(self) -> None:
        self.stop = asyncio.Event()
        watcher = asyncio.create_task(self._watch_cancel())
        try:
            self.init()
            await self.validate()
            if self.stop.is_set():
                return
            await self.work()
            self.finalize()
        finally:
            watcher.cancel()
            await self.close()

    async def _watch_cancel(self) -> None:
        assert self.stop is not None
        while not self.stop.is_set():
            if self.ctx.should_stop():
                self.stop.set()
                for b in self.bridges:
                    b.stop()
                return
            await asyncio.sleep(0.05)

    @property
    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    # -- 0–5 %: init -----------------------------------------------------------------------
    def init(self) -> None:
        spec = self.spec
        tables.ensure(self.store)
        rows = tables.calls(self.store, self.ctx.id)
        # a resume runs again what ended in error; what finished stays (first write wins)
        failed = [r for r in rows if not r.ok]
        reopened = {r.cell_id for r in failed}
        stale = [r.call_id for r in rows if r.role == "judge" and r.ok and r.cell_id in
                 {f.cell_id for f in failed if f.role == "model"}]  # judged without an answer
        if failed or stale:
            tables.forget_calls(self.store, self.ctx.id, [r.call_id for r in failed] + stale)
            rows = tables.calls(self.store, self.ctx.id)
            for log in (self.ctx.output, self.ctx.errors):  # one line per cell stays true
                log.supersede(lambda r: r.get("custom_id") in reopened,
                              self.ctx.dir / f"{log.path.stem}.superseded.jsonl")
        self.rows = {r.call_id: r for r in rows}
        self.cell_status = {rec["custom_id"]: rec.get("status", "ok")
                            for log in (self.ctx.output, self.ctx.errors) for rec in log.records()
                            if rec.get("custom_id") not in reopened}
        self.done_cells = set(self.cell_status) & {c.id for c in spec.cells}
        self.recount()
        if reopened:
            self.ctx.metrics["rerun_after_errors"] = sorted(reopened)
        judge = " + judge" if spec.judge else ""
        self.progress(f"Initializing: {self.total} combinations ({len(spec.media)} media ×"
                      f" {len(spec.prompts)} prompts), {len(spec.models)} models{judge},"
                      f" {spec.mode}", 2.0)

    # -- 5–10 %: validation ----------------------------------------------------------------
    async def validate(self) -> None:
        spec = self.spec
        self.progress("Validating media and models", 5.0)
        todo = [c for c in spec.cells if c.id not in self.done_cells]
        needed = {c.media for c in todo}
        missing = [self.media[m].name for m in sorted(needed) if not _exists(self.media[m].path)]
        if missing:
            raise WorkbenchError(f"stored media missing under {self.store.root / 'media'}:"
                                 f" {', '.join(missing)} (was the folder cleaned?)")
        if spec.uses("gemini"):
            if not api_key_from_env():
                raise MissingApiKey()
            self.gemini = GeminiEngine(self.settings.gemini_settings(spec.all_models),
                                       file_cache=tables.StoreFileCache(self.store))
        if spec.needs_transcripts() and todo:
            await self.transcribe(sorted(needed))
        await self.load_local_models()
        for m in spec.all_models:
            if m.provider == "gemini":
                assert self.gemini is not None
                self.callers[m.label] = GeminiCaller(self.gemini, m)
        self.slots = asyncio.Semaphore(self.settings.max_in_flight)
        self.progress("Validated", 10.0)

    async def transcribe(self, media_ids: list[str]) -> None:
        got = await transcribe(self.store, [self.media[m] for m in media_ids],
                               self.settings.stt_model, stopping=lambda: self.stopping,
                               progress=lambda msg, pct: self.progress(msg, pct),
                               device=resolve_device(self.settings.device),
                               isolation=self.settings.local_isolation, job_id=self.ctx.id)
        self.transcripts.update(got.texts)
        self.transcript_errors.update(got.errors)
        self.ctx.metrics.update(got.metrics)

    async def load_local_models(self) -> None:
        """OpenAI-compatible servers: one client per engine spec. vLLM models are not loaded
        here: they take the device in turn during the work (`grid.local`)."""
        from workbench.engines.pool import make_engine, release

        if uses_local_phases(self.spec):
            self.local = LocalPhases(self)
            await asyncio.to_thread(release)  # a pooled batch engine must not stay resident
        local = [m for m in self.spec.all_models if m.provider == "openai"]
        if not local:
            return
        by_key: dict[str, EngineBridge] = {}
        for m in local:
            espec = m.engine_spec()
            key = repr(sorted(espec.items()))
            if key not in by_key:
                self.progress(f"Loading local model {m.label}", 8.0)
                engine = make_engine(espec)
                await asyncio.to_thread(engine.load)
                self.engines.append(engine)
                by_key[key] = EngineBridge(engine, self.settings.local_window, m.label)
                self.bridges.append(by_key[key])
            limiter = RateLimiter(m.rpm) if (m.rpm or m.provider == "openai") else None
            if m.provider == "openai" and m.rpm is None:
                limiter = RateLimiter(self.settings.default_rpm)
            self.callers[m.label] = EngineCaller(by_key[key], m, limiter)

    # -- 10–90 %: cells --------------------------------------------------------------------
    async def work(self) -> None:
        """Every cell not done yet, realtime (batch mode: `grid.batch_mode` overrides this)."""
        await self.run_cells()

    async def run_cells(self) -> None:
        todo = [c for c in self.spec.cells if c.id not in self.done_cells]
        if self.local is not None:
            self.call_progress(force=True)
            await self.local.run(todo)
            return
        cell_slots = asyncio.Semaphore(self.settings.cells_in_flight(len(self.spec.models)))
        self.cell_progress()
        results = await asyncio.gather(*(self.run_cell(c, cell_slots) for c in todo),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, Stopped)]
        if errors:
            raise errors[0]

    async def run_cell(self, cell: CellRef, cell_slots: asyncio.Semaphore) -> None:
        async with cell_slots:
            if self.stopping:
                return
            self.running[cell.id] = None
            self.cell_progress()
            try:
                answers = await asyncio.gather(*(self.model_call(cell, m)
                                                 for m in self.spec.models),
                                               return_exceptions=True)
                for a in answers:
                    if isinstance(a, BaseException):
                        raise a
                if self.spec.judge is not None:
                    await self.judge_call(cell)
                self.running.pop(cell.id, None)
                self.record_cell(cell)
            finally:
                self.running.pop(cell.id, None)

    async def send(self, model: ModelSpec, ci: CallInput) -> Outcome:
        assert self.slots is not None
        async with self.slots:
            if self.stopping:
                raise Stopped()
            self.in_flight += 1
            try:
                return await self.callers[model.label].call(ci, self.stop)
            finally:
                self.in_flight -= 1

    # -- building calls (shared with batch mode) -------------------------------------------
    def model_input(self, cell: CellRef, m: ModelSpec) -> CallInput | CallRow:
        """What to send to `m` for `cell`, or a finished error row if it cannot be sent."""
        media, prompt = self.media[cell.media], self.prompts[cell.prompt]
        cid = call_id(cell.id, m.label)
        if m.sees_media:
            return CallInput(cid, prompt.text, media=media, system=self.settings.system)
        text = self.transcripts.get(media.id)
        if text is None:
            why = self.transcript_errors.get(media.id, f"no transcript of {media.name}")
            return self.error_row(cell, m, "model", why, "media", "transcript")
        body = (f"Transcript of the media file {media.name!r} (speech-to-text; the video itself"
                f" is not available to you):\n<transcript>\n{text}\n</transcript>\n\n{prompt.text}")
        return CallInput(cid, body, system=self.settings.system)

    def judge_input(self, cell: CellRef) -> tuple[CallInput, dict[str, str]] | None:
        """The judge call for `cell` over its successful answers; None if there are none."""
        judge = self.spec.judge
        assert judge is not None
        answers = {}
        for m in self.spec.models:
            row = self.rows.get(call_id(cell.id, m.label))
            if row is not None and row.ok:
                answers[m.label] = row.text
        if not answers:
            return None
        labels = labels_for(cell.id, list(answers))
        media, prompt = self.media[cell.media], self.prompts[cell.prompt]
        transcript = None if judge.sees_media else self.transcripts.get(media.id, "")
        text = judge_prompt(prompt.text, media.name,
                            {lab: answers[model] for lab, model in labels.items()}, transcript)
        with_media = judge.sees_media and self.settings.judge_sees_media
        ci = CallInput(judge_call_id(cell.id), text, media=media if with_media else None,
                       schema=schema_for(list(labels)),
                       json_schema=None if judge.provider == "gemini" else json_schema_for(
                           list(labels), self.settings.judge_text_chars),
                       system=JUDGE_SYSTEM)
        return ci, labels

    def row_from(self, cell: CellRef, m: ModelSpec, role: str, out: Outcome, *,
                 input_kind: str, mode: str = "realtime", batch_name: str | None = None,
                 labels: dict[str, str] | None = None) -> CallRow:
        parsed = out.parsed
        if role == "judge" and parsed is not None and labels is not None:
            parsed = unmask(parsed, labels)
        return CallRow.of(
            out, parsed=parsed, wait_s=round(out.wait_s, 4),
            call_id=judge_call_id(cell.id) if role == "judge" else call_id(cell.id, m.label),
            cell_id=cell.id, role=role, model=m.label, provider=m.provider,
            input_kind=input_kind, mode=mode, batch_name=batch_name, finished_at=time.time())

    def error_row(self, cell: CellRef, m: ModelSpec, role: str, error: str, code: str,
                  input_kind: str) -> CallRow:
        return self.row_from(cell, m, role, Outcome(error=error, error_code=code),
                             input_kind=input_kind)

    def input_kind(self, m: ModelSpec, ci: CallInput) -> str:
        if ci.media is not None:
            return "media"
        return "text" if m.sees_media else "transcript"

    def save(self, row: CallRow) -> CallRow:
        """The row goes to the store first; only then does anything use it."""
        if tables.insert_call(self.store, self.ctx.id, row):
            self.rows[row.call_id] = row
        else:  # recorded by an earlier run (cannot happen within one run): keep that one
            self.rows.setdefault(row.call_id, row)
        if self.local is not None:
            self.call_progress()
        return self.rows[row.call_id]

    # -- one call of each kind -------------------------------------------------------------
    async def model_call(self, cell: CellRef, m: ModelSpec) -> CallRow:
        cid = call_id(cell.id, m.label)
        if cid in self.rows:
            return self.rows[cid]
        ci = self.model_input(cell, m)
        if isinstance(ci, CallRow):
            return self.save(ci)
        out = await self.send(m, ci)
        return self.save(self.row_from(cell, m, "model", out, input_kind=self.input_kind(m, ci)))

    async def judge_call(self, cell: CellRef) -> CallRow | None:
        jid = judge_call_id(cell.id)
        if jid in self.rows:
            return self.rows[jid]
        built = self.judge_input(cell)
        if built is None:
            return None
        ci, labels = built
        judge = self.spec.judge
        assert judge is not None
        if judge.judges_by_logprobs:  # a base model: one scoring completion per answer
            prompt = self.prompts[cell.prompt]
            out = await judge_cell(self, cell, judge, prompt.text, self.media[cell.media].name,
                                   labels)
            return self.save(self.row_from(cell, judge, "judge", out, input_kind="transcript",
                                           labels=labels))
        attempts = 0
        out = Outcome()
        for _ in range(1 + self.settings.judge_retries):
            out = await self.send(judge, ci)
            attempts += out.attempts
            if out.error_code != "parse":
                break
        out.attempts = attempts
        return self.save(self.row_from(cell, judge, "judge", out,
                                       input_kind=self.input_kind(judge, ci), labels=labels))

    # -- cells done ------------------------------------------------------------------------
    def record_cell(self, cell: CellRef) -> None:
        rec = cell_record(self.spec, cell, self.rows)
        self.ctx.record(rec, error=rec["status"] != "ok")
        self.done_cells.add(cell.id)
        self.cell_status[cell.id] = rec["status"]
        self.recount()
        if self.local is not None:
            self.call_progress(force=len(self.done_cells) == self.total)
        else:
            self.cell_progress()

    # -- 90–100 %: finalize ----------------------------------------------------------------
    def finalize(self) -> None:
        if self.stopping:  # cancelled: the finished cells are written, no 90–100 % phase
            write_results(self.store, self.ctx.job, self.ctx.dir / "results.json")
            return
        self.progress("Finalizing: writing results", 90.0)
        totals = write_results(self.store, self.ctx.job, self.ctx.dir / "results.json")
        self.progress("Finalized", 99.0, wall_s=round(time.monotonic() - self.started, 3),
                      totals={k: v for k, v in totals.items() if not isinstance(v, dict)})

    async def close(self) -> None:
        if self.gemini is not None:
            await self.gemini.aclose()
        for b in self.bridges:
            b.close()
        for e in self.engines:
            memory = await asyncio.to_thread(e.unload)
            self.ctx.metrics.setdefault("local_memory", []).append(
                {k: v for k, v in (memory or {}).items() if isinstance(v, int | float)})


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).is_file()
