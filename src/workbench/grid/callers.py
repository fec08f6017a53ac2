"""One async `call()` per provider, so the grid runner treats every model alike.

- Gemini: media uploaded once (engine cache), then `generate` — paced, retried.
- vLLM / OpenAI-compatible: the lead's ChatEngines are synchronous iterators. A bridge
  thread per engine collects whatever calls are waiting, feeds them to `engine.chat()`
  as one window (so concurrent cells share the continuous batch) and resolves each
  caller's future as its result streams out. Calls are paced by a per-model rate limiter
  first (it matters for hosted OpenAI-compatible servers).

Every caller returns an `Outcome` (answer or error, with its costs); it raises only
`Stopped` (nothing was sent because the job is stopping).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from workbench.engines.base import ChatEngine, ChatRequest, ChatResult, Outcome
from workbench.engines.gemini import GeminiEngine
from workbench.engines.gemini_files import GeminiFile, MediaFailed
from workbench.engines.gemini_messages import GeminiRequest
from workbench.engines.logprobs import top_of
from workbench.engines.ratelimit import RateLimiter, Stopped
from workbench.engines.structured import StructuredOutputError, parse_structured
from workbench.grid.spec import MediaRef, ModelSpec


@dataclass
class CallInput:
    """What one call sends: text prompt, maybe the media, maybe a schema."""

    key: str
    prompt: str
    media: MediaRef | None = None
    schema: type[BaseModel] | None = None
    json_schema: dict[str, Any] | None = None
    system: str | None = None
    #: a scoring call (base-model judge): the prompt is a completion, one token is read,
    #: and `parsed["top"]` holds that token's top log-probabilities (`grid.geval`)
    scoring: bool = False


class GeminiCaller:
    def __init__(self, engine: GeminiEngine, model: ModelSpec) -> None:
        self.engine, self.model = engine, model

    async def file_for(self, media: MediaRef, stop: asyncio.Event | None) -> GeminiFile:
        return await self.engine.upload(media.path, mime_type=media.mime_type,
                                        sha256=media.sha256, display_name=media.name, stop=stop)

    async def call(self, ci: CallInput, stop: asyncio.Event | None) -> Outcome:
        files: list[GeminiFile] = []
        if ci.media is not None:
            try:
                files.append(await self.file_for(ci.media, stop))
            except MediaFailed as e:
                return Outcome(error=str(e), error_code="media")
        return await self.engine.generate(
            self.model.name, GeminiRequest(ci.key, ci.prompt, files, ci.schema, ci.system,
                                           self.model.params), stop=stop)


class EngineBridge:
    """Runs one synchronous ChatEngine in a thread; `submit()` from the event loop."""

    def __init__(self, engine: ChatEngine, window: int, name: str, *, pass_stop: bool = True,
                 kill: Callable[[], Any] | None = None) -> None:
        """`pass_stop`: hand `engine.chat` a stop callable (in-process engines poll it every
        step); an engine in a child process cannot take one, so `kill` ends it on cancel."""
        self.engine = engine
        self.window = window
        self.pass_stop, self.kill = pass_stop, kill
        self._q: queue.Queue[tuple[ChatRequest, asyncio.Future[ChatResult],
                                   asyncio.AbstractEventLoop] | None] = queue.Queue()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"grid-{name}")
        self._thread.start()

    def _serve(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            batch = [item]
            while True:  # everything already waiting joins this window
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                batch.append(nxt)
            pending = {req.custom_id: (fut, loop) for req, fut, loop in batch}
            kw: dict[str, Any] = {"stop": self._stop.is_set} if self.pass_stop else {}
            try:
                if not self._stop.is_set():
                    stream = self.engine.chat([req for req, _, _ in batch], window=self.window,
                                              **kw)  # type: ignore[call-arg]
                    for res in stream:
                        fut, loop = pending.pop(res.custom_id, (None, None))
                        if fut is not None and loop is not None:
                            loop.call_soon_threadsafe(_resolve, fut, res)
                        if self._stop.is_set():
                            close = getattr(stream, "close", None)
                            if callable(close):
                                close()
                            break
            except Exception as e:  # the engine broke: every waiting call gets the error
                if self._stop.is_set():  # ... unless a cancel ended it: those calls stopped
                    pending_stop(pending)
                    continue
                self.error = e
                for cid, (fut, loop) in list(pending.items()):
                    loop.call_soon_threadsafe(_resolve, fut, ChatResult(
                        custom_id=cid, error=f"engine failed: {type(e).__name__}: {e}",
                        error_code="engine_error"))
                pending.clear()
            pending_stop(pending)  # aborted by stop

    async def submit(self, req: ChatRequest) -> ChatResult:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ChatResult] = loop.create_future()
        self._q.put((req, fut, loop))
        return await fut

    def stop(self) -> None:
        self._stop.set()
        if self.kill is not None:  # a child-process engine: end it now, its calls are stopped
            try:
                self.kill()
            except Exception:  # already gone
                pass

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=60)


def pending_stop(pending: dict[str, tuple[asyncio.Future[ChatResult],
                                         asyncio.AbstractEventLoop]]) -> None:
    """Every call still waiting ends as 'stopped' (never recorded; a resume sends it)."""
    for cid, (fut, loop) in pending.items():
        loop.call_soon_threadsafe(_resolve, fut, ChatResult(
            custom_id=cid, error="stopped before an answer", error_code="stopped"))
    pending.clear()


def _resolve(fut: asyncio.Future[ChatResult], res: ChatResult) -> None:
    if not fut.done():
        fut.set_result(res)


class EngineCaller:
    """A vLLM or OpenAI-compatible model behind an EngineBridge."""

    def __init__(self, bridge: EngineBridge, model: ModelSpec, limiter: RateLimiter | None) -> None:
        self.bridge, self.model, self.limiter = bridge, model, limiter

    async def call(self, ci: CallInput, stop: asyncio.Event | None) -> Outcome:
        waited = await self.limiter.acquire(stop) if self.limiter is not None else 0.0
        if stop is not None and stop.is_set():
            raise Stopped()
        if ci.scoring:
            return await self.score(ci, waited)
        messages: list[dict[str, Any]] = []
        if ci.system:
            messages.append({"role": "system", "content": ci.system})
        messages.append({"role": "user", "content": ci.prompt})
        params = dict(self.model.params)
        if ci.json_schema is not None:
            params["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "evaluation", "schema": ci.json_schema, "strict": True}}
        t0 = time.monotonic()
        res = await self.bridge.submit(ChatRequest(custom_id=ci.key, messages=messages,
                                                   params=params, model=self.model.name))
        latency = res.latency_s if res.latency_s is not None else time.monotonic() - t0
        if res.error_code == "stopped":
            raise Stopped()
        out = Outcome(text=res.text, error=res.error, error_code=res.error_code,
                      latency_s=round(latency, 4), wait_s=waited, attempts=1,
                      prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens,
                      total_tokens=res.prompt_tokens + res.completion_tokens,
                      finish_reason=res.choices[0].finish_reason if res.choices else None)
        if out.ok and ci.schema is not None:
            try:
                out.parsed = parse_structured(out.text, ci.schema).model_dump()
            except StructuredOutputError as e:
                out.error, out.error_code = str(e), "parse"
        return out


    async def score(self, ci: CallInput, waited: float) -> Outcome:
        """One-token completion, kept with its top log-probabilities (G-Eval)."""
        t0 = time.monotonic()
        res = await self.bridge.submit(ChatRequest(
            custom_id=ci.key, endpoint="completion", prompt=ci.prompt, model=self.model.name,
            params={"max_tokens": 1, "temperature": 0.0, "logprobs": TOP_LOGPROBS}))
        if res.error_code == "stopped":
            raise Stopped()
        out = Outcome(text=res.text, error=res.error, error_code=res.error_code,
                      latency_s=round(res.latency_s if res.latency_s is not None
                                      else time.monotonic() - t0, 4), wait_s=waited, attempts=1,
                      prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens,
                      total_tokens=res.prompt_tokens + res.completion_tokens)
        top = top_of(res.choices[0].logprobs) if res.choices else []
        if out.ok and top:
            out.parsed = {"top": [[t.token, t.logprob] for t in top]}
        elif out.ok:
            out.error, out.error_code = "the engine returned no log-probabilities", "parse"
        return out


TOP_LOGPROBS = 20
Caller = GeminiCaller | EngineCaller
EngineFactory = Callable[[dict[str, Any]], ChatEngine]
