"""The phased runner: for each batch, an STT phase, then an evaluation phase.

    batch 1: [lock → load whisper → transcribe 10 → unload → check memory → unlock]
             [lock → load LLM → score 10 transcripts → unload → check memory → unlock]
    batch 2: ... only now

Exactly once: a finished item is written to output.jsonl (or errors.jsonl) before the
items table moves; transcripts are saved per item as they come. After a crash the
runner reconciles the table with the files and resumes the open batch: transcribed
items are not transcribed again and evaluated items are not evaluated again.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from workbench.engines.whisper import MediaError, NoAudioTrack
from workbench.phased import geval
from workbench.phased.eta import estimate, load_rates, record_rate
from workbench.phased.evaluation import EvaluationError, evaluation_request, parse_evaluation
from workbench.phased.items import Item, Items
from workbench.phased.spec import PhasedSpec
from workbench.runtime.child import EngineSpec
from workbench.runtime.context import JobContext
from workbench.runtime.phase import Phase, PhaseRecord
from workbench.runtime.progress import loading
from workbench.store import Status

log = logging.getLogger("workbench.phased")
MiB = 1 << 20


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    from workbench.engines.whisper import default_device

    return "cuda:0" if default_device() == "cuda" else "cpu"


def llm_engine_spec(spec: PhasedSpec, device: str) -> EngineSpec:
    """The evaluating engine's constructor arguments, with vLLM's CPU defaults filled in.

    Embedded model names (e.g. the demo Gemma) are prepared into folders first. On CPU,
    vLLM needs float32 and a bounded context (RECIPES); the user's options win.
    """
    es = spec.llm.engine_spec()
    if spec.llm.engine == "gemini":  # structured output needs the rubric's pydantic model
        return EngineSpec(target=es.target, kwargs={**es.kwargs, "rubric": spec.rubric.model_dump()})
    if spec.llm.engine != "vllm":
        return es
    from workbench import models

    path = models.resolve(spec.llm.model)
    kw = {**es.kwargs, "model": path}
    if device == "cpu":
        kw.setdefault("dtype", "float32")
        cfg = Path(path) / "config.json"
        if "max_model_len" not in kw and cfg.is_file():
            c = json.loads(cfg.read_text())
            n = c.get("text_config", c).get("max_position_embeddings")
            kw["max_model_len"] = min(int(n), models.CPU_MAX_MODEL_LEN) if n else models.CPU_MAX_MODEL_LEN
    return EngineSpec(target=es.target, kwargs=kw)


def rate_keys(spec: PhasedSpec, device: str) -> tuple[str, str]:
    """The names rates are kept under: which model on which device."""
    return f"{device}|{spec.stt.engine_spec().key()}", f"{device}|{spec.llm.engine_spec().key()}"


class PhasedRunner:
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.spec = PhasedSpec.model_validate(ctx.spec)
        self.items = Items(ctx.store)
        self.device = resolve_device(self.spec.device)
        self.stt_key, self.llm_key = rate_keys(self.spec, self.device)

    @property
    def job_id(self) -> str:
        return self.ctx.id

    # -- the loop -------------------------------------------------------------------------
    def job_eta(self) -> float | None:
        """When the last recording will be done: the largest ETA of the students' table, so
        the job's row says what the table says (published by the context at each flush)."""
        plan = estimate(self.items.all(self.job_id), self.items.job(self.job_id),
                        load_rates(self.ctx.store, self.stt_key, self.llm_key))
        etas = [p["eta_s"] for p in plan.values() if p.get("eta_s") is not None]
        return max(etas) if etas else None

    def run(self) -> None:
        ctx = self.ctx
        ctx.eta_source = self.job_eta
        self.items.reconcile(self.job_id, {r["custom_id"]: r for r in ctx.output.records()},
                             {r["custom_id"]: r for r in ctx.errors.records()})
        while not ctx.should_stop():
            self.record_intake_failures()
            b = self.items.open_batch(self.job_id)
            if b is None:
                b = self.items.form_next_batch(self.job_id)
                if b is None:
                    break  # nothing queued: the job no longer accepts items
            ctx.set_total(len(self.items.all(self.job_id)))
            self.stt_phase(b)
            if ctx.should_stop():
                break
            self.eval_phase(b)
        self.items.set_phase(self.job_id, None, None)

    def record_intake_failures(self) -> None:
        """Items created failed at submission (unreadable files) get their error line."""
        done = self.ctx.done_ids()
        for it in self.items.intake_failures(self.job_id):
            if it.item_id not in done:
                self.ctx.record({"custom_id": it.item_id, "item_id": it.item_id, "file": it.name,
                                 "batch": None, "phase": "intake",
                                 "error": {"code": it.error_code or "unreadable_media",
                                           "message": it.error}}, error=True)

    def say(self, message: str, *, force: bool = True, **metrics: Any) -> None:
        """Progress in words; once a cancel is asked for, the message keeps saying so."""
        ctx = self.ctx
        if not ctx.cancel_requested.is_set() \
                and ctx.store.get(ctx.id).status is Status.CANCELLING:
            ctx.cancel_requested.set()  # asked before the next heartbeat says so
        if self.ctx.cancel_requested.is_set():
            message = f"cancelling (finishing the current step): {message}"
        self.ctx.progress(message, force=force, **metrics)

    def _phase(self, name: str, b: int, what: str) -> Phase:
        """Batch `b` enters phase `name` (the students see "loading `what`"); its Phase."""
        self.items.set_phase(self.job_id, name, b)
        self.say(f"batch {b + 1}: loading {what}", phase=name, batch=b + 1)
        settings = self.spec.stt if name == "stt" else self.spec.llm
        engine = (self.spec.stt.engine_spec() if name == "stt"
                  else llm_engine_spec(self.spec, self.device))
        return Phase(self.ctx.store, name, engine, device=self.device,
                     isolation=settings.isolation, job_id=self.job_id, batch=b,
                     residue_bound=self.spec.residue_bound_mib * MiB,
                     should_stop=self.ctx.should_stop,
                     on_wait=lambda holder: self.say(
                         f"batch {b + 1}: waiting for device {self.device}"
                         f" (held by {(holder or {}).get('job_id') or 'another process'})"))

    def _fail(self, it: Item, b: int, phase: str, code: str, message: str) -> None:
        self.ctx.record({"custom_id": it.item_id, "item_id": it.item_id, "file": it.name,
                         "batch": b, "phase": phase, "error": {"code": code, "message": message}},
                        error=True)
        self.items.update(self.job_id, it.item_id, state="failed", error=message)

    def _learn_switch(self, name: str, rec: PhaseRecord) -> None:
        if None not in (rec.load_start, rec.loaded_at, rec.unload_start, rec.unloaded_at):
            switch = (rec.loaded_at - rec.load_start) + (rec.unloaded_at - rec.unload_start)  # type: ignore[operator]
            self.learn(f"{name}_switch_s", self.stt_key if name == "stt" else self.llm_key,
                       switch, rec.batch)

    def learn(self, name: str, key: str, value: float, batch: int | None) -> None:
        record_rate(self.ctx.store, name, key, value, job_id=self.job_id, batch=batch)

    # -- STT --------------------------------------------------------------------------------
    def stt_phase(self, b: int) -> None:
        todo = [i for i in self.items.batch(self.job_id, b) if i.state in ("assigned", "transcribing")]
        if not todo:
            return
        ctx = self.ctx
        phase = self._phase("stt", b, "speech-to-text")
        audio_s, work_s, n, stopped = 0.0, 0.0, 0, False
        with loading(ctx, f"batch {b + 1}: loading speech-to-text", step=phase,
                     then=f"batch {b + 1}: transcribing {len(todo)} recordings") as engine:
            t0 = time.monotonic()
            for k, it in enumerate(todo):
                if ctx.should_stop():
                    stopped = True
                    break
                self.items.update(self.job_id, it.item_id, state="transcribing",
                                  stt_started=time.time())
                self.say(f"batch {b + 1}: transcribing {k + 1}/{len(todo)} ({it.name})",
                         force=False)
                try:
                    tr = engine.transcribe(it.path)
                except NoAudioTrack as e:
                    self._fail(it, b, "stt", "no_audio_track", str(e).replace(it.path, it.name))
                    continue
                except MediaError as e:
                    self._fail(it, b, "stt", "unreadable_media", str(e).replace(it.path, it.name))
                    continue
                data = tr.model_dump()
                data["path"] = it.name
                self.items.update(self.job_id, it.item_id, state="transcribed",
                                  stt_finished=time.time(), transcript=data,
                                  audio_s=tr.duration_s)
                audio_s += tr.duration_s
                n += 1
            work_s = time.monotonic() - t0
            phase.work = {"items": n, "audio_s": round(audio_s, 3), "work_s": round(work_s, 3)}
        if audio_s > 0 and work_s > 0 and not stopped:
            self.learn("stt_audio_per_s", self.stt_key, audio_s / work_s, b)
        self._learn_switch("stt", phase.record)

    # -- evaluation -------------------------------------------------------------------------
    def eval_phase(self, b: int) -> None:
        done = self.ctx.done_ids()
        todo = [i for i in self.items.batch(self.job_id, b)
                if i.state in ("transcribed", "evaluating") and i.item_id not in done]
        if not todo:
            return
        ctx, spec = self.ctx, self.spec
        by_id = {i.item_id: i for i in todo}
        logprobs = spec.llm.uses_logprobs  # a base model: its next word's probabilities
        build = geval.request if logprobs else evaluation_request
        reqs = [build(i.item_id, (i.transcript or {}).get("text", ""), spec.rubric, spec.llm)
                for i in todo]
        phase = self._phase("llm", b, "the evaluation model")
        tokens, n, work_s = 0, 0, 0.0
        with loading(ctx, f"batch {b + 1}: loading the evaluation model", step=phase,
                     then=f"batch {b + 1}: evaluating {len(todo)} transcripts") as engine:
            now = time.time()
            for it in todo:
                self.items.update(self.job_id, it.item_id, state="evaluating", eval_started=now)
            kw: dict[str, Any] = {"window": spec.llm.window} if spec.llm.window else {}
            t0 = time.monotonic()
            stream = engine.chat(reqs, **kw)
            try:
                for res in stream:
                    it = by_id[res.custom_id]
                    tokens += res.completion_tokens
                    n += 1
                    try:
                        ev = (geval.evaluation(res, spec.rubric) if logprobs
                              else parse_evaluation(res, spec.rubric))
                    except EvaluationError as e:
                        self._fail(it, b, "llm", "invalid_evaluation", str(e))
                    else:
                        self._done(it, b, ev, res)
                    self.say(f"batch {b + 1}: evaluated {n}/{len(todo)}", force=False)
                    if ctx.should_stop():
                        break
            finally:
                close = getattr(stream, "close", None)
                if callable(close):
                    close()
            work_s = time.monotonic() - t0
            phase.work = {"items": n, "completion_tokens": tokens, "work_s": round(work_s, 3),
                          "scoring": "logprobs" if logprobs else "json"}
        if n and n == len(todo) and work_s > 0:
            self.learn("llm_s_per_item", self.llm_key, work_s / n, b)
        self._learn_switch("llm", phase.record)

    def _done(self, it: Item, b: int, ev: dict[str, Any], res: Any) -> None:
        tr = it.transcript or {}
        self.ctx.record({
            "custom_id": it.item_id, "item_id": it.item_id, "file": it.name, "batch": b,
            "transcript": tr.get("text", ""), "language": tr.get("language"),
            "audio_s": tr.get("duration_s"), "evaluation": ev, "model": res.model,
            "usage": {"prompt_tokens": res.prompt_tokens,
                      "completion_tokens": res.completion_tokens},
        })
        self.items.update(self.job_id, it.item_id, state="done", result=ev,
                          eval_finished=time.time())


def run(ctx: JobContext) -> None:
    PhasedRunner(ctx).run()
