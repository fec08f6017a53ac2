"""Students' pages in Debian's chromium (playwright) while a real phased job runs.

Three students, batches of 2 (so chen waits for batch 2), real models: Whisper tiny.en in a
child process and the tiny Llama for the rubric. chen's page is open on a phone-sized
viewport and at 1,000 px from before the worker starts; it must move by itself (no reload)
from waiting (position, estimated wait) through transcribing and evaluating to done with
the scores, feedback and transcript, and show nothing of the other students. Screenshots
of each state go to artifacts/student/. Then a transcript holding `<script>` and
`<img onerror>` (the inline test doubles) renders as text, with no dialog.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, make_wb
from tests.server_helpers import LiveServer
from tests.speech import SENTENCES, speak, speak_many
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from workbench.media import sha256_file
from workbench.server import create_app

pytestmark = [pytest.mark.vllm, pytest.mark.stt, pytest.mark.browser]
ARTIFACTS = REPO / "artifacts" / "student"
RUBRIC = {"criteria": [{"name": "accuracy", "description": "facts are right", "max_score": 5},
                       {"name": "clarity", "description": "easy to follow", "max_score": 4}],
          "question": "Explain one fact of nature.", "feedback_max_chars": 40}
HEADLINES = {"waiting": "waiting", "transcribing": "your video is being processed",
             "evaluating": "your video is being evaluated", "done": "done"}
EVIL = '<script>alert("t")</script><img src=x onerror="alert(1)">'


def _state(headline: str) -> str | None:
    """The state a page's headline (its h1) names; None for the in-between ones."""
    return {words: name for name, words in HEADLINES.items()}.get(headline.strip())


@pytest.fixture(autouse=True)
def _private_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_LOCK_DIR", str(tmp_path / "locks"))


def test_a_students_page_follows_a_real_job_to_its_result(
        tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # short recordings (the tiny Llama's 512 tokens hold the rubric prompt, the transcript
    # and the answer: chen's is one sentence); batches of 3: chen is the first of batch 2,
    # whose STT phase covers all three recordings
    said = {"amir": (0, 7), "bea": (4, 0), "dana": (10, 2), "chen": (8,), "eli": (11, 0),
            "fay": (7, 3)}
    files = {n: speak_many([SENTENCES[i] for i in ix], tmp_path / f"{n}.wav")
             for n, ix in said.items()}
    wb = make_wb(tmp_path / "wb")
    llm = {"model": str(tiny_llama), "max_tokens": 120,
           "options": {"dtype": "float32", "max_model_len": 512,
                       "kv_cache_memory_bytes": 64 << 20}}
    with LiveServer(create_app(wb)) as srv:
        monkeypatch.setenv("WORKBENCH_PUBLIC_URL", srv.url)
        # Whisper tiny.en as usual, one thread, beam search, one file at a time: a batch's
        # STT phase then lasts a few seconds, so a page refreshing every 2 s shows it
        stt = {"batched": False, "beam_size": 10, "options": {"cpu_threads": 1}}
        job = wb.phased.submit(files, rubric=RUBRIC, batch_size=3, stt=stt, llm=llm)
        link = job.item("chen").link
        assert link is not None and link.startswith(f"{srv.url}/s/")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                        headless=True)
            try:
                phone = browser.new_page(viewport={"width": 390, "height": 844},
                                         device_scale_factor=2, is_mobile=True)
                wide = browser.new_page(viewport={"width": 1000, "height": 800})
                for page in (phone, wide):
                    page.goto(link)
                    page.evaluate("window.__sameDocument = 'yes'")
                first = phone.inner_text("main")
                assert _state(phone.inner_text("main h1")) == "waiting", first
                assert "your position: batch 2, student 1/3" in first
                assert "3 ahead of you" in first and "estimated wait" in first
                _shoot(phone, wide, "1-waiting")

                wb.start_worker()
                seen: list[str] = ["waiting"]
                texts: dict[str, str] = {"waiting": first}
                deadline = time.monotonic() + 600
                while seen[-1] != "done":
                    assert time.monotonic() < deadline, f"page stuck at {seen}"
                    text = phone.inner_text("main")
                    st = _state(phone.inner_text("main h1"))
                    if st is not None and st != seen[-1]:
                        seen.append(st)
                        texts[st] = text
                        _shoot(phone, wide, f"{len(seen)}-{st}")
                    time.sleep(0.1)
                assert seen == ["waiting", "transcribing", "evaluating", "done"], seen
                assert re.search(r"STT phase \([0-3]/3 students complete\)", texts["transcribing"])
                assert "next: evaluation" in texts["transcribing"]
                assert "evaluation phase (" in texts["evaluating"]
                for page in (phone, wide):  # refreshed by its script: the same document
                    assert page.evaluate("window.__sameDocument") == "yes"
                    assert page.inner_text("#live") == ""  # refreshing stopped at the result
                done = wide.inner_text("main")
                row = job.results().set_index("item_id").loc["chen"]
                assert "Scores" in done and "Feedback" in done and "Transcript" in done
                assert f"overall {row.overall}/10" in done
                assert row.transcript.strip()[:40] in done
                assert wide.inner_text("td.num >> nth=0") == f"{row.score_accuracy}/5"
                others = job.results().set_index("item_id").drop(index="chen")
                for name, t in others.transcript.items():
                    assert t.strip()[:30] not in done and name not in done
                _shoot(phone, wide, "5-done-bottom", full=True)

                # amir's link opens amir's page only
                amir = browser.new_page(viewport={"width": 1000, "height": 800})
                amir.goto(job.item("amir").link or "")
                mine = amir.inner_text("main")
                assert "amir.wav" in mine and "chen" not in mine
                assert others.loc["amir", "transcript"].strip()[:30] in mine

                _escaped_in_the_browser(browser, wb, tmp_path)
            finally:
                browser.close()
    wb.stop_workers()


def _escaped_in_the_browser(browser: object, wb: object, tmp_path: Path) -> None:
    """A transcript with markup (the inline doubles) shows as text and runs nothing."""
    clip = speak(SENTENCES[11], tmp_path / "evil.wav")
    job = wb.phased.submit(  # type: ignore[attr-defined]
        {"eve": clip}, rubric=RUBRIC, batch_size=1,
        stt={"engine": "tests.phased_doubles:SlowTranscriber", "isolation": "inline",
             "options": {"delay_s": 0.0, "texts": {sha256_file(clip): EVIL}}},
        llm={"model": "judge", "engine": "tests.phased_doubles:ScriptedJudge",
             "isolation": "inline"})
    job.wait(timeout=120, progress=False, poll_s=0.05)
    page = browser.new_page(viewport={"width": 390, "height": 844})  # type: ignore[attr-defined]
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(job.item("eve").link)
    assert page.inner_text(".transcript") == EVIL
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    page.wait_for_timeout(500)
    assert dialogs == []
    page.screenshot(path=str(ARTIFACTS / "6-escaped-phone.png"), full_page=True)


def _shoot(phone: object, wide: object, name: str, full: bool = False) -> None:
    phone.screenshot(path=str(ARTIFACTS / f"{name}-phone.png"), full_page=full)  # type: ignore[attr-defined]
    wide.screenshot(path=str(ARTIFACTS / f"{name}-1000px.png"), full_page=full)  # type: ignore[attr-defined]
