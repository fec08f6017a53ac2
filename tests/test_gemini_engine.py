"""The Gemini engine against the fake REST server, through the real google-genai SDK."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from tests.fake_gemini import API_KEY, FakeGemini, engine_settings
from workbench.engines.gemini import GeminiEngine
from workbench.engines.gemini_client import GeminiSettings, MissingApiKey
from workbench.engines.gemini_files import MediaFailed, MemoryFileCache
from workbench.engines.gemini_messages import GeminiRequest
from workbench.engines.ratelimit import RateLimiter, Stopped
from workbench.engines.structured import StructuredOutputError, parse_structured

# the SDK subclasses aiohttp.ClientSession, which aiohttp deprecates
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Verdict(BaseModel):
    score: int = Field(ge=1, le=10)
    reasoning: str


class Judgement(BaseModel):
    A: Verdict
    overall_summary: str


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with FakeGemini() as server:
        yield server


def _engine(fake: FakeGemini, cache: MemoryFileCache | None = None, **kw: object) -> GeminiEngine:
    return GeminiEngine(GeminiSettings(**engine_settings(fake.url, **kw)), file_cache=cache)


def _video(tmp_path: Path, name: str = "clip.mp4", data: bytes = b"\x00video" * 100) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_upload_once_shared_and_reused_from_cache(fake: FakeGemini, tmp_path: Path) -> None:
    video = _video(tmp_path)
    cache = MemoryFileCache()

    async def first() -> list[str]:
        eng = _engine(fake, cache)
        try:
            files = await asyncio.gather(*(eng.upload(video) for _ in range(5)))
            return [f.name for f in files] + [files[0].state, str(eng.stats["uploads"])]
        finally:
            await eng.aclose()

    *names, state, uploads = run(first())
    assert len(set(names)) == 1 and state == "ACTIVE" and uploads == "1"
    ups = fake.requests("upload.finalize")
    assert len(ups) == 1 and ups[0]["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert len(fake.requests("upload.start")) == 1
    # PROCESSING once, then ACTIVE: two polls, with backoff between
    assert [e["state"] for e in fake.requests("files.get")] == ["PROCESSING", "ACTIVE"]

    async def second() -> tuple[str, int, int]:
        eng = _engine(fake, cache)  # a re-run: new engine, same cache
        try:
            f = await eng.upload(video)
            return f.name, eng.stats["uploads"], eng.stats["reused_files"]
        finally:
            await eng.aclose()

    name, uploads2, reused = run(second())
    assert (name, uploads2, reused) == (names[0], 0, 1)
    assert len(fake.requests("upload.start")) == 1  # confirmed with files.get, not re-sent

    fake.forget_files()  # expired on the service: uploaded again, cache updated
    name3, uploads3, _ = run(second())
    assert name3 != names[0] and uploads3 == 1
    assert cache.get(fake.url, hashlib.sha256(video.read_bytes()).hexdigest()).name == name3


def test_failed_processing_is_a_clear_media_error(fake: FakeGemini, tmp_path: Path) -> None:
    bad = _video(tmp_path, "broken.mp4", b"garbage")
    fake.fail_media("broken.mp4")

    async def go() -> None:
        eng = _engine(fake)
        try:
            with pytest.raises(MediaFailed) as e1:
                await eng.upload(bad)
            with pytest.raises(MediaFailed) as e2:  # same error again, no second upload
                await eng.upload(bad)
            assert e1.value is e2.value
            raise e1.value
        finally:
            await eng.aclose()

    with pytest.raises(MediaFailed, match=r"media broken.mp4: processing FAILED .*video could"
                                          r" not be processed"):
        run(go())
    assert len(fake.requests("upload.start")) == 1


def test_unknown_mime_type_is_refused_before_upload(fake: FakeGemini, tmp_path: Path) -> None:
    odd = _video(tmp_path, "clip.zzz")

    async def go() -> None:
        eng = _engine(fake)
        try:
            await eng.upload(odd)
        finally:
            await eng.aclose()

    with pytest.raises(MediaFailed, match="unknown mime type for clip.zzz"):
        run(go())
    assert fake.requests("upload.start") == []


def test_generate_with_file_tokens_latency_and_api_version(fake: FakeGemini, tmp_path: Path) -> None:
    video = _video(tmp_path)

    async def go():  # type: ignore[no-untyped-def]
        eng = _engine(fake)
        try:
            f = await eng.upload(video)
            return await eng.generate("gemini-a", GeminiRequest("k", "Describe the clip", [f],
                                                                params={"max_tokens": 50}))
        finally:
            await eng.aclose()

    call = run(go())
    assert call.ok and call.text.startswith("[gemini-a] answer to «Describe the clip» using 1 file")
    assert call.attempts == 1 and call.latency_s is not None and call.latency_s > 0
    assert call.prompt_tokens == 3 + 258 and call.completion_tokens == len(call.text.split())
    assert call.total_tokens == call.prompt_tokens + call.completion_tokens
    assert call.finish_reason == "STOP"
    gen = fake.requests("generate")
    assert len(gen) == 1 and gen[0]["api_version"] == "v1beta"
    assert gen[0]["generation_config"] == {"maxOutputTokens": 50}
    assert gen[0]["files"] == [f"{fake.url}/v1beta/files/{fake.requests('upload.finalize')[0]['file']}"]


def test_429_is_retried_with_retry_info_and_succeeds(fake: FakeGemini) -> None:
    fake.inject("generate", 429, times=2, model="gemini-a", retry_delay_s=0.02)

    async def go():  # type: ignore[no-untyped-def]
        eng = _engine(fake)
        try:
            return await eng.generate("gemini-a", GeminiRequest("k", "hello")), eng.stats
        finally:
            await eng.aclose()

    call, stats = run(go())
    assert call.ok and call.attempts == 3 and stats["retries"] == 2
    assert [e["status"] for e in fake.requests("generate")] == [429, 429, 200]


def test_500_forever_is_an_error_result_not_an_exception(fake: FakeGemini) -> None:
    fake.fail_always("gemini-down", 500)

    async def go():  # type: ignore[no-untyped-def]
        eng = _engine(fake)
        try:
            return await eng.generate("gemini-down", GeminiRequest("k", "hello"))
        finally:
            await eng.aclose()

    call = run(go())
    assert not call.ok and call.error_code == "500" and call.attempts == 4
    assert "HTTP 500 INTERNAL: model gemini-down is down" in call.error
    assert len(fake.requests("generate", "gemini-down")) == 4


def test_400_is_not_retried(fake: FakeGemini) -> None:
    fake.inject("generate", 400, times=1, message="bad request body")

    async def go():  # type: ignore[no-untyped-def]
        eng = _engine(fake)
        try:
            return await eng.generate("gemini-a", GeminiRequest("k", "hello"))
        finally:
            await eng.aclose()

    call = run(go())
    assert (call.ok, call.error_code, call.attempts) == (False, "400", 1)
    assert "bad request body" in call.error


def test_structured_output_parsed_fenced_fallback_and_invalid(fake: FakeGemini) -> None:
    req = GeminiRequest("k", 'Judge these.\n<answer id="A">it rains</answer>', schema=Judgement,
                        system="You are a fair judge.")

    async def go():  # type: ignore[no-untyped-def]
        eng = _engine(fake)
        try:
            ok = await eng.generate("judge", req)
            fake.judge_fenced = True  # SDK's response.parsed is None: our parser takes over
            fenced = await eng.generate("judge", req)
            fake.judge_fenced = False
            fake.judge_returns_invalid_json(times=1)
            bad = await eng.generate("judge", req)
            return ok, fenced, bad
        finally:
            await eng.aclose()

    ok, fenced, bad = run(go())
    assert ok.ok and ok.parsed["A"]["reasoning"] == "answer A is plausible"
    assert 1 <= ok.parsed["A"]["score"] <= 10
    assert fenced.ok and fenced.text.startswith("```json") and fenced.parsed == ok.parsed
    assert not bad.ok and bad.error_code == "parse" and bad.parsed is None
    assert "not a valid Judgement" in bad.error and "model A did great" in bad.error
    sent = fake.requests("generate")[0]
    assert sent["schema"] and sent["generation_config"]["responseMimeType"] == "application/json"
    assert sent["system"]["parts"][0]["text"] == "You are a fair judge."


def test_parse_structured_messages() -> None:
    assert parse_structured('noise {"A": {"score": 3, "reasoning": "r"}, "overall_summary": "s"}'
                            ' trailing', Judgement).A.score == 3
    with pytest.raises(StructuredOutputError, match=r"A.score: Input should be less than or"):
        parse_structured('{"A": {"score": 11, "reasoning": "r"}, "overall_summary": "s"}', Judgement)
    with pytest.raises(StructuredOutputError, match="no JSON object found"):
        parse_structured("", Judgement)


def test_missing_api_key_is_a_clear_error(fake: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")

    async def go() -> None:
        eng = _engine(fake)
        try:
            await eng.generate("gemini-a", GeminiRequest("k", "hello"))
        finally:
            await eng.aclose()

    with pytest.raises(MissingApiKey, match="set GEMINI_API_KEY or GOOGLE_API_KEY"):
        run(go())
    assert fake.log == []


def test_base_url_from_environment(fake: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.url)
    eng = GeminiEngine(retry={"max_attempts": 1})
    assert eng.endpoint == fake.url and eng.settings.retry.max_attempts == 1

    async def go():  # type: ignore[no-untyped-def]
        try:
            return await eng.generate("gemini-a", GeminiRequest("k", "hi"))
        finally:
            await eng.aclose()

    assert run(go()).ok and len(fake.requests("generate")) == 1


def test_rate_limiter_spaces_calls_per_model(fake: FakeGemini) -> None:
    async def go() -> list[float]:
        eng = _engine(fake, rpm={"slow": 1200}, burst=1)  # one request per 50 ms
        try:
            calls = await asyncio.gather(*(eng.generate(m, GeminiRequest(str(i), "hi"))
                                           for i in range(4) for m in ("slow", "fast")))
            assert all(c.ok for c in calls)
            assert eng.limiter("fast").rpm == 60_000 and eng.limiter("slow").granted == 4
            return list(eng.limiter("slow").recent)
        finally:
            await eng.aclose()

    t = run(go())
    gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
    assert len(t) == 4 and min(gaps) >= 0.045, gaps  # never closer than the rate allows


def test_limiter_wait_is_interrupted_by_stop() -> None:
    async def go() -> int:
        lim = RateLimiter(rpm=6, burst=1)  # 10 s between tokens
        stop = asyncio.Event()
        await lim.acquire(stop)
        waiters = [asyncio.create_task(lim.acquire(stop)) for _ in range(3)]
        await asyncio.sleep(0.01)
        stop.set()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        return sum(isinstance(r, Stopped) for r in results)

    assert asyncio.run(asyncio.wait_for(go(), timeout=5)) == 3


def test_batch_submit_and_poll_maps_results_by_key(fake: FakeGemini, tmp_path: Path) -> None:
    video = _video(tmp_path)
    fake.inject("generate", 500, times=1, message="item failed")  # first item errors

    async def go():  # type: ignore[no-untyped-def]
        eng = _engine(fake)
        try:
            f = await eng.upload(video)
            reqs = [GeminiRequest("c1/m", "first", [f]), GeminiRequest("c2/m", "second", [f]),
                    GeminiRequest("c3/j", '<answer id="A">x</answer>', schema=Judgement)]
            name = await eng.submit_batch("gemini-a", reqs, display_name="grid test")
            polls = []
            while True:
                p = await eng.poll_batch(name, "gemini-a", reqs)
                polls.append(p.state)
                if p.done:
                    return name, polls, p
        finally:
            await eng.aclose()

    name, states, poll = run(go())
    assert name.startswith("batches/") and states[-1] == "JOB_STATE_SUCCEEDED"
    assert "JOB_STATE_RUNNING" in states
    r = poll.results
    assert set(r) == {"c1/m", "c2/m", "c3/j"}
    assert not r["c1/m"].ok and r["c1/m"].error_code == "500"
    assert r["c2/m"].ok and "«second» using 1 file" in r["c2/m"].text
    assert r["c3/j"].ok and r["c3/j"].parsed["A"]["reasoning"] == "answer A is plausible"
    created = fake.requests("batch.create")
    assert len(created) == 1 and created[0]["keys"] == ["c1/m", "c2/m", "c3/j"]
    assert fake.requests("generate") == []  # nothing went through the realtime endpoint
