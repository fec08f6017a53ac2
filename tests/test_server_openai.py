"""A client written for OpenAI, against `workbench serve` with two models (real vLLM).

The two models are the tiny Llama built with two seeds: same tokenizer, other weights,
so their greedy answers differ and every output line shows which one answered. One
module-scoped server + worker thread; the engine pool swaps the models (one resident).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.batch_helpers import request_lines, write_jsonl
from tests.conftest import make_wb
from tests.openai_fields import FIELDS, LINE_ERRORS, NOTED, field_lines
from tests.server_helpers import LiveServer, create, poll, upload
from workbench import Workbench
from workbench.server import create_app

pytestmark = pytest.mark.vllm
SETTLED = {"completed", "failed", "cancelled", "expired"}


@pytest.fixture(scope="module")
def tiny_llama_b(tiny_llama: Path) -> Path:
    from tests.tiny_llama import build_tiny_llama

    return build_tiny_llama(tiny_llama.parent / "tiny-llama-seed1", seed=1)


@pytest.fixture(scope="module")
def two(tiny_llama: Path, tiny_llama_b: Path, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[Workbench, LiveServer]]:
    wb = make_wb(tmp_path_factory.mktemp("two") / "wb")
    app = create_app(wb, models=[f"alpha={tiny_llama}", f"beta={tiny_llama_b}"], window=16,
                     worker=True)
    with LiveServer(app) as srv:
        wb.start_worker()
        yield wb, srv
    wb.stop_workers()


def lines_of(c: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    return [json.loads(x) for x in c.files.content(file_id).text.splitlines()] if file_id else []


def test_each_line_is_answered_by_the_model_it_names(two: tuple[Workbench, LiveServer],
                                                     tiny_llama: Path, tmp_path: Path) -> None:
    wb, srv = two
    c = srv.client()
    assert [m.id for m in c.models.list()] == ["alpha", "beta"]
    base = request_lines(4, max_tokens=12)
    lines = []
    for who in ("alpha", "beta", None, "gpt-4o-mini"):  # None: the default (alpha)
        for x in base:
            y = json.loads(json.dumps(x))
            y["custom_id"] = f"{who}-{x['custom_id']}"
            if who:
                y["body"]["model"] = who
            lines.append(y)
    batch = create(c, upload(c, write_jsonl(tmp_path / "in.jsonl", lines)),
                   output_expires_after={"anchor": "created_at", "seconds": 3600})
    done = poll(c, batch.id, SETTLED)
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (16, 12, 4)
    assert done.model == "alpha,beta" and str(tiny_llama) not in done.model_dump_json()
    out = {o["custom_id"]: o["response"]["body"] for o in lines_of(c, done.output_file_id)}
    text = {k: b["choices"][0]["message"]["content"] for k, b in out.items()}
    for x in base:
        r = x["custom_id"]
        assert out[f"alpha-{r}"]["model"] == out[f"None-{r}"]["model"] == "alpha"
        assert out[f"beta-{r}"]["model"] == "beta"
        assert text[f"alpha-{r}"] == text[f"None-{r}"]      # the default is alpha
    assert [text[f"alpha-{x['custom_id']}"] for x in base] != [
        text[f"beta-{x['custom_id']}"] for x in base]        # other weights, other answers
    errs = lines_of(c, done.error_file_id)
    assert sorted(e["custom_id"] for e in errs) == sorted(f"gpt-4o-mini-r{i}" for i in range(4))
    for e in errs:
        assert e["response"]["status_code"] == 404 and e["error"]["code"] == "model_not_found"
        assert e["response"]["body"]["error"]["message"].startswith(
            "The model `gpt-4o-mini` does not exist")
    # usage = the sum over the output lines, in OpenAI's shape
    prompt = sum(b["usage"]["prompt_tokens"] for b in out.values())
    completion = sum(b["usage"]["completion_tokens"] for b in out.values())
    u = done.usage
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (prompt, completion,
                                                                  prompt + completion)
    assert u.input_tokens_details.cached_tokens == 0 and u.output_tokens_details.reasoning_tokens == 0
    # output and error files are files: listed (batch_output), expiring, deletable
    listed = {f.id: f for f in c.files.list(purpose="batch_output")}
    assert set(listed) == {done.output_file_id, done.error_file_id}
    f_out = listed[done.output_file_id]
    assert f_out.expires_at == f_out.created_at + 3600 and f_out.bytes > 0
    assert c.files.delete(done.error_file_id).deleted is True
    assert [f.id for f in c.files.list(purpose="batch_output")] == [done.output_file_id]
    with pytest.raises(openai.NotFoundError):
        c.files.content(done.error_file_id)
    again = c.batches.retrieve(batch.id)
    assert again.error_file_id is None and again.output_file_id == done.output_file_id
    assert not (wb.store.job_dir(batch.id) / "errors.jsonl").exists()


def test_a_2s_completion_window_expires_the_rest(two: tuple[Workbench, LiveServer],
                                                 tmp_path: Path) -> None:
    wb, srv = two
    c = srv.client()
    warm = create(c, upload(c, write_jsonl(tmp_path / "warm.jsonl", request_lines(2))))
    poll(c, warm.id, SETTLED)                            # alpha is loaded: the 2 s are for work
    lines = request_lines(3000, max_tokens=48)
    batch = create(c, upload(c, write_jsonl(tmp_path / "in.jsonl", lines)),
                   extra_body={"completion_window_seconds": 2})
    assert batch.completion_window == "2s" and batch.expires_at - batch.created_at in (2, 3)
    done = poll(c, batch.id, SETTLED, timeout=120)
    assert done.status == "expired" and done.expired_at is not None, done
    finished = lines_of(c, done.output_file_id)
    expired = lines_of(c, done.error_file_id)
    n = done.request_counts
    assert 0 < len(finished) < 3000 and (n.total, n.completed, n.failed) == (
        3000, len(finished), len(expired))
    assert len(finished) + len(expired) == 3000
    assert {o["custom_id"] for o in finished} | {e["custom_id"] for e in expired} == {
        x["custom_id"] for x in lines}
    assert all(e["response"] is None and e["error"]["code"] == "batch_expired" and
               "completion window expired" in e["error"]["message"] for e in expired)
    assert done.usage.output_tokens == sum(o["response"]["body"]["usage"]["completion_tokens"]
                                           for o in finished)
    with pytest.raises(openai.ConflictError):
        c.batches.cancel(batch.id)


def test_every_accepted_field_runs_and_long_max_tokens_is_that_lines_400(
        two: tuple[Workbench, LiveServer], tiny_llama: Path, tmp_path: Path) -> None:
    wb, srv = two
    c = srv.client()
    lines = [x for x in field_lines() if x["url"] == "/v1/chat/completions"]
    lines.append({"custom_id": "too_long", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"messages": [{"role": "user", "content": "Candidate"}],
                           "max_tokens": 100_000}})
    plain = {"custom_id": "plain", "method": "POST", "url": "/v1/chat/completions",
             "body": {"messages": [{"role": "user", "content": "Candidate profile"}],
                      "max_tokens": 4, "temperature": 0}}
    lines.append(plain)
    batch = create(c, upload(c, write_jsonl(tmp_path / "fields.jsonl", lines)))
    done = poll(c, batch.id, SETTLED)
    assert done.status == "completed", done
    assert set(done.workbench["notes"]) == NOTED - {"best_of"}  # best_of: completions only
    out = {o["custom_id"]: o["response"]["body"] for o in lines_of(c, done.output_file_id)}
    errs = {e["custom_id"]: e for e in lines_of(c, done.error_file_id)}
    chat_fields = {k for k in FIELDS if not k.startswith("cmpl_")}
    assert set(errs) == (LINE_ERRORS & chat_fields) | {"too_long"}
    assert set(out) == (chat_fields - LINE_ERRORS) | {"plain"}
    long = errs["too_long"]
    assert long["response"]["status_code"] == 400
    assert long["error"]["code"] == "context_length_exceeded"
    assert long["error"]["message"].startswith("This model's maximum context length is 512 "
                                               "tokens. However, you requested ")
    assert "100000 in the completion" in long["error"]["message"]
    assert 'tool_choice="auto" needs a tool-call parser' in errs["tools_auto"]["error"]["message"]
    assert 'function "score"' in errs["tools_named"]["error"]["message"]
    # mapped fields change the answer: a +100 logit bias makes token 5 every token
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    biased = out["logit_bias"]["choices"][0]["message"]["content"]
    assert biased == tok.decode([5] * 4) != out["plain"]["choices"][0]["message"]["content"]
    assert len(out["n_seed_penalties"]["choices"]) == 2
    assert out["max_completion_tokens"]["usage"]["completion_tokens"] <= 3
    # logprobs in OpenAI's chat shape, equal to what vLLM computes for the same request
    steps = out["logprobs"]["choices"][0]["logprobs"]["content"]
    assert len(steps) == 4 and all(set(s) == {"token", "logprob", "bytes", "top_logprobs"}
                                   and len(s["top_logprobs"]) == 3 for s in steps)
    assert out["plain"]["choices"][0]["logprobs"] is None
    from vllm import SamplingParams

    from workbench.engines import pool

    line = next(x for x in lines if x["custom_id"] == "logprobs")
    engine = pool.acquire(wb.store.get(batch.id).spec["models"]["alpha"])  # loaded: no reload
    (ref,) = engine.llm.chat([line["body"]["messages"]], SamplingParams(
        max_tokens=4, temperature=0, logprobs=3), use_tqdm=False)
    ref_out = ref.outputs[0]
    assert "".join(s["token"] for s in steps) == ref_out.text
    for s, tid, alts in zip(steps, ref_out.token_ids, ref_out.logprobs, strict=True):
        assert s["logprob"] == pytest.approx(alts[tid].logprob, abs=1e-4)
        ranked = sorted(alts.values(), key=lambda a: a.rank)[:3]
        assert [t["logprob"] for t in s["top_logprobs"]] == pytest.approx(
            [a.logprob for a in ranked], abs=1e-4)


def test_completions_endpoint_fields(two: tuple[Workbench, LiveServer], tmp_path: Path) -> None:
    wb, srv = two
    c = srv.client()
    lines = [x for x in field_lines() if x["url"] == "/v1/completions"]
    fid = upload(c, write_jsonl(tmp_path / "cmpl.jsonl", lines))
    batch = c.batches.create(input_file_id=fid, endpoint="/v1/completions",
                             completion_window="24h")
    done = poll(c, batch.id, SETTLED)
    out = {o["custom_id"]: o for o in lines_of(c, done.output_file_id)}
    errs = {e["custom_id"]: e for e in lines_of(c, done.error_file_id)}
    assert set(out) == {"cmpl_echo_best_of", "cmpl_logit_bias", "cmpl_logprobs"}
    cmpl = out["cmpl_logprobs"]["response"]["body"]["choices"][0]["logprobs"]
    assert set(cmpl) == {"text_offset", "token_logprobs", "tokens", "top_logprobs"}
    # OpenAI's completions shape: one {token: logprob} per step (logprobs=2: the sampled
    # token plus 2; tokens that decode alike share a key, as in vLLM's server)
    assert len(cmpl["tokens"]) == len(cmpl["token_logprobs"]) == len(cmpl["top_logprobs"]) == 4
    assert all(1 <= len(t) <= 3 for t in cmpl["top_logprobs"])
    assert errs["cmpl_suffix"]["error"]["message"] == "suffix is not currently supported"
    assert done.workbench["notes"] == {"best_of": "accepted; no effect on a local engine (1 line)"}


def test_partial_output_while_running_and_health_says_only_queue_state(
        two: tuple[Workbench, LiveServer], tmp_path: Path) -> None:
    wb, srv = two
    c = srv.client()
    batch = create(c, upload(c, write_jsonl(tmp_path / "in.jsonl",
                                            request_lines(800, max_tokens=48))))
    http = httpx.Client(base_url=srv.url)
    deadline = time.monotonic() + 120
    while True:
        b = c.batches.retrieve(batch.id)
        r = http.get(b.workbench["partial_output"])
        got = [json.loads(x) for x in r.text.splitlines()]
        if b.status == "in_progress" and len(got) >= 20:
            break
        assert time.monotonic() < deadline and b.status not in SETTLED, b
        time.sleep(0.05)
    assert r.status_code == 200 and r.text.endswith("\n") and b.output_file_id is None
    assert all(o["response"]["status_code"] == 200 for o in got)
    assert http.get(f"/v1/batches/{batch.id}/errors").text == ""
    health = http.get("/health").json()
    assert health["running_jobs"] == 1 and set(health) == {
        "status", "queued_jobs", "queued_requests", "running_jobs", "jobs_available",
        "requests_available", "queue_available", "limits", "worker"}
    assert "alpha" not in json.dumps(health) and os.sep + "tiny" not in json.dumps(health)
    c.batches.cancel(batch.id)
    done = poll(c, batch.id, SETTLED, timeout=120)
    assert done.status == "cancelled"
    assert len(lines_of(c, done.output_file_id)) == done.request_counts.completed >= len(got)
