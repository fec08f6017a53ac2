"""The phased STT → evaluation pipeline: input checks, batches, statuses, exclusivity with
the real engines (tiny.en + tiny vLLM model), and kill -9 during evaluation."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.conftest import make_wb, spawn_worker, wait_until
from tests.speech import SENTENCES, silent_video, speak
from workbench import InvalidInput, Status, Workbench
from workbench.errors import NotFound
from workbench.phased.api import IntakeWarning, PhasedJob
from workbench.phased.items import Items
from workbench.runtime.phase import PhaseRecord, phases

MiB = 1 << 20
JUDGE = "tests.phased_doubles:ScriptedJudge"
RUBRIC = {"criteria": [{"name": "accuracy", "description": "facts are right", "max_score": 5},
                       {"name": "clarity", "description": "easy to follow", "max_score": 4}],
          "question": "Explain one fact of nature.", "feedback_max_chars": 40}
#: the bound the exclusivity test states: memory after an unload vs before its load
RESIDUE_BOUND = 64 * MiB


@pytest.fixture(autouse=True)
def _private_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_LOCK_DIR", str(tmp_path / "locks"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("clips")
    return [speak(s, d / f"clip{i}.wav") for i, s in enumerate(SENTENCES[8:12])]


def _judge(tmp_path: Path, **options: object) -> dict[str, object]:
    return {"model": "judge", "engine": JUDGE, "options": {"log": str(tmp_path / "judge.log"), **options}}


def _wait(job: PhasedJob, timeout: float = 240) -> PhasedJob:
    job.wait(timeout=timeout, progress=False, poll_s=0.1)
    return job


def _until(pred, timeout: float = 120, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    wait_until(pred, timeout, what, interval=0.05)


def _assert_one_model_at_a_time(rows: list[PhaseRecord]) -> None:
    """From the recorded timeline: load→unload spans never overlap, in the order of batches."""
    spans = [(r.load_start, r.unloaded_at, r.name, r.batch) for r in rows]
    assert all(s is not None and e is not None for s, e, _, _ in spans), spans
    ordered = sorted(spans)
    for (_, end, n1, b1), (start, _, n2, b2) in zip(ordered, ordered[1:], strict=False):
        assert end <= start, f"{n1} of batch {b1} was still loaded when {n2} of batch {b2} loaded"


# -- input ------------------------------------------------------------------------------------

def _plain_words(text: str) -> None:
    """The message reads as words: no line numbers for list entries, reprs or errno codes."""
    for bad in ("line 0", "line 1", "line 2", "line 3", "line 4", "PosixPath", "Errno",
                "1094995529", "WindowsPath"):
        assert bad not in text, (bad, text)


def test_bad_submissions_are_refused_whole_in_words(wb: Workbench, tmp_path: Path,
                                                    clips: list[Path]) -> None:
    junk = tmp_path / "notes.wav"
    junk.write_text("not audio")
    with pytest.raises(InvalidInput) as e:  # a missing path refuses the submission
        wb.phased.submit([clips[0], tmp_path / "gone.wav", junk], rubric=RUBRIC,
                         llm=_judge(tmp_path))
    text = str(e.value)
    _plain_words(text)
    assert "recordings refused, nothing was queued (1 problem)" in text
    assert f"file 2 (gone.wav): no such file: {tmp_path / 'gone.wav'}" in text
    assert "notes.wav" not in text  # an unreadable file is not a reason to refuse the rest
    with pytest.raises(InvalidInput) as e:
        wb.phased.submit({"ana": clips[0], "bob": tmp_path}, rubric=RUBRIC, llm=_judge(tmp_path))
    assert f"bob ({tmp_path.name}): {tmp_path} is a folder" in str(e.value)
    with pytest.raises(InvalidInput) as e:
        wb.phased.submit(clips, rubric={"two words": "x"}, llm=_judge(tmp_path))
    assert "rubric: name: Value error, criterion name 'two words' must be" in str(e.value)
    with pytest.raises(InvalidInput) as e:
        wb.phased.submit(clips, rubric=RUBRIC, batch_size=0, llm=_judge(tmp_path))
    assert "settings: batch_size: Input should be greater than or equal to 1" in str(e.value)
    _plain_words(str(e.value))
    with pytest.raises(InvalidInput, match="engine 'tgi' is neither"):
        wb.phased.submit(clips, rubric=RUBRIC, llm={"model": "m", "engine": "tgi"})
    with pytest.raises(InvalidInput) as e:
        wb.phased.submit([], rubric=RUBRIC, llm=_judge(tmp_path))
    assert "files: no recordings given (the list is empty)" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(InvalidInput) as e:
        wb.phased.submit(empty, rubric=RUBRIC, llm=_judge(tmp_path))
    text = str(e.value)
    _plain_words(text)
    assert f"files: no audio or video files found in the folder {empty}" in text
    assert "1 other file skipped by extension: readme.txt" in text
    assert wb.jobs().empty
    assert not (wb.root / "media").exists() or not any((wb.root / "media").iterdir())


# -- the pipeline with a scripted judge ----------------------------------------------------------

def test_batches_run_stt_then_evaluation_and_bad_items_fail_alone(
        wb: Workbench, tmp_path: Path, clips: list[Path]) -> None:
    silent = silent_video(tmp_path / "silent.mp4")
    files = {"ana": clips[0], "ben": clips[1], "cara": clips[2], "dev": silent, "eli": clips[3]}
    with pytest.warns(IntakeWarning, match=r"1 of 5 recordings failed at intake: dev \(silent.mp4\)"):
        job = wb.phased.submit(files, rubric=RUBRIC, batch_size=2,
                               llm=_judge(tmp_path, invalid_for=["eli"]))
    assert job.status == "queued" and job.item("ana").state == "waiting"
    dev = job.item("dev")  # a video without sound fails at once, before any batch
    assert (dev.state, dev.batch) == ("failed", None) and "no audio track" in dev.reason
    assert [f.item_id for f in job.intake_failures] == ["dev"]
    wb.start_worker()
    _wait(job)
    assert job.status == "completed", job.info
    info = job.info
    assert (info.total, info.completed, info.failed) == (5, 3, 2)

    df = job.results().set_index("item_id")
    assert list(df.index) == ["ana", "ben", "cara", "dev", "eli"]
    assert df.batch.fillna(0).tolist() == [1, 1, 2, 0, 2] and df.batch.isna().tolist()[3]
    assert list(df.state) == ["done", "done", "done", "failed", "failed"]
    assert df.loc["ana", "transcript"].lower().startswith("sound travels faster")
    assert 0 <= df.loc["ana", "score_accuracy"] <= 5 and 0 <= df.loc["ana", "score_clarity"] <= 4
    assert str(df.score_accuracy.dtype) == "Int64" and str(df.overall.dtype) == "Int64"
    assert df.loc["ana", "feedback"].endswith("words") and df.loc["ana", "stt_s"] > 0
    assert "no audio track" in df.loc["dev", "error"]
    assert "not a valid evaluation" in df.loc["eli", "error"]
    assert job.item("ana").result["overall"] == df.loc["ana", "overall"]
    assert job.item("dev").message.startswith("failed at intake: no audio track")

    rows = phases(wb.store, job_id=job.id)
    assert [(r.name, r.batch) for r in rows] == [("stt", 0), ("llm", 0), ("stt", 1), ("llm", 1)]
    assert {r.state for r in rows} == {"done"} and {r.isolation for r in rows} == {"process"}
    _assert_one_model_at_a_time(rows)
    judged = Counter(json.loads(x)["custom_id"] for x in (tmp_path / "judge.log").read_text().splitlines())
    assert judged == Counter({"ana": 1, "ben": 1, "cara": 1, "eli": 1})  # dev never reached the LLM
    out = [json.loads(x) for x in job.output_path.read_text().splitlines()]
    assert sorted(r["custom_id"] for r in out) == ["ana", "ben", "cara"]
    errs = {json.loads(x)["custom_id"]: json.loads(x) for x in job.errors_path.read_text().splitlines()}
    assert errs["dev"]["phase"] == "intake" and errs["dev"]["error"]["code"] == "no_audio_track"
    with pytest.raises(InvalidInput, match="takes no more recordings"):
        job.add([clips[0]])
    with pytest.raises(NotFound) as e:
        job.item("nobody")
    assert str(e.value) == (f"no recording 'nobody' in job {job.id}; it has 5: ana, ben, cara,"
                            " dev, eli")


def test_status_positions_and_eta_while_batch_one_runs(wb: Workbench, tmp_path: Path,
                                                       clips: list[Path]) -> None:
    gate = tmp_path / "gate"
    files = {f"s{i}": clips[i % len(clips)] for i in range(7)}  # batches: 0-2, 3-5, 6
    job = wb.phased.submit(files, rubric=RUBRIC, batch_size=3,
                           stt={"isolation": "inline"},
                           llm={**_judge(tmp_path, gate=str(gate)), "isolation": "inline"})
    s6 = job.item("s6")
    assert (s6.state, s6.batch, s6.position_in_batch, s6.queue_position) == ("waiting", 3, 1, 7)
    assert s6.eta_s > 0 and s6.eta_basis == "default guess"
    wb.start_worker()
    _until(lambda: job.item("s0").state == "evaluating", what="batch 1 evaluating")

    st = {s.item_id: s for s in job.items_status()}
    assert [st[f"s{i}"].state for i in range(7)] == ["evaluating"] * 3 + ["waiting"] * 4
    assert [(st[f"s{i}"].batch, st[f"s{i}"].position_in_batch, st[f"s{i}"].queue_position)
            for i in range(3, 7)] == [(2, 1, 4), (2, 2, 5), (2, 3, 6), (3, 1, 7)]
    # STT rate measured in batch 1's phase, LLM not yet
    assert st["s6"].eta_basis.startswith("partly measured on this machine on 20")
    assert 0 <= st["s0"].eta_s < st["s3"].eta_s == st["s5"].eta_s < st["s6"].eta_s
    assert "7th in line, batch 3 (position 1 of 3)" in st["s6"].message

    added = job.add({"late1": clips[0], "late2": clips[1]})  # join batch 3 while batch 1 runs
    assert added == ["late1", "late2"] and job.info.total == 9
    now = {s.item_id: s for s in job.items_status()}  # one snapshot: one clock reading
    late = now["late2"]
    assert (late.batch, late.position_in_batch, late.queue_position) == (3, 3, 9)
    assert late.eta_s == now["s6"].eta_s > now["s5"].eta_s

    gate.touch()
    _wait(job)
    assert job.status == "completed"
    df = job.results().set_index("item_id")
    assert df.batch.to_dict() == {"s0": 1, "s1": 1, "s2": 1, "s3": 2, "s4": 2, "s5": 2, "s6": 3,
                                  "late1": 3, "late2": 3}
    assert set(df.state) == {"done"}
    assert job.item("late2").eta_s is None and job.item("late2").state == "done"
    assert job.item("s6").eta_s is None  # done
    for name in ("stt_audio_per_s", "llm_s_per_item", "llm_switch_s", "stt_switch_s"):
        assert any(k.startswith(f"phased.rate.{name}.") for k in _stat_keys(wb)), name


SLOW_STT = "tests.phased_doubles:SlowTranscriber"


def _doubles(tmp_path: Path, *, stt_delay: float, judge_delay: float,
             load_s: float) -> dict[str, object]:
    """Inline test doubles with a visible model load: fast, and timings made of sleeps."""
    return {"stt": {"engine": SLOW_STT, "isolation": "inline",
                    "options": {"delay_s": stt_delay, "load_s": load_s}},
            "llm": {**_judge(tmp_path, delay_s=judge_delay, load_s=load_s), "isolation": "inline"}}


def test_one_unreadable_file_fails_alone_at_intake_and_states_only_move_forward(
        wb: Workbench, tmp_path: Path, clips: list[Path]) -> None:
    from workbench.phased.status import ORDER

    junk = tmp_path / "notes.wav"
    junk.write_text("not audio")
    files = [clips[0], clips[1], clips[2], junk, clips[3], tmp_path / "extra.wav"]
    files[5].write_bytes(clips[0].read_bytes())
    with pytest.warns(IntakeWarning) as caught:
        job = wb.phased.submit(files, rubric=RUBRIC, batch_size=3,
                               **_doubles(tmp_path, stt_delay=0.15, judge_delay=0.1, load_s=0.4))
    warned = str(caught[0].message)
    assert warned == ("1 of 6 recordings failed at intake: file 4 (notes.wav): not a readable"
                      " audio or video file (invalid data found when processing input)")
    notes = job.item("notes")  # visible as failed at once, before any batch runs
    assert (notes.state, notes.batch, job.status) == ("failed", None, "queued")
    assert notes.reason == ("not a readable audio or video file (invalid data found when"
                            " processing input)")
    assert [f.item_id for f in job.intake_failures] == ["notes"]
    assert job.info.failed == 1 and job.info.total == 6
    assert job.info.message.startswith("5 recordings in batches of 3; 1 of 6 recordings failed")
    for text in (warned, notes.message, job.info.message):
        _plain_words(text)

    seen: dict[str, list[tuple[str, str]]] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for st in job.items_status():
                trail = seen.setdefault(st.item_id, [])
                if not trail or trail[-1] != (st.state, st.step):
                    trail.append((st.state, st.step))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wb.start_worker()
    _wait(job)
    stop.set()
    sampler.join()
    assert job.status == "completed" and (job.info.completed, job.info.failed) == (5, 1)
    for iid, trail in seen.items():
        ranks = [ORDER[state] for state, _ in trail]
        assert ranks == sorted(ranks), (iid, trail)  # never a step back
    assert seen["notes"] == [("failed", "failed")]
    good = [i for i in seen if i != "notes"]
    for iid in good:
        states = list(dict.fromkeys(state for state, _ in seen[iid]))
        assert states[0] == "waiting" and states[-1] == "done", (iid, seen[iid])
        assert {"transcribing", "evaluating"} <= set(states), (iid, seen[iid])
    assert any("transcribed" in {s for s, _ in seen[i]} for i in good)
    steps = {step for trail in seen.values() for _, step in trail}
    assert {"loading the speech-to-text model", "loading the evaluation model"} <= steps, steps
    df = job.results()
    assert df.state.tolist() == ["done", "done", "done", "failed", "done", "done"]
    assert set(df.state) <= set(ORDER)  # the same words as job.item()


def test_folder_matches_extensions_case_insensitively_and_reports_skipped_files(
        wb: Workbench, tmp_path: Path, clips: list[Path]) -> None:
    from tests.speech import wav_to_mp4

    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "Ana.WAV").write_bytes(clips[0].read_bytes())
    wav_to_mp4(clips[1], folder / "ben.m4v")
    (folder / "notes.txt").write_text("not a recording")
    (folder / ".DS_Store").write_bytes(b"\0")
    with pytest.warns(IntakeWarning, match="skipped 1 file that are not audio or video"
                      r" \(by extension\): notes.txt"):
        job = wb.phased.submit(folder, rubric=RUBRIC, llm=_judge(tmp_path))
    assert sorted(s.item_id for s in job.items_status()) == ["Ana", "ben"]
    assert job.intake_failures == [] and job.skipped_files == ["notes.txt"]
    assert job.item("ben").state == "waiting" and job.item("ben").file == "ben.m4v"
    job.cancel()


def test_first_eta_of_a_second_job_rests_on_the_first_jobs_rates(
        wb: Workbench, tmp_path: Path, clips: list[Path]) -> None:
    kw = _doubles(tmp_path, stt_delay=0.2, judge_delay=0.15, load_s=0.3)
    wb.start_worker()
    first = _wait(wb.phased.submit({f"a{i}": clips[0] for i in range(4)}, rubric=RUBRIC,
                                   batch_size=2, **kw))
    assert first.status == "completed"
    t0 = time.time()
    second = wb.phased.submit({f"b{i}": clips[0] for i in range(6)}, rubric=RUBRIC,
                              batch_size=2, **kw)
    last = second.item("b5")
    assert last.eta_basis.startswith("measured on this machine on 20"), last
    assert f"({last.eta_basis})" in last.message
    _wait(second)
    finished = {i.item_id: i.eval_finished for i in Items(wb.store).all(second.id)}
    actual = finished["b5"] - t0
    assert 0.5 * actual <= last.eta_s <= 1.5 * actual, (last.eta_s, actual)
    assert second.item("b5").eta_s is None


def test_a_base_model_scores_from_token_probabilities(wb: Workbench, tmp_path: Path,
                                                     clips: list[Path]) -> None:
    """The mechanics of logprob scoring (a double as the model; Gemma's test gives meaning)."""
    import math

    from tests.phased_doubles import BaseModelDouble
    from workbench.media import sha256_file
    from workbench.phased.geval import BASIS, WORDS, prompt

    said = {"ana": "Sound travels faster in water than in air.",
            "ben": "My brother has a new bike.", "cara": "um the the sound uh goes"}
    files = {k: clips[i] for i, k in enumerate(said)}
    log = tmp_path / "base.log"
    job = wb.phased.submit(
        files, rubric=RUBRIC, batch_size=3,
        stt={"engine": SLOW_STT, "isolation": "inline",
             "options": {"delay_s": 0.01, "texts": {sha256_file(files[k]): v
                                                    for k, v in said.items()}}},
        llm={"model": "base", "engine": "tests.phased_doubles:BaseModelDouble",
             "isolation": "inline", "scoring": "logprobs", "options": {"log": str(log)}})
    wb.start_worker()
    _wait(job)
    assert job.status == "completed", job.info
    sent = [json.loads(x) for x in log.read_text().splitlines()]
    assert sorted((r["custom_id"], r["endpoint"], r["logprobs"]) for r in sent) == [
        (k, "completion", 20) for k in sorted(said)]  # one judgement per recording
    df = job.results().set_index("item_id")
    spec = job.spec
    for who, text in said.items():
        top = BaseModelDouble()._top(prompt(spec.rubric, text))
        p = {t.strip(): math.exp(v) for t, v in top.items() if t.strip() in WORDS}
        f = sum(WORDS[t] * x for t, x in p.items()) / sum(p.values())
        assert df.loc[who, "expected_accuracy"] == pytest.approx(5 * f, abs=1e-3)
        assert df.loc[who, "expected_clarity"] == pytest.approx(4 * f, abs=1e-3)
        assert (df.loc[who, "score_accuracy"], df.loc[who, "score_clarity"],
                df.loc[who, "overall"]) == (round(5 * f), round(4 * f), round(10 * f))
        assert df.loc[who, "feedback"] == f"confidence the answer is good: {f:.2f}"
        assert job.item(who).result["basis"] == BASIS
    assert df.loc["ana", "overall_expected"] > df.loc["cara", "overall_expected"] > \
        df.loc["ben", "overall_expected"]
    assert str(df.score_accuracy.dtype) == "Int64" and df.expected_accuracy.dtype == float


def _stat_keys(wb: Workbench) -> list[str]:
    return [r[0] for r in wb.store.conn.execute("SELECT key FROM stats")]


# -- real engines: tiny.en + tiny vLLM model --------------------------------------------------

def _real_llm(tiny_llama: Path, **extra: object) -> dict[str, object]:
    return {"model": str(tiny_llama), "max_tokens": 120,
            "options": {"dtype": "float32", "max_model_len": 512,
                        "kv_cache_memory_bytes": 64 << 20}, **extra}


@pytest.mark.vllm
@pytest.mark.stt
def test_real_engines_never_share_the_device(wb: Workbench, tiny_llama: Path,
                                             clips: list[Path]) -> None:
    files = {f"st{i}": clips[i % len(clips)] for i in range(9)}
    job = wb.phased.submit(files, rubric=RUBRIC, batch_size=3, llm=_real_llm(tiny_llama))
    wb.start_worker()
    _wait(job, timeout=600)
    assert job.status == "completed", job.info
    df = job.results()
    assert list(df.state) == ["done"] * 9, df[["item_id", "state", "error"]]
    assert df.score_accuracy.between(0, 5).all() and df.score_clarity.between(0, 4).all()
    assert df.overall.between(0, 10).all() and (df.feedback.str.len() <= 40).all()

    rows = phases(wb.store, job_id=job.id)
    assert [(r.name, r.batch) for r in rows] == [(n, b) for b in range(3) for n in ("stt", "llm")]
    _assert_one_model_at_a_time(rows)
    by = {(r.name, r.batch): r for r in rows}
    for b in (1, 2):  # batch b's STT began only after batch b-1 was fully evaluated
        assert by[("stt", b)].load_start >= by[("llm", b - 1)].released_at  # type: ignore[operator]
    for r in rows:
        assert r.state == "done" and r.isolation == "process" and r.engine_pid != os.getpid()
        assert r.mem_loaded - r.mem_before > 50 * MiB, r  # type: ignore[operator]  # really loaded
        assert abs(r.residue) <= RESIDUE_BOUND, r  # type: ignore[arg-type]
        assert not psutil.pid_exists(r.engine_pid)  # type: ignore[arg-type]
    assert by[("llm", 0)].mem_loaded - by[("llm", 0)].mem_before > 500 * MiB  # type: ignore[operator]


@pytest.mark.vllm
@pytest.mark.stt
def test_kill_9_during_evaluation_then_resume_evaluates_each_item_once(
        tmp_path: Path, tiny_llama: Path, clips: list[Path]) -> None:
    wb = make_wb(tmp_path / "wb")
    files = {f"k{i}": clips[i % len(clips)] for i in range(6)}
    job = wb.phased.submit(files, rubric=RUBRIC, batch_size=6,
                           llm=_real_llm(tiny_llama, window=1, max_tokens=160))
    env = {"WORKBENCH_LOCK_DIR": os.environ["WORKBENCH_LOCK_DIR"]}
    w1 = spawn_worker(wb.root, **env)
    out = job.output_path
    _until(lambda: out.exists() and len(out.read_text().splitlines()) >= 1, timeout=600,
           what="the first evaluation")
    os.kill(w1.pid, signal.SIGKILL)
    w1.wait()
    written = len(out.read_text().splitlines())
    assert 1 <= written < 6, f"kill landed after {written} of 6 evaluations"
    llm_phase = [r for r in phases(wb.store, job_id=job.id) if r.name == "llm"][-1]
    assert llm_phase.state == "working" and llm_phase.unloaded_at is None
    _until(lambda: not psutil.pid_exists(llm_phase.engine_pid)  # type: ignore[arg-type]
           or psutil.Process(llm_phase.engine_pid).status() == psutil.STATUS_ZOMBIE,
           timeout=30, what="the engine process to die with its worker")

    w2 = spawn_worker(wb.root, "--exit-when-idle", **env)
    assert w2.wait(timeout=600) == 0, w2.stderr.read().decode() if w2.stderr else ""
    assert job.status == "completed", job.info
    ids = Counter(json.loads(x)["custom_id"] for x in out.read_text().splitlines())
    assert ids == Counter({f"k{i}": 1 for i in range(6)})
    assert not job.errors_path.exists() or job.errors_path.read_text() == ""
    assert set(job.results().state) == {"done"}
    rows = phases(wb.store, job_id=job.id)
    assert [(r.name, r.state) for r in rows] == [("stt", "done"), ("llm", "working"),
                                                 ("llm", "done")]  # STT was not redone
    assert job.info.status is Status.COMPLETED and job.info.attempts == 2


# -- Gemini as the judge (the real google-genai SDK against the fake Gemini server) -----------

def test_gemini_can_be_the_evaluating_model(wb: Workbench, tmp_path: Path, clips: list[Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fake_gemini import API_KEY, FakeGemini, engine_settings

    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    answers = {"ana": {"scores": {"accuracy": 4, "clarity": 3}, "overall": 7, "feedback": "clear"},
               "ben": {"scores": {"accuracy": 9, "clarity": 3}, "overall": 7, "feedback": "x"}}
    with FakeGemini() as fake:
        def respond(model: str, body: dict) -> str:
            prompt = body["contents"][0]["parts"][-1]["text"]
            who = "ana" if "sound travels" in prompt.lower() else "ben"
            return json.dumps(answers[who])

        fake.responder = respond
        job = wb.phased.submit({"ana": clips[0], "ben": clips[1]}, rubric=RUBRIC, batch_size=2,
                               stt={"isolation": "inline"},
                               llm={"engine": "gemini", "model": "gemini-judge",
                                    "options": engine_settings(fake.url)})
        assert job.spec.llm.isolation == "inline"  # nothing local to unload
        wb.start_worker()
        _wait(job)
        sent = fake.requests("generate")
    assert job.status == "completed"
    df = job.results().set_index("item_id")
    assert (df.loc["ana", "score_accuracy"], df.loc["ana", "overall"], df.loc["ana", "state"]) == (4, 7, "done")
    assert df.loc["ben", "state"] == "failed" and "accuracy" in df.loc["ben", "error"]  # 9 > max 5
    assert len(sent) == 2 and all(s["schema"] for s in sent)
    assert API_KEY not in json.dumps(job.info.spec) and API_KEY not in job.output_path.read_text()


def test_kill_9_during_stt_resumes_the_batch_without_retranscribing(
        tmp_path: Path, clips: list[Path]) -> None:
    wb = make_wb(tmp_path / "wb")
    stt_log = tmp_path / "stt.log"
    files = {f"t{i}": clips[i % len(clips)] for i in range(8)}
    job = wb.phased.submit(files, rubric=RUBRIC, batch_size=8,
                           stt={"engine": "tests.phased_doubles:SlowTranscriber",
                                "options": {"log": str(stt_log), "delay_s": 0.25}},
                           llm=_judge(tmp_path))
    env = {"WORKBENCH_LOCK_DIR": os.environ["WORKBENCH_LOCK_DIR"]}
    w1 = spawn_worker(wb.root, **env)
    _until(lambda: sum(1 for i in job.results().state if i == "transcribed") >= 3, timeout=120,
           what="three transcripts")
    os.kill(w1.pid, signal.SIGKILL)
    w1.wait()
    saved = set(job.results().query("state == 'transcribed'").item_id)
    assert 3 <= len(saved) < 8
    calls_before = len(stt_log.read_text().splitlines())
    w2 = spawn_worker(wb.root, "--exit-when-idle", **env)
    assert w2.wait(timeout=120) == 0, w2.stderr.read().decode() if w2.stderr else ""
    assert job.status == "completed"
    calls_after = len(stt_log.read_text().splitlines()) - calls_before
    assert calls_after == 8 - len(saved), "a saved transcript was transcribed again"
    df = job.results().set_index("item_id")
    assert all(df.loc[i, "transcript"].startswith("water boils") for i in saved)
    ids = Counter(json.loads(x)["custom_id"] for x in job.output_path.read_text().splitlines())
    assert ids == Counter({f"t{i}": 1 for i in range(8)})
    rows = phases(wb.store, job_id=job.id)
    assert [(r.name, r.state) for r in rows] == [("stt", "working"), ("stt", "done"), ("llm", "done")]
