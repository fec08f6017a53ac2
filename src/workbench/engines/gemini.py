"""Gemini through google-genai (3.x, `client.aio`): media upload once, calls paced and retried.

What this adapter adds to the SDK, and why:

- **Upload once.** A media file is identified by its content hash. The hash maps to an
  uploaded file name in a `FileCache` (the grid keeps it in the store), so the same video is
  uploaded once and reused across cells and re-runs until it nears its 48 h expiry. A
  cached name is confirmed with `files.get` before use; a vanished file is uploaded again.
  Concurrent users of one media share a single upload.
- **Wait for ACTIVE.** A file is unusable while PROCESSING (400 "not in an ACTIVE state");
  we poll `files.get` with backoff. FAILED (or a timeout) raises `MediaFailed` naming the
  media, so the caller can mark exactly the calls that needed it.
- **Retries.** The SDK retries nothing by default: 429 and 5xx are retried here with
  exponential backoff and jitter (tenacity), honouring the server's RetryInfo delay.
- **Pacing.** A per-model token bucket (`rpm`) is taken before every attempt.
- **Structured output.** `response_schema=<pydantic model>`; when `response.parsed` is None
  (the SDK's silent failure on JSON it cannot validate, e.g. inside markdown fences) we parse
  the text ourselves and report a clear error if that fails too.
- **Accounting.** Every call returns latency, time spent waiting, attempts and token usage.

The API key is read from `GEMINI_API_KEY` / `GOOGLE_API_KEY` only and held in memory.
The base URL comes from the `base_url` argument or `GOOGLE_GEMINI_BASE_URL` (tests point
the real SDK at a local fake server that way). Knows nothing about jobs.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, Field, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from workbench.engines.base import Outcome
from workbench.engines.ratelimit import RateLimiter, Stopped, sleep_or_stop
from workbench.errors import WorkbenchError
from workbench.media import guess_mime_type, sha256_file

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
#: OpenAI body names accepted for symmetry with local models → GenerateContentConfig names.
PARAM_ALIASES = {"max_tokens": "max_output_tokens", "stop": "stop_sequences"}


class MissingApiKey(WorkbenchError):
    def __init__(self) -> None:
        super().__init__("no Gemini API key: set GEMINI_API_KEY or GOOGLE_API_KEY in the"
                         " environment of the process that runs the job (keys are never"
                         " stored by workbench)")


class MediaFailed(WorkbenchError):
    """A media file could not be made usable (upload refused, processing FAILED, timeout)."""

    def __init__(self, media: str, reason: str) -> None:
        super().__init__(f"media {media}: {reason}")
        self.media, self.reason = media, reason


class StructuredOutputError(WorkbenchError):
    """The model's text is not JSON valid for the requested schema."""


def api_key_from_env() -> str | None:
    for var in API_KEY_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


def gemini_params(params: dict[str, Any]) -> dict[str, Any]:
    """OpenAI-style names (max_tokens, stop) → GenerateContentConfig names; rest as is."""
    out = {PARAM_ALIASES.get(k, k): v for k, v in params.items()}
    if isinstance(out.get("stop_sequences"), str):
        out["stop_sequences"] = [out["stop_sequences"]]
    return out


def validate_params(params: dict[str, Any]) -> None:
    """Raise ValueError naming the bad field if GenerateContentConfig would refuse these."""
    from google.genai import types

    try:
        types.GenerateContentConfig(**gemini_params(params))
    except ValidationError as e:
        raise ValueError("; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
                                   for err in e.errors())) from None


# -- structured output ----------------------------------------------------------------------
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)


M = TypeVar("M", bound=BaseModel)


def parse_structured(text: str, schema: type[M]) -> M:
    """Parse `text` as `schema` JSON, tolerating markdown fences and chatter around it."""
    candidates = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    first, last = text.find("{"), text.rfind("}")
    if 0 <= first < last:
        candidates.append(text[first:last + 1])
    problem = "no JSON object found"
    for c in candidates:
        if not c:
            continue
        try:
            return schema.model_validate_json(c)
        except ValidationError as e:
            errs = e.errors()
            if errs and errs[0]["type"] == "json_invalid":
                problem = f"invalid JSON ({errs[0]['msg']})"
                continue
            problem = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in errs[:3])
    snippet = text[:160].replace("\n", " ")
    raise StructuredOutputError(f"output is not a valid {schema.__name__}: {problem};"
                                f" text starts {snippet!r}")


# -- file cache -----------------------------------------------------------------------------
class GeminiFile(BaseModel):
    """An uploaded media file: its content hash and where the service keeps it."""

    sha256: str
    name: str
    uri: str
    mime_type: str
    size_bytes: int = 0
    expires_at: float | None = None
    state: str = "ACTIVE"


class FileCache(Protocol):
    """Where content hash → uploaded file lives between runs (the grid uses the store)."""

    def get(self, endpoint: str, sha256: str) -> GeminiFile | None: ...

    def put(self, endpoint: str, f: GeminiFile) -> None: ...

    def drop(self, endpoint: str, sha256: str) -> None: ...


class MemoryFileCache:
    """A FileCache for one process; enough for notebooks that do not use the store."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, str], GeminiFile] = {}

    def get(self, endpoint: str, sha256: str) -> GeminiFile | None:
        return self._files.get((endpoint, sha256))

    def put(self, endpoint: str, f: GeminiFile) -> None:
        self._files[(endpoint, f.sha256)] = f

    def drop(self, endpoint: str, sha256: str) -> None:
        self._files.pop((endpoint, sha256), None)


# -- settings and results -------------------------------------------------------------------
class RetryPolicy(BaseModel):
    """Backoff on 429/5xx: delay = min(max_s, initial_s * 2**n) + jitter, or RetryInfo."""

    max_attempts: int = Field(6, ge=1)
    initial_s: float = Field(1.0, ge=0)
    max_s: float = Field(60.0, ge=0)
    jitter_s: float = Field(0.5, ge=0)
    retry_status: list[int] = Field(default_factory=lambda: [408, 429, 500, 502, 503, 504])


class GeminiSettings(BaseModel):
    """Everything tunable about the Gemini adapter. Nothing secret lives here."""

    base_url: str | None = None
    api_version: str = "v1beta"
    #: requests per minute per model name; models not listed get `default_rpm`
    rpm: dict[str, float] = Field(default_factory=dict)
    default_rpm: float = Field(60.0, gt=0)
    burst: float = Field(1.0, ge=1)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    poll_initial_s: float = Field(1.0, gt=0)
    poll_max_s: float = Field(10.0, gt=0)
    active_timeout_s: float = Field(900.0, gt=0)
    request_timeout_s: float | None = Field(600.0, gt=0)
    #: a cached file this close to expiry is uploaded again rather than reused
    expiry_margin_s: float = Field(3600.0, ge=0)

    def resolved_base_url(self) -> str:
        return (self.base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL")
                or DEFAULT_BASE_URL).rstrip("/")


class GeminiCall(Outcome):
    """One finished generate call: the answer or the error, with its costs."""

    model: str
    thoughts_tokens: int = 0


@dataclass
class GeminiRequest:
    """What to ask: a prompt, optional uploaded files, optional schema and system text."""

    key: str
    prompt: str
    files: Sequence[GeminiFile] = ()
    schema: type[BaseModel] | None = None
    system: str | None = None
    params: dict[str, Any] | None = None


class BatchPoll(BaseModel):
    name: str
    state: str
    done: bool
    #: per request key, when done
    results: dict[str, GeminiCall] = Field(default_factory=dict)
    error: str | None = None


TERMINAL_BATCH_STATES = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                         "JOB_STATE_EXPIRED", "JOB_STATE_PARTIALLY_SUCCEEDED"}


def _error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def _retry_info_delay(exc: BaseException) -> float | None:
    """The server's RetryInfo.retryDelay ("37s") from an APIError, if any."""
    details = getattr(exc, "details", None)
    try:
        items = details["error"].get("details") or []  # type: ignore[index]
    except (TypeError, KeyError, AttributeError):
        return None
    for d in items:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("RetryInfo"):
            m = re.fullmatch(r"([\d.]+)s", str(d.get("retryDelay", "")))
            if m:
                return float(m.group(1))
    return None


def _describe(exc: BaseException) -> str:
    msg = getattr(exc, "message", None)
    code = _error_code(exc)
    status = getattr(exc, "status", None)
    if code is not None:
        return f"HTTP {code} {status or ''}: {msg or exc}".replace("  ", " ")
    return f"{type(exc).__name__}: {exc}"


class GeminiEngine:
    """The Gemini adapter. Use inside one event loop; `await engine.aclose()` at the end."""

    name = "gemini"

    def __init__(self, settings: GeminiSettings | None = None, *,
                 file_cache: FileCache | None = None, **overrides: Any) -> None:
        base = settings or GeminiSettings()
        self.settings = (GeminiSettings.model_validate({**base.model_dump(), **overrides})
                         if overrides else base)
        self.file_cache: FileCache = file_cache if file_cache is not None else MemoryFileCache()
        self.endpoint = self.settings.resolved_base_url()
        self._client: Any = None
        self._limiters: dict[str, RateLimiter] = {}
        self._uploads: dict[str, asyncio.Task[GeminiFile]] = {}
        #: counters for reports: uploads done, files reused from the cache
        self.stats = {"uploads": 0, "reused_files": 0, "retries": 0, "calls": 0}

    # -- client --------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            from google import genai
            from google.genai import types

            key = api_key_from_env()
            if not key:
                raise MissingApiKey()
            timeout = self.settings.request_timeout_s
            self._client = genai.Client(api_key=key, http_options=types.HttpOptions(
                base_url=self.endpoint, api_version=self.settings.api_version,
                timeout=int(timeout * 1000) if timeout else None))
        return self._client

    async def aclose(self) -> None:
        for t in self._uploads.values():
            if not t.done():
                t.cancel()
        if self._client is not None:
            await self._client.aio.aclose()
            self._client = None

    def limiter(self, model: str) -> RateLimiter:
        if model not in self._limiters:
            rpm = self.settings.rpm.get(model, self.settings.default_rpm)
            self._limiters[model] = RateLimiter(rpm, self.settings.burst)
        return self._limiters[model]

    # -- retries -------------------------------------------------------------------------
    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, Stopped | MissingApiKey | asyncio.CancelledError):
            return False
        code = _error_code(exc)
        if code is not None:
            return code in self.settings.retry.retry_status
        import aiohttp

        return isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError)

    def _wait(self, state: RetryCallState) -> float:
        r = self.settings.retry
        n = state.attempt_number - 1
        delay = min(r.max_s, r.initial_s * (2 ** n)) + random.uniform(0, r.jitter_s)
        exc = state.outcome.exception() if state.outcome else None
        hinted = _retry_info_delay(exc) if exc else None
        return max(delay, min(hinted, r.max_s)) if hinted is not None else delay

    def _retrying(self, stop: asyncio.Event | None) -> AsyncRetrying:
        async def sleep(seconds: float) -> None:
            self.stats["retries"] += 1
            await sleep_or_stop(seconds, stop)

        return AsyncRetrying(stop=stop_after_attempt(self.settings.retry.max_attempts),
                             wait=self._wait, retry=retry_if_exception(self._retryable),
                             sleep=sleep, reraise=True)

    # -- media ---------------------------------------------------------------------------
    async def upload(self, path: str | os.PathLike[str], *, mime_type: str | None = None,
                     sha256: str | None = None, display_name: str | None = None,
                     stop: asyncio.Event | None = None) -> GeminiFile:
        """The ACTIVE uploaded file for this content: cached, shared, or uploaded now."""
        digest = sha256 or await asyncio.to_thread(sha256_file, path)
        task = self._uploads.get(digest)
        # a failed upload stays failed for every caller (one clear error per media, no
        # re-upload storm); only a cancelled one is tried again
        if task is None or task.cancelled():
            task = asyncio.ensure_future(self._ensure_file(Path(path), digest, mime_type,
                                                           display_name, stop))
            self._uploads[digest] = task
        return await asyncio.shield(task)

    async def _ensure_file(self, path: Path, digest: str, mime_type: str | None,
                           display_name: str | None, stop: asyncio.Event | None) -> GeminiFile:
        label = display_name or path.name
        cached = self.file_cache.get(self.endpoint, digest)
        if cached is not None:
            fresh = cached.expires_at is None or (
                cached.expires_at - time.time() > self.settings.expiry_margin_s)
            if fresh:
                try:
                    f = await self._wait_active(cached, label, stop)
                    self.stats["reused_files"] += 1
                    return f
                except _FileGone:
                    pass
            self.file_cache.drop(self.endpoint, digest)
        mime = mime_type or guess_mime_type(path)
        if mime is None:
            raise MediaFailed(label, f"unknown mime type for {path.name}; pass mime_type")
        try:
            async for attempt in self._retrying(stop):
                with attempt:
                    uploaded = await self.client.aio.files.upload(
                        file=path, config={"mime_type": mime, "display_name": label})
        except (Stopped, MissingApiKey):
            raise
        except Exception as e:
            raise MediaFailed(label, f"upload failed: {_describe(e)}") from e
        self.stats["uploads"] += 1
        f = self._from_sdk(uploaded, digest, mime)
        self.file_cache.put(self.endpoint, f)
        try:
            f = await self._wait_active(f, label, stop)
        except _FileGone as e:
            raise MediaFailed(label, "the uploaded file vanished while processing") from e
        self.file_cache.put(self.endpoint, f)
        return f

    @staticmethod
    def _from_sdk(sdk_file: Any, digest: str, mime: str | None) -> GeminiFile:
        exp = getattr(sdk_file, "expiration_time", None)
        state = getattr(sdk_file, "state", None)
        return GeminiFile(sha256=digest, name=sdk_file.name, uri=sdk_file.uri,
                          mime_type=sdk_file.mime_type or mime or "application/octet-stream",
                          size_bytes=int(sdk_file.size_bytes or 0),
                          expires_at=exp.timestamp() if exp is not None else None,
                          state=getattr(state, "name", str(state or "PROCESSING")))

    async def _wait_active(self, f: GeminiFile, label: str,
                           stop: asyncio.Event | None) -> GeminiFile:
        """Poll files.get with backoff until ACTIVE; FAILED/timeout → MediaFailed."""
        s = self.settings
        deadline = time.monotonic() + s.active_timeout_s
        delay = s.poll_initial_s
        while True:
            try:
                async for attempt in self._retrying(stop):
                    with attempt:
                        sdk_file = await self.client.aio.files.get(name=f.name)
            except (Stopped, MissingApiKey):
                raise
            except Exception as e:
                if _error_code(e) in (403, 404):
                    raise _FileGone(f.name) from e
                raise MediaFailed(label, f"files.get {f.name} failed: {_describe(e)}") from e
            cur = self._from_sdk(sdk_file, f.sha256, f.mime_type)
            if cur.state == "ACTIVE":
                return cur
            if cur.state == "FAILED":
                err = getattr(sdk_file, "error", None)
                why = getattr(err, "message", None) or "no reason given"
                self.file_cache.drop(self.endpoint, f.sha256)
                raise MediaFailed(label, f"processing FAILED on the service ({f.name}): {why}")
            if time.monotonic() + delay > deadline:
                raise MediaFailed(label, f"still {cur.state} after {s.active_timeout_s:.0f} s")
            await sleep_or_stop(delay, stop)
            delay = min(s.poll_max_s, delay * 1.5)

    # -- generate ------------------------------------------------------------------------
    def _contents(self, req: GeminiRequest) -> list[Any]:
        from google.genai import types

        parts = [types.Part.from_uri(file_uri=f.uri, mime_type=f.mime_type) for f in req.files]
        parts.append(types.Part(text=req.prompt))
        return [types.Content(role="user", parts=parts)]

    def _config(self, req: GeminiRequest) -> Any:
        from google.genai import types

        kw = gemini_params(req.params or {})
        if req.system:
            kw["system_instruction"] = req.system
        if req.schema is not None:
            kw.update(response_mime_type="application/json", response_schema=req.schema)
        return types.GenerateContentConfig(**kw)

    def _to_call(self, model: str, req: GeminiRequest, response: Any) -> GeminiCall:
        call = GeminiCall(model=model)
        usage = getattr(response, "usage_metadata", None)
        if usage is not None:
            call.prompt_tokens = usage.prompt_token_count or 0
            call.completion_tokens = usage.candidates_token_count or 0
            call.thoughts_tokens = usage.thoughts_token_count or 0
            call.total_tokens = usage.total_token_count or 0
        cands = getattr(response, "candidates", None) or []
        if cands and cands[0].finish_reason is not None:
            call.finish_reason = getattr(cands[0].finish_reason, "name", str(cands[0].finish_reason))
        try:
            call.text = response.text or ""
        except Exception:  # the SDK raises on some blocked / partless responses
            call.text = ""
        if not call.text and not cands:
            fb = getattr(response, "prompt_feedback", None)
            call.error = f"no answer (prompt feedback: {fb})" if fb else "empty response"
            call.error_code = "empty"
            return call
        if req.schema is not None:
            parsed = getattr(response, "parsed", None)
            if isinstance(parsed, BaseModel):
                call.parsed = parsed.model_dump()
            else:  # the SDK's silent failure: parse the text ourselves
                try:
                    call.parsed = parse_structured(call.text, req.schema).model_dump()
                except StructuredOutputError as e:
                    call.error, call.error_code = str(e), "parse"
        return call

    async def generate(self, model: str, req: GeminiRequest, *,
                       stop: asyncio.Event | None = None) -> GeminiCall:
        """One generate_content, paced and retried. Errors come back in the result.

        Raises only Stopped (nothing sent after the stop event) and MissingApiKey.
        """
        limiter = self.limiter(model)
        waited, attempts, latency = 0.0, 0, None
        contents, config = self._contents(req), self._config(req)
        try:
            async for attempt in self._retrying(stop):
                with attempt:
                    waited += await limiter.acquire(stop)
                    attempts += 1
                    self.stats["calls"] += 1
                    t0 = time.monotonic()
                    try:
                        response = await self.client.aio.models.generate_content(
                            model=model, contents=contents, config=config)
                    except Exception as e:
                        if _error_code(e) == 429:
                            limiter.penalize()
                        raise
                    latency = time.monotonic() - t0
        except (Stopped, MissingApiKey):
            raise
        except Exception as e:
            code = _error_code(e)
            return GeminiCall(model=model, error=_describe(e), attempts=attempts,
                              error_code=str(code) if code is not None else type(e).__name__,
                              wait_s=waited)
        call = self._to_call(model, req, response)
        call.latency_s, call.wait_s, call.attempts = latency, waited, attempts
        return call

    # -- batch mode ----------------------------------------------------------------------
    async def submit_batch(self, model: str, requests: Sequence[GeminiRequest], *,
                           display_name: str = "workbench",
                           stop: asyncio.Event | None = None) -> str:
        """Queue requests in one Gemini Batch job (inlined); returns the batch name."""
        from google.genai import types

        inlined = [types.InlinedRequest(contents=self._contents(r), config=self._config(r),
                                        metadata={"key": r.key}) for r in requests]
        async for attempt in self._retrying(stop):
            with attempt:
                job = await self.client.aio.batches.create(
                    model=model, src=types.BatchJobSource(inlined_requests=inlined),
                    config={"display_name": display_name})
        return str(job.name)

    async def poll_batch(self, name: str, model: str, requests: Sequence[GeminiRequest], *,
                         stop: asyncio.Event | None = None) -> BatchPoll:
        """Batch state; once done, one GeminiCall per request key.

        Responses come back in request order (documented); the metadata key, when the
        service echoes it, is checked against that order.
        """
        async for attempt in self._retrying(stop):
            with attempt:
                job = await self.client.aio.batches.get(name=name)
        state = getattr(job.state, "name", str(job.state))
        poll = BatchPoll(name=name, state=state, done=state in TERMINAL_BATCH_STATES)
        if not poll.done:
            return poll
        responses = list((job.dest.inlined_responses or []) if job.dest else [])
        by_key = {r.key: r for r in requests}
        for i, req in enumerate(requests):
            item = responses[i] if i < len(responses) else None
            meta_key = (item.metadata or {}).get("key") if item is not None else None
            if meta_key is not None and meta_key != req.key and meta_key in by_key:
                item = next((x for x in responses if (x.metadata or {}).get("key") == req.key), None)
            if item is None:
                why = job.error.message if getattr(job, "error", None) else f"batch {state}"
                poll.results[req.key] = GeminiCall(model=model, error=f"no response: {why}",
                                                   error_code="batch")
            elif item.error is not None:
                err = item.error
                code = getattr(err, "code", None)
                poll.results[req.key] = GeminiCall(
                    model=model, error=f"HTTP {code}: {getattr(err, 'message', err)}",
                    error_code=str(code) if code is not None else "batch")
            else:
                poll.results[req.key] = self._to_call(model, req, item.response)
        return poll

    async def cancel_batch(self, name: str) -> None:
        async for attempt in self._retrying(None):
            with attempt:
                await self.client.aio.batches.cancel(name=name)


class _FileGone(Exception):
    """A cached file name the service no longer knows (expired, deleted, other key)."""

