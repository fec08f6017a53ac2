"""`workbench doctor --run`: prove this machine runs the two jobs users bring, and measure.

In a throw-away store (a temporary folder, removed after), on this machine's device:

1. **models**: the embedded LLM (Gemma 3 270M, converted once into the model cache) and
   the embedded Whisper tiny.en are ready;
2. **batch**: a 20-request batch job on the embedded LLM, through a worker, as
   `make demo` runs one: passes when all 20 complete with no error; figures: tok/s,
   requests/s, model load seconds;
3. **phased**: two spoken recordings (espeak-ng) through Whisper → unload → LLM, with the
   memory measured at each phase boundary (device memory on a GPU, this process tree's
   RSS on the CPU): passes when both recordings are scored and every phase gave back its
   memory within the job's residue bound; figures: MiB before load, loaded, after unload,
   residue, per phase.

Each step says pass/fail with its figures as it ends. Nothing here is a stand-in: the jobs
are real jobs on the real engines, the same code path a user's jobs take.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

from workbench.doctor.facts import Facts

MiB = 1 << 20
REQUESTS = 20
#: a step that takes longer than this fails (the whole self-test should take < 2 minutes)
STEP_TIMEOUT_S = 300
RESIDUE_BOUND_MIB = 128
SENTENCES = ("Water boils at a lower temperature on the top of a high mountain.",
             "The moon moves around the earth, and the earth moves around the sun.")
RUBRIC = {"criteria": [{"name": "accuracy", "description": "Is the science correct?",
                        "max_score": 5}],
          "question": "Explain one fact of nature.", "feedback_max_chars": 40}


class Step(BaseModel):
    name: str
    passed: bool
    seconds: float
    figures: dict[str, Any] = {}
    detail: str = ""


def _timed(name: str, fn: Callable[[], tuple[bool, dict[str, Any], str]]) -> Step:
    t0 = time.monotonic()
    try:
        ok, figures, detail = fn()
    except Exception as e:  # a step that cannot run fails with the reason, the others go on
        ok, figures, detail = False, {}, f"{type(e).__name__}: {e}"
    return Step(name=name, passed=ok, seconds=round(time.monotonic() - t0, 1), figures=figures,
                detail=detail)


def _models() -> tuple[bool, dict[str, Any], str]:
    from workbench.config import EMBEDDED_LLM
    from workbench.engines.whisper_models import resolve_whisper_model
    from workbench.models import resolve

    llm = resolve(EMBEDDED_LLM)
    stt = resolve_whisper_model(None)
    return True, {}, f"LLM {llm}; Whisper {stt}"


def _batch(wb: Any, device: str) -> tuple[bool, dict[str, Any], str]:
    from workbench.config import EMBEDDED_LLM
    from workbench.engines import pool

    topics = ["rivers", "the moon", "bread", "trains", "volcanoes"]
    df = pd.DataFrame({"id": [f"r{i:02d}" for i in range(REQUESTS)],
                       "topic": [topics[i % len(topics)] for i in range(REQUESTS)],
                       "n": range(REQUESTS)})
    path = wb.batch.from_dataframe(df, prompt="Fact {n} about {topic}:", id_column="id",
                                   endpoint="completions", max_tokens=24, temperature=0)
    job = wb.batch.submit(path, model=EMBEDDED_LLM, name="doctor --run: batch")
    wb.start_worker()
    try:
        job.wait(timeout=STEP_TIMEOUT_S, progress=False, poll_s=0.2)
    finally:
        wb.stop_workers()
        pool.release()
    info, res = job.info, job.results()
    m = info.metrics
    ok_rows = int(res["error"].isna().sum()) if "error" in res else len(res)
    figures = {"device": device, "requests": REQUESTS, "completed": info.completed,
               "failed": info.failed, "tokens_per_s": m.get("tokens_per_s"),
               "requests_per_s": m.get("requests_per_s"), "load_s": m.get("load_s")}
    ok = info.status.value == "completed" and info.completed == REQUESTS and ok_rows == REQUESTS
    return ok, figures, f"job {info.status.value}" + (f": {info.error}" if info.error else "")


def _speak(folder: Path) -> dict[str, Path]:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: the self-test speaks its two "
                           "recordings with it (apt-get install espeak-ng; make env does)")
    files = {}
    for i, sentence in enumerate(SENTENCES):
        p = folder / f"speaker{i + 1}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(p), sentence],
                       check=True, capture_output=True, timeout=60)
        files[p.stem] = p
    return files


def _phased(wb: Any, tmp: Path) -> tuple[bool, dict[str, Any], str]:
    from workbench.config import EMBEDDED_LLM

    files = _speak(tmp)
    job = wb.phased.submit(files, rubric=RUBRIC, batch_size=len(files),
                           llm={"model": EMBEDDED_LLM}, residue_bound_mib=RESIDUE_BOUND_MIB,
                           name="doctor --run: phased")
    wb.start_worker()
    try:
        job.wait(timeout=STEP_TIMEOUT_S, progress=False, poll_s=0.2)
    finally:
        wb.stop_workers()
    res, phases = job.results(), job.phases()
    figures: dict[str, Any] = {"recordings": len(files),
                               "scored": int((res["state"] == "done").sum())}
    ok = job.status == "completed" and figures["scored"] == len(files) and len(phases) == 2
    for p in phases.to_dict("records"):
        name = p["name"]
        mib = {k: round(p[k] / MiB, 1) if p[k] is not None else None
               for k in ("mem_before", "mem_loaded", "mem_after", "residue")}
        figures[name] = {"device": p["device"], **{f"{k}_mib": v for k, v in mib.items()}}
        ok = ok and p["state"] == "done" and mib["residue"] is not None \
            and abs(mib["residue"]) <= RESIDUE_BOUND_MIB and mib["mem_loaded"] > mib["mem_before"]
    transcripts = "; ".join(f"{r.item_id}: {r.transcript!r}" for r in res.itertuples())
    return ok, figures, f"job {job.status}; {transcripts}"


def describe(s: Step) -> str:
    """One step as the screen shows it: PASS/FAIL, time, figures, detail."""
    f = s.figures
    if s.name == "batch" and f:
        figs = (f"{f['completed']}/{f['requests']} requests on the {f['device']}, "
                f"{f['tokens_per_s']} tok/s, {f['requests_per_s']} requests/s, "
                f"model load {f['load_s']} s")
    elif s.name == "phased" and f:
        figs = f"{f['scored']}/{f['recordings']} recordings scored; " + "; ".join(
            f"{n} on {f[n]['device']}: {f[n]['mem_before_mib']} MiB before load, "
            f"{f[n]['mem_loaded_mib']} loaded, {f[n]['mem_after_mib']} after unload, "
            f"residue {f[n]['residue_mib']} MiB (bound {RESIDUE_BOUND_MIB})"
            for n in ("stt", "llm") if n in f)
    else:
        figs = ""
    return (f"{'PASS' if s.passed else 'FAIL'} {s.name} ({s.seconds} s)"
            + (f": {figs}" if figs else "") + (f"\n     {s.detail}" if s.detail else ""))


def run_all(facts: Facts, echo: bool = True) -> list[Step]:
    """The three steps in a temporary store; prints each as it ends when `echo`."""
    from workbench.api import Workbench

    device = "GPU" if facts.vllm_on_gpu else "CPU"
    memory = "device memory" if facts.whisper_args["device"] == "cuda" else "RSS"
    if echo:
        print(f"workbench doctor --run: a {REQUESTS}-request batch job and a 2-recording phased "
              f"job on the {device} (phase memory: {memory})", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="wb-doctor-"))
    steps: list[Step] = []
    t0 = time.monotonic()
    try:
        wb = Workbench(tmp / "wb")
        plan: list[tuple[str, Callable[[], tuple[bool, dict[str, Any], str]]]] = [
            ("models", _models), ("batch", lambda: _batch(wb, device)),
            ("phased", lambda: _phased(wb, tmp))]
        for name, fn in plan:
            steps.append(_timed(name, fn))
            if echo:
                print(describe(steps[-1]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if echo:
        passed = sum(s.passed for s in steps)
        print(f"{passed}/{len(steps)} steps passed in {time.monotonic() - t0:.0f} s", flush=True)
    return steps
