"""Batch benchmarks, all from one run (python bench/batch.py [--quick]).

1. workbench job vs direct `LLM.chat` on the same 2,000 requests, same loaded engine
   (alternating order, median of repeats) — target ratio ≥ 0.97;
2. window (continuous top-up) vs fixed chunks (the seed's design) on mixed output lengths;
3. peak RSS of a worker process for 10K vs 100K requests (fast echo engine from tests/);
4. time to validate + split + submit 170K lines.
Model: the tiny random Llama built by tests/ (or --model PATH for a real one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import REPO, median, table, timed

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tests.kinds  # noqa: E402,F401  (echo engine provider)
from tests.batch_helpers import request_lines, write_jsonl  # noqa: E402
from tests.tiny_llama import build_tiny_llama  # noqa: E402
from workbench import Limits, Workbench  # noqa: E402
from workbench.engines import pool  # noqa: E402
from workbench.models import engine_spec  # noqa: E402
from workbench.runtime.worker import Worker  # noqa: E402


def run_job(tmp: Path, name: str, lines: list[dict[str, Any]], model: str,
            metrics: dict[str, Any] | None = None, **kw: Any) -> float:
    """Seconds of one worker pass over a job; `metrics` receives the job's metrics."""
    wb = Workbench(tmp / name, limits=Limits(max_requests_per_job=200_000))
    job = wb.batch.submit(write_jsonl(tmp / f"{name}.jsonl", lines), model=model, **kw)
    secs, _ = timed(lambda: Worker(wb.store).run_once())
    assert job.status == "completed" and job.info.completed == len(lines), job.info
    if metrics is not None:
        metrics.update(job.info.metrics)
    return secs


def direct(engine: Any, lines: list[dict[str, Any]]) -> float:
    convs = [x["body"]["messages"] for x in lines]
    sps = [engine.sampling_params({k: v for k, v in x["body"].items() if k != "messages"}, 0)
           for x in lines]
    secs, _ = timed(lambda: engine.llm.chat(convs, sps, use_tqdm=False))
    return secs


def throughput(tmp: Path, model: str, n: int, repeats: int) -> str:
    """Same engine for both paths; alternating order, gc before each run, median."""
    import gc

    spec = engine_spec(model)
    spec.pop("model_name")
    engine = pool.acquire(spec)
    lines = request_lines(n, max_tokens=16)
    direct(engine, lines[:50])
    run_job(tmp, "warm", lines[:50], model)
    d, w = [], []
    for i in range(repeats):
        for path in (("direct", "job") if i % 2 == 0 else ("job", "direct")):
            gc.collect()
            if path == "direct":
                d.append(direct(engine, lines))
            else:
                w.append(run_job(tmp, f"tp{i}", lines, model, window=5000))
    md, mw = median(d), median(w)
    return table(f"Throughput, {n:,} chat requests × ≤16 tokens, tiny Llama (median of {repeats}, "
                 "alternating order)",
                 ["path", "seconds", "requests/s", "ratio vs LLM.chat"],
                 [["direct LLM.chat (one call)", f"{md:.2f}", f"{n / md:.0f}", "1.00"],
                  ["workbench job (window 5000)", f"{mw:.2f}", f"{n / mw:.0f}", f"{md / mw:.2f}"]])


RUBRIC = ("You grade candidate profiles for a data engineering role. Score the candidate "
          "from 1 to 10 for skills, experience, clarity and structure, and explain briefly "
          "in JSON with fields score and reason. ")


def prefixed_lines(n: int, prefixes: list[str], grouped: bool) -> list[dict[str, Any]]:
    """n chats whose system prompt is one of `prefixes`: round-robin or grouped by prefix."""
    order = sorted(range(n), key=lambda i: i % len(prefixes)) if grouped else range(n)
    return [{"custom_id": f"p{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"messages": [{"role": "system", "content": prefixes[i % len(prefixes)]},
                                   {"role": "user", "content": f"Candidate {i}: sql, {i % 9} years"}],
                      "max_tokens": 4, "temperature": 0}} for i in order]


def prefix_cache(tmp: Path, model: str, n: int) -> str:
    """Shared ~350-token system prompt: caching on vs off; 8 prompts interleaved vs grouped."""
    spec = engine_spec(model)
    spec.pop("model_name")
    tok = pool.acquire(spec).llm.get_tokenizer()
    text = RUBRIC
    while len(tok.encode(text)) < 330:
        text += RUBRIC
    eight = [f"Rubric {k}. " + text for k in range(8)]  # distinct from the first block on
    rows = []
    for label, prefixes, grouped, engine in [
            ("1 shared prefix, caching off", [text], False, {"enable_prefix_caching": False}),
            ("1 shared prefix, caching on", [text], False, {}),
            ("8 prefixes round-robin, caching on", eight, False, {}),
            ("8 prefixes grouped, caching on", eight, True, {})]:
        name = "pc" + str(len(rows))
        lines = prefixed_lines(n, prefixes, grouped)
        run_job(tmp, name + "warm", lines[:8], model, engine=engine)  # load outside the timing
        lines = [{**x, "custom_id": "m" + x["custom_id"]} for x in lines]
        m: dict[str, Any] = {}
        secs = run_job(tmp, name, lines, model, metrics=m, engine=engine)
        rows.append([label, f"{secs:.2f}", f"{m['usage']['input_tokens'] / secs:,.0f}",
                     f"{m['prefix_cache_hit_rate']:.3f}"])
    return table(f"Prefix caching, {n:,} chats with a {len(tok.encode(text))}-token system prompt,"
                 " 4 output tokens, tiny Llama", ["workload", "seconds", "prompt tokens/s",
                                                  "prefix-cache hit rate"], rows)


def window_vs_chunk(tmp: Path, model: str, n: int, chunk: int) -> str:
    lines = request_lines(n)
    for i, x in enumerate(lines):  # mixed: every 10th request is long
        x["body"]["max_tokens"] = 160 if i % 10 == 0 else 8
        x["body"]["ignore_eos"] = True
    tw = run_job(tmp, "win", lines, model, window=chunk, mode="window")
    tc = run_job(tmp, "chunk", lines, model, window=chunk, mode="chunk")
    return table(f"Window vs fixed chunks, {n:,} requests (10 % × 160 tokens, 90 % × 8), size {chunk}",
                 ["mode", "seconds", "requests/s", "speed-up"],
                 [["fixed chunks (seed)", f"{tc:.2f}", f"{n / tc:.0f}", "1.00"],
                  ["window top-up", f"{tw:.2f}", f"{n / tw:.0f}", f"{tc / tw:.2f}"]])


def peak_rss(tmp: Path, sizes: list[int]) -> str:
    from tests.test_batch_split import PEAK as SCRIPT

    rows = []
    for n in sizes:
        root = tmp / f"peak{n}"
        root.mkdir()
        secs, out = timed(lambda n=n, root=root: subprocess.run(
            [sys.executable, "-c", SCRIPT.format(repo=str(REPO)), str(n), str(root)],
            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True))
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append([f"{n:,}", f"{r['base_kb'] / 1024:.0f}", f"{r['peak_kb'] / 1024:.0f}",
                     f"{(r['peak_kb'] - r['base_kb']) / 1024:.1f}", f"{secs:.1f}"])
    return table("Peak RSS of one worker process (echo engine, window 1000)",
                 ["requests", "RSS before job MiB", "peak RSS MiB", "growth MiB", "wall s (incl. writing input)"],
                 rows)


def submit_170k(tmp: Path, n: int) -> str:
    src = write_jsonl(tmp / "big.jsonl", request_lines(n, max_tokens=3))
    wb = Workbench(tmp / "big", limits=Limits(max_queued_jobs=100, max_queued_requests=10**7))
    from workbench.batch.format import validate_file

    tv, report = timed(lambda: validate_file(src))
    ts, group = timed(lambda: wb.batch.submit_large(src, model="echo", engine={"provider": "echo"}))
    size = src.stat().st_size / 2**20
    return table(f"Validate and submit {n:,} lines ({size:.0f} MiB)",
                 ["step", "seconds", "lines/s"],
                 [["validate only", f"{tv:.2f}", f"{n / tv:,.0f}"],
                  [f"validate + split + submit ({len(group.ids)} jobs)", f"{ts:.2f}", f"{n / ts:,.0f}"]])


PARTS = ("throughput", "prefix", "window", "rss", "submit")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model folder (default: tiny random Llama)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    ap.add_argument("--only", choices=PARTS, action="append",
                    help="run only these parts (repeatable; default: all)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-"))
    model = a.model or str(build_tiny_llama(tmp / "tiny-llama"))
    q = a.quick
    runs = {  # engine comparisons first, on a fresh heap as in a worker process
        "throughput": lambda: throughput(tmp, model, 200 if q else 2000, 1 if q else 6),
        "prefix": lambda: prefix_cache(tmp, model, 100 if q else 400),
        "window": lambda: window_vs_chunk(tmp, model, 200 if q else 1000, 64 if q else 256),
        "rss": lambda: peak_rss(tmp, [1_000, 10_000] if q else [10_000, 100_000]),
        "submit": lambda: submit_170k(tmp, 17_000 if q else 170_000),
    }
    parts = [fn() for name, fn in runs.items() if not a.only or name in a.only]
    if a.out:
        Path(a.out).write_text("\n".join(parts))


if __name__ == "__main__":
    main()
