"""Scale-out benchmarks, one run (python bench/scale.py [--n 2000] [--model PATH]).

1. The same 2,000 chat requests as a workbench job: in-process engine vs the Ray Data
   backend with 1 and 2 replicas (local `ray.init` on this machine). Wall time is the
   whole job as a user waits for it (engine load, Ray start and replica loads included),
   then after-start throughput; outputs compared with the in-process job's, token for token.
2. A shared-prefix workload (every request starts with the same ≥300-token rubric) on one
   in-process `vllm.LLM` with automatic prefix caching on and off: prompt and generated
   tokens/s and the prefix-cache hit rate, read from vLLM's own counters
   (`LLM.get_metrics()`: vllm:prefix_cache_hits / vllm:prefix_cache_queries).
Model: the tiny random Llama built by tests/ (or --model PATH).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, median, table

for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
             "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(k, v)

from tests.batch_helpers import WORDS, request_lines, write_jsonl  # noqa: E402
from tests.tiny_llama import build_tiny_llama  # noqa: E402
from workbench import Limits, Workbench  # noqa: E402
from workbench.engines import pool  # noqa: E402
from workbench.runtime.worker import Worker  # noqa: E402


def job_run(tmp: Path, name: str, lines: list[dict[str, Any]], model: str,
            engine: dict[str, Any] | None) -> tuple[float, dict[str, str], dict[str, Any]]:
    """Run one batch job in this process; (wall seconds, outputs by custom_id, metrics)."""
    wb = Workbench(tmp / name, limits=Limits(max_requests_per_job=200_000))
    job = wb.batch.submit(write_jsonl(tmp / f"{name}.jsonl", lines), model=model, engine=engine)
    t0 = time.perf_counter()
    Worker(wb.store).run_once()
    wall = time.perf_counter() - t0
    assert job.status == "completed" and job.info.completed == len(lines), job.info
    df = job.results()
    stats = dict(getattr(pool._engine, "stats", None) or {})  # the Ray engine's own counts
    pool.release()  # the next run starts from nothing, as a user's next job would
    gc.collect()
    return wall, dict(zip(df["custom_id"], df["content"], strict=True)), stats


def scale(tmp: Path, model: str, n: int) -> str:
    lines = request_lines(n, max_tokens=16)
    runs: list[tuple[str, dict[str, Any] | None]] = [
        ("in-process engine", None),
        ("Ray, 1 replica", {"provider": "ray", "replicas": 1}),
        ("Ray, 2 replicas", {"provider": "ray", "replicas": 2}),
    ]
    rows, base, ref = [], None, None
    for label, engine in runs:
        wall, outs, stats = job_run(tmp, label.replace(" ", "_").replace(",", ""), lines,
                                      model, engine)
        base = base or wall
        ref = ref or outs
        same = sum(outs.get(k) == v for k, v in ref.items())
        after = (stats["wall_s"] - stats["first_result_s"]) if "first_result_s" in stats else None
        rows.append([label, f"{wall:.1f}", f"{n / wall:.0f}", f"{base / wall:.2f}",
                     f"{stats['first_result_s']:.1f}" if after is not None else "-",
                     f"{n / after:.0f}" if after else "-", f"{same}/{n}"])
    return table(f"Scale-out: {n:,} chat requests × ≤16 tokens, tiny Llama, this 2-core CPU",
                 ["engine", "job wall s (incl. start)", "requests/s", "ratio vs in-process",
                  "Ray: first result after s", "Ray: requests/s after first result",
                  "outputs = in-process"], rows)


def rubric(tok: Any, at_least: int) -> str:
    words: list[str] = []
    i = 0
    while len(words) % 20 or len(tok.encode(" ".join(words))) < at_least:
        words.append(WORDS[(i * 7 + i // 5) % len(WORDS)])
        i += 1
    return "Rubric: score the candidate on " + " ".join(words)


def prefix_run(model: str, caching: bool, n: int, repeats: int) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, dtype="float32", enforce_eager=True, max_model_len=512, seed=0,
              enable_prefix_caching=caching, disable_log_stats=False)
    tok = llm.get_tokenizer()
    prefix = rubric(tok, 320)
    convs = [[{"role": "system", "content": prefix},
              {"role": "user", "content": f"Candidate {i}: {WORDS[i % len(WORDS)]} {i}"}]
             for i in range(n)]
    sp = SamplingParams(max_tokens=4, temperature=0)

    def counters(engine: Any = llm) -> dict[str, float]:
        return {m.name: float(getattr(m, "value", 0) or 0) for m in engine.get_metrics()
                if m.name in ("vllm:prefix_cache_hits", "vllm:prefix_cache_queries")}

    walls, rates, outs = [], [], None
    for _ in range(repeats):
        llm.reset_prefix_cache()
        c0 = counters()
        t0 = time.perf_counter()
        outs = llm.chat(convs, sp, use_tqdm=False)
        walls.append(time.perf_counter() - t0)
        c1 = counters()
        q = c1.get("vllm:prefix_cache_queries", 0) - c0.get("vllm:prefix_cache_queries", 0)
        h = c1.get("vllm:prefix_cache_hits", 0) - c0.get("vllm:prefix_cache_hits", 0)
        rates.append(h / q if q else 0.0)
    wall = median(walls)
    prompt = sum(len(o.prompt_token_ids) for o in outs)
    gen = sum(len(o.outputs[0].token_ids) for o in outs)
    res = {"wall": wall, "prompt_tps": prompt / wall, "gen_tps": gen / wall,
           "hit": median(rates), "prefix_tokens": len(tok.encode(prefix)),
           "texts": [o.outputs[0].text for o in outs]}
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    cleanup_dist_env_and_memory()
    return res


def shared_prefix(model: str, n: int, repeats: int) -> str:
    off = prefix_run(model, False, n, repeats)
    on = prefix_run(model, True, n, repeats)
    rows = [[label, f"{r['wall']:.3f}", f"{r['prompt_tps']:,.0f}", f"{r['gen_tps']:,.0f}",
             f"{100 * r['hit']:.1f} %", f"{off['wall'] / r['wall']:.2f}"]
            for label, r in (("off", off), ("on (vLLM default)", on))]
    same = sum(a == b for a, b in zip(off["texts"], on["texts"], strict=True))
    text = table(f"Shared prefix: {n} requests, one {on['prefix_tokens']}-token rubric prefix, "
                 f"4 tokens out (median of {repeats})",
                 ["prefix caching", "wall s", "prompt tokens/s", "generated tokens/s",
                  "prefix-cache hit rate", "speed-up"], rows)
    print(f"outputs identical with and without caching: {same}/{n}\n")
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--prefix-n", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None)
    ap.add_argument("--only", choices=["scale", "prefix"], default=None)
    a = ap.parse_args()
    model = a.model or str(build_tiny_llama(Path(os.environ.get(
        "WB_TEST_MODEL_CACHE", REPO / "data" / "models")) / "tiny-llama"))
    os.environ.setdefault("WORKBENCH_RAY_TMP", "/tmp/wb-ray-bench")
    if a.only != "prefix":
        with tempfile.TemporaryDirectory() as d:
            scale(Path(d), model, a.n)
    if a.only != "scale":
        shared_prefix(model, a.prefix_n, a.repeats)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
