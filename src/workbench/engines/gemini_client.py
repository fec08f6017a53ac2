"""The Gemini client: API key from the environment, settings, pacing and retries.

The SDK retries nothing by default: what is retried is decided by the one failure
classifier (`engines.failures.classify`: 408/409/429/5xx, connection refused/reset,
timeouts; never a 400/401/403/404) and how by the shared `RetryPolicy` (exponential
backoff with jitter, tenacity), honouring the server's RetryInfo delay or Retry-After. A per-model token bucket
(`rpm`) is taken before every attempt. The key is read from `GEMINI_API_KEY` /
`GOOGLE_API_KEY` only and held in memory; the base URL comes from the settings or
`GOOGLE_GEMINI_BASE_URL` (tests point the real SDK at a local fake server that way).
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

from pydantic import BaseModel, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from workbench.engines.failures import RetryPolicy, classify
from workbench.engines.ratelimit import RateLimiter, Stopped, sleep_or_stop
from workbench.errors import WorkbenchError

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


class MissingApiKey(WorkbenchError):
    def __init__(self) -> None:
        super().__init__("no Gemini API key: set GEMINI_API_KEY or GOOGLE_API_KEY in the"
                         " environment of the process that runs the job (keys are never"
                         " stored by workbench)")


def api_key_from_env() -> str | None:
    for var in API_KEY_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


class GeminiSettings(BaseModel):
    """Everything tunable about the Gemini adapter. Nothing secret lives here."""

    base_url: str | None = None
    api_version: str = "v1beta"
    #: requests per minute per model name; models not listed get `default_rpm`
    rpm: dict[str, float] = Field(default_factory=dict)
    default_rpm: float = Field(60.0, gt=0)
    burst: float = Field(1.0, ge=1)
    #: backoff on transient failures (which ones: `failures.classify`)
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


def error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def retry_info_delay(exc: BaseException) -> float | None:
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


def describe(exc: BaseException) -> str:
    msg = getattr(exc, "message", None)
    code = error_code(exc)
    status = getattr(exc, "status", None)
    if code is not None:
        return f"HTTP {code} {status or ''}: {msg or exc}".replace("  ", " ")
    return f"{type(exc).__name__}: {exc}"


class GeminiClient:
    """The google-genai client with this adapter's settings: pacing, retries, counters.

    The uploads (`gemini_files.GeminiUploads`), the batch mode (`gemini_batch.GeminiBatches`)
    and `GeminiEngine.generate` all send through `client` inside `_retrying`.
    """

    def __init__(self, settings: GeminiSettings | None = None, **overrides: Any) -> None:
        base = settings or GeminiSettings()
        self.settings = (GeminiSettings.model_validate({**base.model_dump(), **overrides})
                         if overrides else base)
        self.endpoint = self.settings.resolved_base_url()
        self._client: Any = None
        self._limiters: dict[str, RateLimiter] = {}
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
        return classify(exc, endpoint=self.endpoint).transient

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = retry_info_delay(exc) if exc else None
        if hinted is None and exc is not None:
            hinted = classify(exc).retry_after_s  # Retry-After on a 429/503
        return self.settings.retry.delay(state.attempt_number, hinted)

    def _retrying(self, stop: asyncio.Event | None) -> AsyncRetrying:
        async def sleep(seconds: float) -> None:
            self.stats["retries"] += 1
            await sleep_or_stop(seconds, stop)

        return AsyncRetrying(stop=stop_after_attempt(self.settings.retry.max_attempts),
                             wait=self._wait, retry=retry_if_exception(self._retryable),
                             sleep=sleep, reraise=True)
