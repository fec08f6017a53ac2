"""Any OpenAI-compatible server (`vllm serve`, or others) as a ChatEngine.

Bounded concurrency (a thread pool with at most `concurrency` requests in flight, fed
lazily from the request iterator), retries with exponential backoff on 429/5xx and
connection errors (tenacity), and the API key read from an environment variable whose
*name* is all the job spec stores.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from workbench.engines import logprobs as lp
from workbench.engines.base import ChatRequest, ChatResult, Choice

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class RetryableHTTPError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


def _retryable(e: BaseException) -> bool:
    return isinstance(e, RetryableHTTPError | httpx.TransportError)


class OpenAIHTTPEngine:
    name = "openai"

    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1",
                 api_key_env: str | None = "OPENAI_API_KEY", concurrency: int = 16,
                 timeout_s: float = 600.0, max_attempts: int = 6, backoff_s: float = 0.5,
                 **_: Any) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.client: httpx.Client | None = None
        self._cancel = threading.Event()
        self.retries = 0

    def load(self) -> None:
        if self.client is not None:
            return
        headers = {}
        key = os.environ.get(self.api_key_env or "", "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout_s,
                                   limits=httpx.Limits(max_connections=self.concurrency))

    def unload(self) -> dict[str, Any]:
        if self.client is not None:
            self.client.close()
            self.client = None
        return {}

    def abort(self, ids: Iterable[str] | None = None) -> list[str]:
        """Requests already sent finish on the server; none not yet sent will go."""
        self._cancel.set()
        return []

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1

    def _post(self, req: ChatRequest) -> dict[str, Any]:
        assert self.client is not None
        path = "/chat/completions" if req.endpoint == "chat" else "/completions"
        body: dict[str, Any] = {"model": self.model, **req.params}
        if req.endpoint == "chat":
            body["messages"] = req.messages
        else:
            body["prompt"] = req.prompt

        @retry(retry=retry_if_exception(_retryable), stop=stop_after_attempt(self.max_attempts),
               wait=wait_exponential_jitter(initial=self.backoff_s, max=30), reraise=True,
               before_sleep=self._count_retry)
        def send() -> dict[str, Any]:
            r = self.client.post(path, json=body)  # type: ignore[union-attr]
            if r.status_code in RETRY_STATUS:
                raise RetryableHTTPError(r.status_code, r.text)
            if r.status_code != 200:
                raise httpx.HTTPStatusError(f"HTTP {r.status_code}: {r.text[:500]}",
                                            request=r.request, response=r)
            return r.json()

        return send()

    def _one(self, req: ChatRequest) -> ChatResult:
        t0 = time.monotonic()
        try:
            data = self._post(req)
        except httpx.HTTPStatusError as e:
            code = "context_length_exceeded" if "context length" in str(e) else "invalid_request"
            return ChatResult(custom_id=req.custom_id, error=str(e), error_code=code)
        except Exception as e:
            return ChatResult(custom_id=req.custom_id, error=f"{type(e).__name__}: {e}",
                              error_code="server_error")
        usage = data.get("usage") or {}
        choices = [Choice(text=(c.get("message") or {}).get("content") or c.get("text") or "",
                          finish_reason=c.get("finish_reason"),
                          logprobs=lp.from_openai(c.get("logprobs"), req.endpoint))
                   for c in data.get("choices", [])]
        return ChatResult(custom_id=req.custom_id, choices=choices,
                          prompt_tokens=usage.get("prompt_tokens", 0),
                          completion_tokens=usage.get("completion_tokens", 0),
                          latency_s=round(time.monotonic() - t0, 4), model=self.model)

    def chat(self, requests: Iterable[ChatRequest], window: int = 5000, mode: str = "window",
             stop: Callable[[], bool] | None = None) -> Iterator[ChatResult]:
        """At most min(window, concurrency) requests in flight; results as they finish."""
        self.load()
        self._cancel.clear()
        limit = max(1, min(window, self.concurrency))
        source = iter(requests)
        exhausted = False
        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="openai-http") as pool:
            inflight: set[Future[ChatResult]] = set()
            while True:
                stopping = self._cancel.is_set() or (stop is not None and stop())
                may_add = not inflight if mode == "chunk" else True
                while not stopping and may_add and not exhausted and len(inflight) < limit:
                    req = next(source, None)
                    if req is None:
                        exhausted = True
                        break
                    inflight.add(pool.submit(self._one, req))
                if not inflight:
                    return
                done, inflight = wait(inflight, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
                if stopping and not done:
                    continue
