"""`mode="batch"`: the same grid through the Gemini Batch API (half the price, hours not seconds).

Two stages, because the judge needs the answers: (1) one batch per Gemini model with
every unanswered call of that model, local models answering in realtime meanwhile;
(2) one batch with every judge call whose answers are in (more rounds only for judge
outputs that were not valid JSON, up to `judge_retries`). Each submitted batch is a row
in the store (name, stage, model, call ids in request order) before it is polled, so a
resumed job polls the batches it already paid for instead of submitting them again, and
only calls without a row and without an open batch are submitted. A user's cancel cancels
the open batches on the service (their calls go into a new batch on resume); a worker
that stops or dies leaves them running, and the next run picks them up.
"""

from __future__ import annotations

import asyncio
import logging

from workbench.engines.gemini_batch import TERMINAL_BATCH_STATES
from workbench.engines.gemini_files import MediaFailed
from workbench.engines.gemini_messages import GeminiRequest
from workbench.engines.ratelimit import Stopped, sleep_or_stop
from workbench.grid import tables
from workbench.grid.callers import CallInput, GeminiCaller
from workbench.grid.runner import GridRunner
from workbench.grid.spec import CellRef, ModelSpec, call_id, judge_call_id
from workbench.grid.tables import BatchRow, CallRow
from workbench.store import Status

log = logging.getLogger("workbench.grid")

#: one entry of a batch: the cell, the call's input, and (judge) label → model
Item = tuple[CellRef, CallInput, dict[str, str] | None]


class BatchModeRunner(GridRunner):
    """The grid runner with the cells sent as Gemini batches instead of realtime calls."""

    async def work(self) -> None:
        await BatchRun(self).run()


class BatchRun:
    def __init__(self, runner: GridRunner) -> None:
        self.r = runner
        self.job_id = runner.ctx.id
        self.todo = [c for c in runner.spec.cells if c.id not in runner.done_cells]

    async def run(self) -> None:
        r = self.r
        await self.answers()
        if r.stopping:
            return
        if r.spec.judge is not None:
            await self.judge()
            if r.stopping:
                return
        for cell in self.todo:
            r.record_cell(cell)

    # -- stage 1 ---------------------------------------------------------------------------
    async def answers(self) -> None:
        r = self.r
        groups: dict[str, list[Item]] = {}
        local: list[tuple[CellRef, ModelSpec]] = []
        for cell in self.todo:
            for m in r.spec.models:
                if call_id(cell.id, m.label) in r.rows:
                    continue
                if m.provider != "gemini":
                    local.append((cell, m))
                    continue
                ci = r.model_input(cell, m)
                if isinstance(ci, CallRow):
                    r.save(ci)
                else:
                    groups.setdefault(m.label, []).append((cell, ci, None))
        expected = sum(len(v) for v in groups.values()) + len(local)
        served = [(cell, m) for cell, m in local if m.provider != "vllm"]
        results = await asyncio.gather(
            self.batches("answers", groups, 10.0, 50.0, expected),
            *(r.model_call(cell, m) for cell, m in served),
            *([r.local.answers_only(self.todo)] if r.local is not None else []),
            return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException) and not isinstance(res, Stopped):
                raise res

    # -- stage 2 ---------------------------------------------------------------------------
    async def judge(self) -> None:
        r = self.r
        judge = r.spec.judge
        assert judge is not None
        rounds = 1 + r.settings.judge_retries
        for round_no in range(1, rounds + 1):
            items: list[Item] = []
            for cell in self.todo:
                if judge_call_id(cell.id) in r.rows:
                    continue
                built = r.judge_input(cell)
                if built is not None:
                    items.append((cell, built[0], built[1]))
            if not items:
                return
            if judge.provider == "vllm" and r.local is not None:
                await r.local.judge_only([cell for cell, _, _ in items])
                return
            if judge.provider != "gemini":
                await asyncio.gather(*(r.judge_call(cell) for cell, _, _ in items))
                return
            await self.batches(f"judge-{round_no}", {judge.label: items}, 50.0, 90.0,
                               len(items), last_round=round_no == rounds)
            if r.stopping:
                return

    # -- batches of one stage --------------------------------------------------------------
    async def batches(self, stage: str, groups: dict[str, list[Item]], lo: float, hi: float,
                      expected: int, last_round: bool = True) -> None:
        """Submit (or find) one batch per model, poll all until done, save the rows."""
        r = self.r
        models = {m.label: m for m in r.spec.all_models}
        open_batches: list[tuple[BatchRow, ModelSpec, list[Item]]] = []
        known = tables.batches(r.store, self.job_id)
        for label, items in groups.items():
            model = models[label]
            by_id = {ci.key: (cell, ci, labels) for cell, ci, labels in items}
            for b in known:  # batches a previous run submitted and did not finish
                if b.stage == stage and b.model == label and b.state not in TERMINAL_BATCH_STATES \
                        and b.state != "CANCELLED_BY_WORKBENCH":
                    mine = [by_id.pop(k) for k in b.call_ids if k in by_id]
                    if mine:
                        open_batches.append((b, model, mine))
            fresh = await self.with_files(model, list(by_id.values()))
            if fresh and not r.stopping:
                b = await self.submit(stage, model, fresh)
                open_batches.append((b, model, fresh))
        await self.poll(open_batches, lo, hi, expected, last_round)

    async def with_files(self, model: ModelSpec, items: list[Item]) -> list[Item]:
        """Upload each item's media (once); items whose media failed get their error row."""
        r = self.r
        caller = r.callers[model.label]
        assert isinstance(caller, GeminiCaller)
        ok: list[Item] = []
        for cell, ci, labels in items:
            if ci.media is not None:
                try:
                    await caller.file_for(ci.media, r.stop)
                except MediaFailed as e:
                    role = "judge" if labels is not None else "model"
                    r.save(r.error_row(cell, model, role, str(e), "media", "media"))
                    continue
                except Stopped:
                    return []
            ok.append((cell, ci, labels))
        return ok

    async def requests(self, model: ModelSpec, items: list[Item]) -> list[GeminiRequest]:
        caller = self.r.callers[model.label]
        assert isinstance(caller, GeminiCaller)
        out = []
        for _, ci, _ in items:
            files = [await caller.file_for(ci.media, self.r.stop)] if ci.media is not None else []
            out.append(GeminiRequest(ci.key, ci.prompt, files, ci.schema, ci.system, model.params))
        return out

    async def submit(self, stage: str, model: ModelSpec, items: list[Item]) -> BatchRow:
        r = self.r
        assert r.gemini is not None
        reqs = await self.requests(model, items)
        name = await r.gemini.submit_batch(model.name, reqs,
                                           display_name=f"workbench {self.job_id} {stage}")
        row = BatchRow(name=name, stage=stage, model=model.label,
                       call_ids=[ci.key for _, ci, _ in items], state="JOB_STATE_PENDING")
        tables.add_batch(r.store, self.job_id, row)
        return row

    async def poll(self, open_batches: list[tuple[BatchRow, ModelSpec, list[Item]]],
                   lo: float, hi: float, expected: int, last_round: bool) -> None:
        r = self.r
        assert r.gemini is not None
        delay = r.settings.batch_poll_s
        waiting = list(open_batches)
        saved = 0
        while waiting:
            try:
                await sleep_or_stop(delay, r.stop)
            except Stopped:
                if r.store.get(self.job_id).status is not Status.CANCELLING:
                    return  # the worker is stopping, not the user: the batches keep running
                for b, _, _ in waiting:
                    try:
                        await r.gemini.cancel_batch(b.name)
                    except Exception:  # already finished or gone: nothing to cancel
                        log.warning("could not cancel batch %s", b.name, exc_info=True)
                    tables.set_batch_state(r.store, self.job_id, b.name, "CANCELLED_BY_WORKBENCH")
                return
            delay = min(delay * 1.5, 10 * r.settings.batch_poll_s)
            still = []
            for b, model, items in waiting:
                reqs = [GeminiRequest(ci.key, "", (), ci.schema) for _, ci, _ in items]
                poll = await r.gemini.poll_batch(b.name, model.name, reqs)
                tables.set_batch_state(r.store, self.job_id, b.name, poll.state)
                if not poll.done:
                    still.append((b, model, items))
                    continue
                for cell, ci, labels in items:
                    out = poll.results[ci.key]
                    if out.error_code == "parse" and not last_round:
                        continue  # the judge gets another round
                    role = "judge" if labels is not None else "model"
                    r.save(r.row_from(cell, model, role, out, input_kind=r.input_kind(model, ci),
                                      mode="batch", batch_name=b.name, labels=labels))
                    saved += 1
            waiting = still
            states = ", ".join(sorted({tables_state(r, b.name) for b, _, _ in waiting})) or "done"
            r.progress(f"Gemini batch mode: {saved}/{expected} calls answered ({states})",
                       lo + (hi - lo) * saved / max(1, expected))


def tables_state(r: GridRunner, name: str) -> str:
    for b in tables.batches(r.store, r.ctx.id):
        if b.name == name:
            return b.state.removeprefix("JOB_STATE_").lower()
    return "?"
