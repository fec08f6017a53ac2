"""Gemini through google-genai (3.x, `client.aio`): media upload once, calls paced and retried.

What this adapter adds to the SDK, and where it lives:

- **Upload once, wait for ACTIVE** (`gemini_files`): media are keyed by content hash in a
  `FileCache` (the grid keeps it in the store), reused until near expiry, shared between
  concurrent callers; PROCESSING is polled, FAILED raises `MediaFailed` naming the media.
- **Retries and pacing** (`gemini_client`): 429/5xx retried with backoff and jitter
  (honouring RetryInfo), a per-model token bucket before every attempt; the API key comes
  from the environment only and stays in memory.
- **Structured output** (`gemini_messages`, `structured`): `response_schema=<pydantic
  model>`; when the SDK's `response.parsed` is None the text is parsed here.
- **Batch mode** (`gemini_batch`): one inlined Batch job per model, polled to the end.
- **Accounting**: every call returns latency, time spent waiting, attempts and token
  usage (`GeminiCall`, an `engines.base.Outcome`).

This module adds the realtime call. Knows nothing about jobs.
"""

from __future__ import annotations

import asyncio
import time

from workbench.engines.gemini_batch import GeminiBatches
from workbench.engines.gemini_client import MissingApiKey, describe, error_code
from workbench.engines.gemini_files import GeminiUploads
from workbench.engines.gemini_messages import GeminiCall, GeminiRequest, config, contents, to_call
from workbench.engines.ratelimit import Stopped


class GeminiEngine(GeminiUploads, GeminiBatches):
    """The Gemini adapter. Use inside one event loop; `await engine.aclose()` at the end.

    `GeminiEngine(settings, file_cache=..., **overrides)`: the client and its retries
    (`gemini_client`), uploads (`gemini_files`), batch mode (`gemini_batch`); this class
    adds the realtime call.
    """

    name = "gemini"

    async def generate(self, model: str, req: GeminiRequest, *,
                       stop: asyncio.Event | None = None) -> GeminiCall:
        """One generate_content, paced and retried. Errors come back in the result.

        Raises only Stopped (nothing sent after the stop event) and MissingApiKey.
        """
        limiter = self.limiter(model)
        waited, attempts, latency = 0.0, 0, None
        body, cfg = contents(req), config(req)
        try:
            async for attempt in self._retrying(stop):
                with attempt:
                    waited += await limiter.acquire(stop)
                    attempts += 1
                    self.stats["calls"] += 1
                    t0 = time.monotonic()
                    try:
                        response = await self.client.aio.models.generate_content(
                            model=model, contents=body, config=cfg)
                    except Exception as e:
                        if error_code(e) == 429:
                            limiter.penalize()
                        raise
                    latency = time.monotonic() - t0
        except (Stopped, MissingApiKey):
            raise
        except Exception as e:
            code = error_code(e)
            return GeminiCall(model=model, error=describe(e), attempts=attempts,
                              error_code=str(code) if code is not None else type(e).__name__,
                              wait_s=waited)
        call = to_call(model, req, response)
        call.latency_s, call.wait_s, call.attempts = latency, waited, attempts
        return call
