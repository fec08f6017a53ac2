"""Local-model grids: the tiny vLLM model answers from Whisper transcripts of spoken media.

The tiny Llama has random weights, so its answers are gibberish; what is tested is the
plumbing: transcripts made once per media (and cached), text-only models answering from
them (and saying so), guided decoding giving the local judge valid JSON, the Gemini judge
judging local answers, and a grid with no Gemini key running entirely on local models.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_gemini import API_KEY, FakeGemini, engine_settings
from tests.speech import SENTENCES, have_espeak, normalise, speak, wav_to_mp4, wer
from workbench import Workbench
from workbench.grid import tables
from workbench.grid.api import GridWarning
from workbench.grid.results import TEXT_ONLY_NOTE
from workbench.runtime.phase import phases

pytestmark = [pytest.mark.vllm, pytest.mark.stt,
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")]

MiB = 1 << 20
#: room for the judge prompt (byte-level tokens of the tiny tokenizer) on the tiny model
ENGINE = {"max_model_len": 2048, "kv_cache_memory_bytes": 64 << 20}


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("spoken")
    return [wav_to_mp4(speak(SENTENCES[i], d / f"s{i}.wav"), d / f"talk{i}.mp4") for i in (0, 7)]


@pytest.fixture(autouse=True)
def local_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")  # tiny config says 512


def local(tiny: Path, label: str, **params: Any) -> dict[str, Any]:
    return {"provider": "vllm", "name": str(tiny), "label": label, "engine": ENGINE,
            "params": {"max_tokens": 24, **params}}


@pytest.fixture(autouse=True)
def _private_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_LOCK_DIR", str(tmp_path / "locks"))


def test_local_grid_answers_from_whisper_transcripts(wb: Workbench, tiny_llama: Path,
                                                     spoken: list[Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    wb.start_worker()
    with pytest.warns(GridWarning, match="is also a competitor"):
        job = wb.grid.submit(
            media=spoken, prompts={"summary": "Summarise what the speaker says."},
            models=[local(tiny_llama, "greedy", temperature=0.0),
                    local(tiny_llama, "sampled", temperature=0.9, seed=1)],
            judge={**local(tiny_llama, "tiny-judge", temperature=0.0),
                   "params": {"max_tokens": 700}},
            judge_text_chars=24, local_isolation="inline")
    job.wait(timeout=600, progress=False)
    info = job.info
    assert info.status.value == "completed", info
    assert (info.completed, info.failed) == (2, 0), job.calls()[["call_id", "error"]]

    # one transcript per media, cached in the store, and it is what was said
    got = {r["sha256"]: r["text"] for r in wb.store.conn.execute(
        "SELECT sha256, text FROM media_transcripts")}
    spec = info.spec
    assert len(got) == 2
    for m, sentence in zip(spec["media"], (SENTENCES[0], SENTENCES[7]), strict=True):
        assert wer(normalise(sentence), normalise(got[m["sha256"]])) < 0.5, got[m["sha256"]]
    assert info.metrics["stt_model"].endswith("model") and "stt_memory" in info.metrics

    # text-only models answered from the transcript and the results say so
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    rows = tables.calls(wb.store, job.id)
    assert len(rows) == 6 and all(r.ok for r in rows)
    by_cell = {c["id"]: c["media"] for c in spec["cells"]}
    sha = {m["id"]: m["sha256"] for m in spec["media"]}
    for r in rows:
        assert r.input_kind == "transcript"
        transcript_tokens = len(tok(got[sha[by_cell[r.cell_id]]])["input_ids"])
        assert r.prompt_tokens > transcript_tokens  # the transcript was in the prompt
    models = [r for r in rows if r.role == "model"]
    assert all(r.completion_tokens == 24 for r in models)
    df = job.results()
    assert set(df["input"]) == {"transcript"} and df["score"].between(1, 10).all()
    comps = job.comparisons()["comparisons"]
    assert all(res["note"] == TEXT_ONLY_NOTE for c in comps for res in c["results"].values())
    assert all(set(c["evaluation"]) == {"greedy", "sampled"} for c in comps)
    html = job.report(wb.root / "grid.html").read_text()
    assert html.count(TEXT_ONLY_NOTE) == 4

    # no Gemini key: the suggested models are local; transcripts come from the cache
    monkeypatch.setenv("WORKBENCH_MODEL", str(tiny_llama))
    models2, judge2 = wb.grid.suggested_models(**ENGINE)
    assert {m.provider for m in [*models2, judge2]} == {"vllm"}
    judge2.params["max_tokens"] = 700
    with pytest.warns(GridWarning):
        job2 = wb.grid.submit(media=spoken[:1], prompts=["What is the topic?"],
                              models=[m.model_copy(update={"params": {**m.params, "max_tokens": 16}})
                                      for m in models2], judge=judge2, judge_text_chars=24,
                              local_isolation="inline")
    job2.wait(timeout=600, progress=False)
    assert job2.status == "completed", job2.info
    assert "stt_memory" not in job2.info.metrics  # Whisper was not loaded again
    assert set(job2.results()["status"]) == {"ok"}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
        yield server


def test_local_models_judged_by_gemini(wb: Workbench, tiny_llama: Path, spoken: list[Path],
                                       fake: FakeGemini) -> None:
    wb.start_worker()
    job = wb.grid.submit(media=spoken[:1], prompts=["Summarise.", "Name one fact."],
                         models=[local(tiny_llama, "tiny", temperature=0.0), "gemini-a"],
                         judge="gemini-judge", gemini=engine_settings(fake.url),
                         default_rpm=60_000, local_isolation="inline")
    job.wait(timeout=600, progress=False)
    assert job.status == "completed", job.info
    df = job.results()
    assert dict(zip(df["model"], df["input"], strict=False)) == {"tiny": "transcript",
                                                                  "gemini-a": "media"}
    assert df["score"].between(1, 10).all()
    # the Gemini judge saw both answers and the media itself (one upload for everything)
    judges = [e for e in fake.requests("generate") if e["schema"]]
    assert len(judges) == 2 and all(len(e["files"]) == 1 for e in judges)
    tiny_answers = df[df["model"] == "tiny"]["response"].tolist()
    assert all(any(a in e["prompt"] for a in tiny_answers) for e in judges)
    assert len(fake.requests("upload.finalize")) == 1


@pytest.fixture(scope="module")
def three_llamas(tiny_llama: Path) -> list[Path]:
    """Three distinct tiny Llamas (random weights from different seeds), built once."""
    from tests.tiny_llama import build_tiny_llama

    return [tiny_llama, *(build_tiny_llama(tiny_llama.parent / f"tiny-llama-seed{s}", seed=s)
                          for s in (1, 2))]


def _engine_processes() -> set[int]:
    """Live engine child processes of this process (a phase's `workbench.runtime.child`)."""
    import psutil

    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "workbench.runtime.child" in " ".join(
                    p.cmdline()):
                out.add(p.pid)
        except psutil.Error:
            continue
    return out


def test_three_local_models_take_the_device_one_at_a_time(
        wb: Workbench, three_llamas: list[Path], spoken: list[Path]) -> None:
    import threading

    prompts = ["Summarise.", "Name one fact."]
    models = [local(p, f"m{i}", temperature=0.0) for i, p in enumerate(three_llamas)]
    judge = {**local(three_llamas[2], "judge", temperature=0.0), "params": {"max_tokens": 700}}
    with pytest.warns(GridWarning, match="the judge judge is also a competitor"):
        job = wb.grid.submit(media=spoken[:1], prompts=prompts, models=models, judge=judge,
                             judge_text_chars=24)  # local models in child processes (default)
    alive: list[set[int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            alive.append(_engine_processes())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wb.start_worker()
    try:
        job.wait(timeout=900, progress=False)
    finally:
        stop.set()
        sampler.join()
    assert job.status == "completed", job.info
    assert max(len(a) for a in alive) == 1, [a for a in alive if len(a) > 1][:3]
    rows = phases(wb.store, job_id=job.id)
    assert [(r.name, r.batch) for r in rows] == [("stt", None), ("llm", 0), ("llm", 1), ("llm", 2)]
    spans = [(r.acquired_at, r.released_at) for r in rows]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
    assert len({r.model for r in rows[1:]}) == 3 and {r.isolation for r in rows} == {"process"}
    seen_pids = set().union(*alive)
    assert {r.engine_pid for r in rows[1:]} <= seen_pids | {None}  # the sampler saw them
    for r in rows:
        assert r.residue is not None and abs(r.residue) <= 64 * MiB, r  # measured, small
    assert [p["models"] for p in job.info.metrics["local_phases"]] == [["m0"], ["m1"],
                                                                       ["m2", "judge"]]
    calls = {c.call_id: c for c in tables.calls(wb.store, job.id)}
    by_phase = {r.batch: r for r in rows[1:]}
    for c in calls.values():  # each model answered while it held the device; the judge last
        r = by_phase[2 if c.role == "judge" else int(c.model[1])]
        assert r.loaded_at <= c.finished_at <= r.unload_start, (c.call_id, r)
    assert job.results()["score"].notna().all()

    # the same models, one grid each, give the same answers (greedy)
    together = {(c.cell_id, c.model): c.text for c in calls.values() if c.role == "model"}
    for m in models:
        alone = wb.grid.submit(media=spoken[:1], prompts=prompts, models=[m], judge=None,
                               local_isolation="inline")
        alone.wait(timeout=600, progress=False)
        assert alone.status == "completed", alone.info
        got = {(c.cell_id, c.model): c.text for c in tables.calls(wb.store, alone.id)}
        assert got == {k: v for k, v in together.items() if k[1] == m["label"]}
