"""Local models one at a time: each vLLM model of a grid takes the device in turn.

Loading every local model of a grid at once is an out-of-memory on an 8 GB card. So
local models share the device through the phase lock (`runtime.phase`, the phased job's
mechanism): every cell for the first local model in one phase (lock → load → answer →
unload → memory measured, residue recorded → release), then the next model, ..., then
the judge. Models that share an engine (the same model at two temperatures) share a
phase; the judge's engine comes last, so a judge that also competes is loaded once.

Remote models (Gemini, OpenAI-compatible servers) hold no device: they answer meanwhile.
A cell is recorded when its judge has scored it (or, without a judge, when all its
answers are in), so with local models cells finish together at the end, not one by one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from workbench.engines.ratelimit import Stopped
from workbench.grid.callers import EngineBridge, EngineCaller
from workbench.grid.spec import CellRef, GridSpec, ModelSpec, call_id
from workbench.runtime.child import EngineSpec
from workbench.runtime.lock import PhaseCancelled
from workbench.runtime.phase import Phase

if TYPE_CHECKING:
    from workbench.grid.callers import Caller
    from workbench.grid.spec import GridSettings
    from workbench.grid.tables import CallRow
    from workbench.runtime.context import JobContext
    from workbench.store import Store


class Runner(Protocol):
    """What the local phases use of the grid runner (`grid.runner.GridRunner`)."""

    store: Store
    ctx: JobContext
    spec: GridSpec
    settings: GridSettings
    rows: dict[str, CallRow]
    callers: dict[str, Caller]
    bridges: list[EngineBridge]
    stage: str

    @property
    def stopping(self) -> bool: ...

    def progress(self, message: str, percent: float, force: bool = True, **metrics: Any) -> None: ...

    def percent_now(self) -> float: ...

    async def model_call(self, cell: CellRef, m: ModelSpec) -> CallRow: ...

    async def judge_call(self, cell: CellRef) -> CallRow | None: ...

    def record_cell(self, cell: CellRef) -> None: ...

VLLM_TARGET = "workbench.engines.vllm:VLLMEngine"
MiB = 1 << 20


@dataclass
class LocalGroup:
    """One local engine: the competing models it serves, and the judge if it is the judge's."""

    key: str
    engine: EngineSpec
    models: list[ModelSpec] = field(default_factory=list)
    judge: ModelSpec | None = None

    @property
    def label(self) -> str:
        names = [m.label for m in self.models] + ([f"judge {self.judge.label}"] if self.judge else [])
        return " + ".join(names)


def engine_for(m: ModelSpec) -> EngineSpec:
    """How a phase builds this model's engine: vLLM, or another registered pool provider."""
    spec = m.engine_spec()
    if spec.get("provider", "vllm") != "vllm":
        return EngineSpec(target="workbench.grid.local:pool_engine", kwargs=spec)
    return EngineSpec(target=VLLM_TARGET, kwargs={k: v for k, v in spec.items() if k != "provider"})


def pool_engine(**spec: Any) -> Any:
    """Build an engine by its pool provider name (`engines.pool.register_provider`)."""
    from workbench.engines.pool import make_engine

    return make_engine(spec)


def local_groups(spec: GridSpec) -> list[LocalGroup]:
    """The phases a grid's local models need, in order: competitors, then the judge's engine."""
    groups: dict[str, LocalGroup] = {}
    for m in spec.models:
        if m.provider == "vllm":
            e = engine_for(m)
            groups.setdefault(e.model_dump_json(), LocalGroup(e.model_dump_json(), e)).models.append(m)
    j = spec.judge
    if j is not None and j.provider == "vllm":
        e = engine_for(j)
        groups.setdefault(e.model_dump_json(), LocalGroup(e.model_dump_json(), e)).judge = j
    return sorted(groups.values(), key=lambda g: g.judge is not None)  # stable: judge last


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    from workbench.device import has_gpu

    return "cuda:0" if has_gpu() else "cpu"


def uses_local_phases(spec: GridSpec) -> bool:
    return any(m.provider == "vllm" for m in spec.all_models)


class LocalPhases:
    """The realtime grid when some model is local: remote answers meanwhile, local ones in turn."""

    def __init__(self, runner: Runner) -> None:
        self.r = runner
        self.groups = local_groups(runner.spec)
        self.device = resolve_device(runner.settings.device)

    async def run(self, todo: list[CellRef]) -> None:
        r = self.r
        remote = [m for m in r.spec.models if m.provider != "vllm"]
        answers = asyncio.gather(*(r.model_call(c, m) for c in todo for m in remote),
                                 return_exceptions=True)
        judge_in_phase = False
        try:
            for n, group in enumerate(self.groups):
                if r.stopping:
                    break
                if group.judge is not None:
                    judge_in_phase = True
                await self.phase(n, group, todo, after_answers=answers if group.judge else None)
        except Stopped:
            pass
        finally:
            for res in await answers:
                if isinstance(res, BaseException) and not isinstance(res, Stopped):
                    raise res
        if r.stopping or judge_in_phase:
            return
        if r.spec.judge is not None:  # a remote judge: per cell, now that all answers are in
            r.stage = f"Judge {r.spec.judge.label}"
            await asyncio.gather(*(self.judge_and_record(c) for c in todo))
        else:
            for c in todo:
                r.record_cell(c)

    async def answers_only(self, todo: list[CellRef]) -> None:
        """Batch mode: every local competitor's phase (Gemini batches run meanwhile)."""
        for n, g in enumerate(self.groups):
            if self.r.stopping:
                return
            if g.models:
                await self.phase(n, LocalGroup(g.key, g.engine, g.models, None), todo, None)

    async def judge_only(self, todo: list[CellRef]) -> None:
        """Batch mode: the local judge's phase over every cell's answers (no cell recorded)."""
        for n, g in enumerate(self.groups):
            if g.judge is not None and not self.r.stopping:
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                done.set_result(None)
                await self.phase(n, LocalGroup(g.key, g.engine, [], g.judge), todo, done,
                                 record=False)

    async def judge_and_record(self, cell: CellRef, record: bool = True) -> None:
        try:
            await self.r.judge_call(cell)
        except Stopped:
            return
        if record:
            self.r.record_cell(cell)

    async def phase(self, n: int, group: LocalGroup, todo: list[CellRef],
                    after_answers: Awaitable[Any] | None, *, record: bool = True) -> None:
        """One local engine on the device: its answers for every cell, then (judge) scores."""
        r = self.r
        calls = [(c, m) for c in todo for m in group.models if call_id(c.id, m.label) not in r.rows]
        if not calls and group.judge is None:
            return
        where = f"{n + 1} of {len(self.groups)}"
        phase = Phase(r.store, "llm", group.engine, device=self.device,
                      isolation=r.settings.local_isolation, job_id=r.ctx.id, batch=n,
                      should_stop=r.ctx.should_stop,
                      on_wait=lambda holder: r.progress(
                          f"Local model {group.label} ({where}): waiting for device"
                          f" {self.device} (held by {(holder or {}).get('job_id') or 'another process'})",
                          r.percent_now()))
        r.stage = f"Loading local model {group.label} ({where})"
        r.progress(r.stage, r.percent_now())
        try:
            engine = await asyncio.to_thread(phase.__enter__)
        except PhaseCancelled:  # stopped while waiting for the device
            raise Stopped() from None
        bridge = EngineBridge(engine, r.settings.local_window, group.label,
                              pass_stop=phase.isolation == "inline",
                              kill=getattr(engine, "kill", None))
        r.bridges.append(bridge)
        served = group.models + ([group.judge] if group.judge else [])
        for m in served:
            r.callers[m.label] = EngineCaller(bridge, m, None)
        error: BaseException | None = None
        try:
            r.stage = f"Local model {group.label} ({where})"
            r.progress(r.stage, r.percent_now())
            results = await asyncio.gather(*(r.model_call(c, m) for c, m in calls),
                                           return_exceptions=True)
            for res in results:
                if isinstance(res, BaseException) and not isinstance(res, Stopped):
                    raise res
            if group.judge is not None and after_answers is not None and not r.stopping:
                await asyncio.shield(after_answers)  # remote answers are part of each cell
                r.stage = f"Judge {group.judge.label} ({where})"
                r.progress(r.stage, r.percent_now())
                await asyncio.gather(*(self.judge_and_record(c, record) for c in todo))
            phase.work = {"models": [m.label for m in served], "calls": len(calls)}
        except BaseException as e:
            error = e
            raise
        finally:
            bridge.close()
            r.bridges.remove(bridge)
            for m in served:
                r.callers.pop(m.label, None)
            await asyncio.to_thread(phase.__exit__, type(error) if error else None, error, None)
            rec = phase.record
            r.ctx.metrics.setdefault("local_phases", []).append({
                "models": [m.label for m in served], "isolation": rec.isolation,
                "residue_mib": None if rec.residue is None else round(rec.residue / MiB, 2),
                "load_s": None if rec.loaded_at is None or rec.load_start is None
                else round(rec.loaded_at - rec.load_start, 2)})
