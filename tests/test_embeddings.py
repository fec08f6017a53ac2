"""`/v1/embeddings` batch lines on the embedded all-MiniLM-L6-v2 (real vLLM pooling runner).

The reference is computed here, independently of vLLM: transformers' AutoModel on the
same folder, mean pooling over the attention mask, L2 normalisation (what
sentence-transformers does for this model). One module-scoped workbench + worker thread:
the engine pool keeps the pooling engine loaded across the tests.
"""

from __future__ import annotations

import base64
import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.batch_helpers import records, write_jsonl
from tests.conftest import REPO, make_wb, spawn_worker, wait_until
from workbench import Workbench
from workbench.config import EMBEDDED_EMBEDDER
from workbench.models import resolve

pytestmark = pytest.mark.vllm
WORDS = ("data engineer python spark sql kernels rubric answer clarity structure score "
         "candidate profile experience team lead cloud nurse welder chef harbour pilot "
         "mountain violin tax audit river").split()
URL = "/v1/embeddings"


def texts(n: int) -> list[str]:
    return [" ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(2 + i % 13)) + f" {i}"
            for i in range(n)]


def line(cid: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": cid, "method": "POST", "url": URL, "body": body}


def reference(items: list[str]) -> np.ndarray:
    """sentence-transformers' recipe by hand: mean pooling over real tokens, then L2 norm."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = resolve(EMBEDDED_EMBEDDER)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        enc = tok(items, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1).numpy()


@pytest.fixture(scope="module")
def wb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workbench]:
    w = make_wb(tmp_path_factory.mktemp("emb") / "wb")
    w.start_worker()
    yield w
    w.stop_workers()


def run(wb: Workbench, path: Path, **kw: Any) -> Any:
    job = wb.batch.submit(path, **kw)
    job.wait(timeout=600, progress=False)
    assert job.status == "completed", job.info
    return job


def test_vectors_equal_the_mean_pooling_reference_and_base64_decodes_to_them(
        wb: Workbench, tmp_path: Path) -> None:
    items = texts(240)
    lines = [line(f"t{i}", input=t) for i, t in enumerate(items)]
    lines += [line(f"b{i}", input=t, encoding_format="base64") for i, t in enumerate(items[:20])]
    lines.append(line("many", input=items[:3], dimensions=384))
    job = run(wb, write_jsonl(tmp_path / "in.jsonl", lines))
    assert job.info.spec["embed_model"] == EMBEDDED_EMBEDDER  # no model named: the embedded one
    out = {r["custom_id"]: r for r in records(job.dir / "output.jsonl")}
    assert len(out) == 261 and not (job.dir / "errors.jsonl").exists()
    body = out["t0"]["response"]["body"]
    assert body["object"] == "list" and body["model"] == EMBEDDED_EMBEDDER
    assert body["data"][0]["object"] == "embedding" and body["data"][0]["index"] == 0
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 2
    got = np.array([out[f"t{i}"]["response"]["body"]["data"][0]["embedding"] for i in range(240)])
    ref = reference(items)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert got.shape == (240, 384) and cos.min() >= 0.999, cos.min()
    for i in range(20):  # base64 = the same float32 values, little-endian
        b64 = out[f"b{i}"]["response"]["body"]["data"][0]["embedding"]
        assert isinstance(b64, str)
        np.testing.assert_array_equal(np.frombuffer(base64.b64decode(b64), "<f4"),
                                      np.asarray(got[i], dtype=np.float32))
    many = out["many"]["response"]["body"]["data"]
    assert [d["index"] for d in many] == [0, 1, 2]
    np.testing.assert_allclose([d["embedding"] for d in many], got[:3], atol=1e-6)
    usage = job.info.metrics["usage"]
    assert usage["input_tokens"] == sum(r["response"]["body"]["usage"]["prompt_tokens"]
                                        for r in out.values())


def test_a_bad_line_is_that_lines_error(wb: Workbench, tmp_path: Path, tiny_llama: Path) -> None:
    lines = [line("ok", input="a fine sentence"), line("empty", input=""),
             line("empty-list", input=[]), line("long", input="word " * 300),
             line("dims", input="x", dimensions=100), line("tokens", input=[101, 7592, 102]),
             line("bad-token", input=[101, 99999999, 102])]
    job = run(wb, write_jsonl(tmp_path / "in.jsonl", lines))
    errs = {r["custom_id"]: r["error"] for r in records(job.dir / "errors.jsonl")}
    assert {r["custom_id"] for r in records(job.dir / "output.jsonl")} == {"ok", "tokens"}
    assert set(errs) == {"empty", "empty-list", "long", "dims", "bad-token"}
    assert errs["empty"]["message"] == "input is an empty string: nothing to embed"
    assert errs["empty-list"]["message"].startswith("input is empty")
    assert errs["long"]["code"] == "context_length_exceeded"
    assert "maximum context length is 256 tokens" in errs["long"]["message"]
    assert "384-dimensional vectors only (not a Matryoshka model)" in errs["dims"]["message"]
    assert "outside this model's vocabulary" in errs["bad-token"]["message"]
    # a chat model asked for embeddings, an embedding model asked for chat: in words
    emb = write_jsonl(tmp_path / "e.jsonl", [line("e", input="hello")])
    job = run(wb, emb, model=str(tiny_llama))
    (err,) = records(job.dir / "errors.jsonl")
    assert "is a chat (text generation) model, not an embedding model" in err["error"]["message"]
    chat = write_jsonl(tmp_path / "c.jsonl", [{"custom_id": "c", "method": "POST",
                                                "url": "/v1/chat/completions", "body": {
                                                    "messages": [{"role": "user", "content": "hi"}]}}])
    job = run(wb, chat, model=resolve(EMBEDDED_EMBEDDER))
    (err,) = records(job.dir / "errors.jsonl")
    assert "is an embedding model: it answers /v1/embeddings lines only" in err["error"]["message"]


def test_embed_a_dataframe_column_in_input_order(wb: Workbench) -> None:
    items = texts(30)
    df = pd.DataFrame({"summary": items[::-1], "n": range(30)})
    vecs = wb.batch.embed(df, column="summary")
    ref = reference(items[::-1])
    assert vecs.shape == (30, 384)
    assert ((vecs * ref).sum(1)).min() >= 0.999
    with pytest.warns(UserWarning, match=r"1 of 3 rows were not embedded .*row 1: input is an empty"):
        part = wb.batch.embed(["one", "", "three"])
    assert np.isnan(part[1]).all() and not np.isnan(part[[0, 2]]).any()


def test_kill_9_mid_job_then_resume_each_custom_id_once(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    n = 3000
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl",
                                      [line(f"k{i}", input=t) for i, t in enumerate(texts(n))]),
                          window=32)
    out = job.dir / "output.jsonl"
    w1 = spawn_worker(wb.root)
    wait_until(lambda: len(records(out)) >= 200, timeout=300, what="200 vectors written")
    os.kill(w1.pid, signal.SIGKILL)
    w1.wait()
    before = len(records(out))
    assert 200 <= before < n
    w2 = spawn_worker(wb.root, "--exit-when-idle")
    assert w2.wait(timeout=600) == 0, w2.stderr.read().decode()[-2000:]
    info = wb.store.get(job.id)
    assert (info.status.value, info.completed, info.failed, info.attempts) == ("completed", n, 0, 2)
    ids = Counter(r["custom_id"] for r in records(out))
    assert set(ids) == {f"k{i}" for i in range(n)} and max(ids.values()) == 1


def test_openai_client_creates_polls_and_reads_an_embeddings_batch(
        wb: Workbench, tiny_llama: Path, tmp_path: Path) -> None:
    from tests.server_helpers import LiveServer, poll, upload
    from workbench.server import create_app

    app = create_app(wb, models=[f"chat={tiny_llama}"], window=64, worker=True)
    items = texts(12)
    lines = [line(f"s{i}", input=t) for i, t in enumerate(items)]
    lines.append(line("wrong-kind", input="hello", model="chat"))
    with LiveServer(app) as srv:
        c = srv.client()
        batch = c.batches.create(input_file_id=upload(c, write_jsonl(tmp_path / "in.jsonl", lines)),
                                 endpoint="/v1/embeddings", completion_window="24h")
        done = poll(c, batch.id, {"completed", "failed", "cancelled", "expired"})
        assert done.status == "completed", done
        assert (done.request_counts.total, done.request_counts.completed,
                done.request_counts.failed) == (13, 12, 1)
        out = [json.loads(x) for x in c.files.content(done.output_file_id).text.splitlines()]
        err = [json.loads(x) for x in c.files.content(done.error_file_id).text.splitlines()]
    from openai.types import CreateEmbeddingResponse

    parsed = {o["custom_id"]: CreateEmbeddingResponse.model_validate(o["response"]["body"])
              for o in out}
    got = np.array([parsed[f"s{i}"].data[0].embedding for i in range(12)])
    assert ((got * reference(items)).sum(1)).min() >= 0.999
    assert parsed["s0"].usage.prompt_tokens > 0 and parsed["s0"].model == EMBEDDED_EMBEDDER
    assert err[0]["custom_id"] == "wrong-kind"
    assert "model chat is a chat (text generation) model" in err[0]["error"]["message"]


def test_make_demo_ranks_by_embeddings_and_prints_rho_on_every_set(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys


    env = dict(os.environ, WORKBENCH_ROOT=str(tmp_path / "wb"), HF_HUB_OFFLINE="1",
               WORKBENCH_VLLM_TMP=str(tmp_path / "vllm"))
    env.pop("WORKBENCH_MODEL", None)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-m", "workbench.demo"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rho = {k: float(v) for k, v in re.findall(
        r"Spearman ρ, (generator|hand-written A|hand-written B|held-out \d|held-out) set "
        r"\(\d+ profiles\): "
        r"(-?[\d.]+)", p.stdout)}
    held_out = ("held-out", "held-out 2", "held-out 3")
    assert set(rho) == {"generator", "hand-written A", "hand-written B", *held_out}, \
        p.stdout[-2000:]
    # issue 21's targets: ≥ 0.8 on the generator's set (also the rule's floor), ≥ 0.6 on
    # every set nothing was chosen on (measured: 0.818 / 0.845 / 0.724 / 0.827 / 0.770 /
    # 0.751, README "Ranking candidates")
    assert rho["generator"] >= 0.8 and min(rho[k] for k in held_out) >= 0.6, rho
    assert rho["hand-written A"] >= 0.7 and rho["hand-written B"] >= 0.6, rho
    assert "NOT met" not in p.stdout, p.stdout[-2000:]
    assert "never on a held-out set" in p.stdout and "65 of 65 roles described" in p.stdout
    assert "held-out 3 set (48 profiles)" in p.stdout and "held out: judged only" in p.stdout
    # 65 role descriptions once each, then 438 profiles × (whole profile, skills)
    assert re.search(r"Embedding job batch_\w+: 941 texts", p.stdout), p.stdout[-2000:]


def test_demo_rank_reads_each_role_as_its_description_and_an_unknown_role_as_its_title(
        tmp_path: Path) -> None:
    """Which text stands for the role: its job description when data/roles.csv has one
    (every role of the shipped sets has), else the bare title; read through a recording
    embedder so the exact texts sent are asserted."""
    from workbench import demo_rank

    roles = demo_rank.load_descriptions(REPO / "data" / "roles.csv")
    shipped = {r for stem in demo_rank.SETS
               for r in pd.read_csv(REPO / "data" / f"{stem}.csv")["role"]}
    assert shipped <= roles.keys() and len(roles) == 65
    assert all(40 <= len(d.split()) <= 80 for d in roles.values())
    assert demo_rank.load_descriptions(tmp_path / "absent.csv") == {}

    df = pd.DataFrame({"role": ["Plumber", "Glassblower"], "current_title": ["A", "B"],
                       "years": [3, 4], "skills": ["x", "y"], "summary": ["s", "t"]})
    sent: list[str] = []

    def embed(texts: list[str]) -> np.ndarray:
        sent.extend(texts)
        return np.eye(len(texts))  # orthonormal: every similarity 0

    demo_rank.similarities(embed, {"one": df, "two": df.iloc[:1].copy()}, roles)
    assert sorted(sent[:2]) == sorted([roles["Plumber"], "Glassblower"])  # each role once
    assert len(sent) == 2 + 2 * 2 + 2 * 1 and list(df["sim_skills"]) == [0.0, 0.0]
