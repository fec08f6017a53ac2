"""Embeddings and transcriptions as batch lines, against the direct calls and run_batch.

1. The same N texts embedded three ways: a workbench batch job (`/v1/embeddings` lines,
   worker thread, output file), one direct `LLM.embed(texts)` call on the same engine
   settings, and vLLM's own `run_batch` on the same input file (a separate process, so
   its wall includes its start). Vectors are compared (minimum cosine).
2. Transcriptions: M espeak-ng recordings as `/v1/audio/transcriptions` lines vs the
   phased STT path's engine (`WhisperEngine.transcribe` per file): wall and WER.

Run under `flock /tmp/wb-heavy.lock`: `python bench/embed.py [--n 5000] [--m 8]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import REPO, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

WORDS = ("data engineer python spark sql kernels rubric answer clarity structure score "
         "candidate profile experience team lead cloud nurse welder chef harbour pilot "
         "mountain violin tax audit river").split()


def texts(n: int) -> list[str]:
    return [" ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(4 + i % 29)) + f" {i}"
            for i in range(n)]


def lines_file(path: Path, items: list[str]) -> Path:
    with open(path, "w") as f:
        for i, t in enumerate(items):
            f.write(json.dumps({"custom_id": f"t{i}", "method": "POST", "url": "/v1/embeddings",
                                "body": {"model": "minilm", "input": t}}) + "\n")
    return path


def read_vectors(path: Path, n: int) -> np.ndarray:
    out = np.zeros((n, 384), dtype=np.float32)
    for raw in path.read_text().splitlines():
        r = json.loads(raw)
        out[int(r["custom_id"][1:])] = r["response"]["body"]["data"][0]["embedding"]
    return out


def min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def embeddings(tmp: Path, n: int) -> str:
    from workbench import Workbench
    from workbench.config import EMBEDDED_EMBEDDER
    from workbench.engines import pool
    from workbench.models import resolve

    folder = resolve(EMBEDDED_EMBEDDER)
    items = texts(n)
    src = lines_file(tmp / "in.jsonl", items)
    # 1) the job (worker thread in this process; load counted apart)
    wb = Workbench(tmp / "wb")
    t0 = time.perf_counter()
    job = wb.batch.submit(src)
    wb.start_worker()
    out = job.dir / "output.jsonl"
    first = None
    while job.status not in ("completed", "failed", "cancelled"):
        if first is None and out.exists() and out.stat().st_size:
            first = time.perf_counter() - t0
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    wb.stop_workers()
    m = job.info.metrics
    job_vecs = read_vectors(out, n)
    gen_s = float(m.get("elapsed_s") or wall)
    # 2) direct LLM.embed on the same (loaded) engine
    eng = pool.acquire({"provider": "vllm", "model": EMBEDDED_EMBEDDER, "runner": "pooling"})
    t1 = time.perf_counter()
    direct = eng.llm.embed(items, use_tqdm=False)
    direct_s = time.perf_counter() - t1
    direct_vecs = np.array([o.outputs.embedding for o in direct], dtype=np.float32)
    pool.release()
    # 3) vLLM's run_batch on the same file (its own process)
    rb_out = tmp / "rb.jsonl"
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0")
    t2 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(src),
                        "-o", str(rb_out), "--model", folder, "--served-model-name", "minilm",
                        "--runner", "pooling", "--dtype", "float32", "--enforce-eager"],
                       env=env, capture_output=True, text=True)
    rb_wall = time.perf_counter() - t2
    if p.returncode != 0:
        print(p.stderr[-3000:], file=sys.stderr)
        rb_row = ["vLLM run_batch (own process)", "failed", "", "", ""]
    else:
        rb_vecs = read_vectors(rb_out, n)
        rb_row = ["vLLM run_batch (own process)", f"{rb_wall:.1f}", f"{rb_wall:.1f} (at the end)",
                  f"{n / rb_wall:,.0f}", f"{min_cos(rb_vecs, job_vecs):.6f}"]
    rows = [
        ["workbench job (worker thread)", f"{wall:.1f}", f"{first or wall:.1f}",
         f"{n / gen_s:,.0f} (after {m.get('load_s', 0)} s load)", "1 (itself)"],
        ["direct LLM.embed (loaded engine)", f"{direct_s:.1f}", "-", f"{n / direct_s:,.0f}",
         f"{min_cos(direct_vecs, job_vecs):.6f}"],
        rb_row,
    ]
    ratio = (n / gen_s) / (n / direct_s)
    return table(f"Embeddings: {n:,} texts, all-MiniLM-L6-v2 (job/direct embeddings/s = {ratio:.2f})",
                 ["run", "wall s", "first result s", "embeddings/s", "min cosine vs job"], rows)


def transcriptions(tmp: Path, m: int) -> str:
    import jiwer

    from tests.speech import SENTENCES, speak
    from workbench import Workbench
    from workbench.engines.whisper import WhisperEngine

    media = tmp / "media"
    sents = [SENTENCES[i % len(SENTENCES)] for i in range(m)]
    wavs = [speak(s, media / f"r{i}.wav") for i, s in enumerate(sents)]
    src = tmp / "audio.jsonl"
    src.write_text("".join(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                       "url": "/v1/audio/transcriptions",
                                       "body": {"file_url": str(w)}}) + "\n"
                           for i, w in enumerate(wavs)))

    def norm(t: str) -> str:
        return " ".join("".join(c for c in t.lower() if c.isalnum() or c == " ").split())

    wb = Workbench(tmp / "wb-audio")
    t0 = time.perf_counter()
    job = wb.batch.submit(src, media_dir=media)
    wb.start_worker()
    job.wait(progress=False)
    wall = time.perf_counter() - t0
    wb.stop_workers()
    got = {json.loads(x)["custom_id"]: json.loads(x)["response"]["body"]["text"]
           for x in (job.dir / "output.jsonl").read_text().splitlines()}
    eng = WhisperEngine()
    t1 = time.perf_counter()
    phased = [eng.transcribe(w).text for w in wavs]
    phased_s = time.perf_counter() - t1
    eng.unload()
    truth = [norm(s) for s in sents]
    wer_job = jiwer.wer(truth, [norm(got[f"r{i}"]) for i in range(m)])
    wer_ph = jiwer.wer(truth, [norm(t) for t in phased])
    return table(f"Transcriptions: {m} espeak-ng recordings, Whisper tiny.en batched",
                 ["run", "wall s", "WER"],
                 [["workbench job (/v1/audio/transcriptions lines, incl. load)", f"{wall:.1f}",
                   f"{wer_job:.3f}"],
                  ["phased STT engine (WhisperEngine.transcribe per file, loaded)",
                   f"{phased_s:.1f}", f"{wer_ph:.3f}"]])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--m", type=int, default=8)
    a = ap.parse_args()
    os.chdir(REPO)
    with tempfile.TemporaryDirectory() as d:
        print(embeddings(Path(d), a.n))
        print(transcriptions(Path(d), a.m))


if __name__ == "__main__":
    main()
