"""Any OpenAI-compatible server (`vllm serve`, or others) as a ChatEngine.

- **Bounded concurrency**: a thread pool with at most `concurrency` requests in flight,
  fed lazily from the request iterator.
- **Failures classified once** (`engines.failures`): final ones (400/401/404/422, too
  long) are that request's error line at once; transient ones (connection refused/reset,
  timeouts, 408/409/429/5xx) are retried with exponential backoff and jitter, honouring
  `Retry-After`; the line carries the true status (none without an HTTP answer), the
  endpoint, the attempt count and the class.
- **Outages pause the job** (`engines.outage`): `breaker_after` consecutive transient
  failures stop the dispatch, requests in flight go back to the queue (not to the error
  file), `GET /models` probes the server with backoff up to every `probe_every_s`, and
  dispatch resumes when it answers. Past `outage_deadline_s` the engine raises
  `BackendUnreachable` (the job becomes `interrupted`, resumable). `notify` tells the job.
- **Timeouts**: `connect_timeout_s` (a dead host is noticed in seconds) apart from
  `timeout_s` (reading a long generation).
- **Keys**: the API key is read from the environment variable whose *name* is all the
  job spec stores (`api_key_env`); by default a key is sent only to api.openai.com.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import quote, urlparse

import httpx

from workbench.engines import logprobs as lp
from workbench.engines.base import ChatRequest, ChatResult, Choice
from workbench.engines.failures import Failure, RetryPolicy, classify, classify_status
from workbench.engines.outage import CircuitBreaker, clock_time
from workbench.errors import BackendUnreachable, InvalidInput

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
#: hosts that get $OPENAI_API_KEY when the spec names no variable
OPENAI_HOSTS = frozenset({"api.openai.com"})

Notify = Callable[..., None]

# one INFO line per request ("HTTP Request: POST ...") is ~6 MB of log per 50,000 requests
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def key_variable(base_url: str | None, api_key_env: str | None) -> str | None:
    """Which environment variable holds the key: the one named, else OPENAI_API_KEY for
    api.openai.com only (a default key must never travel to whatever base_url is set)."""
    if api_key_env:
        return api_key_env
    host = urlparse(base_url or DEFAULT_BASE_URL).hostname or ""
    return "OPENAI_API_KEY" if host in OPENAI_HOSTS else None


def check_spec(spec: dict[str, Any]) -> None:
    """Refuse at submit what would make every request fail: a key variable that is unset."""
    var = key_variable(spec.get("base_url"), spec.get("api_key_env"))
    if var and not os.environ.get(var):
        raise InvalidInput([(None, "engine.api_key_env",
                             f"the environment variable {var} is not set in this process; set"
                             f" it (workbench reads the key from there and never stores it),"
                             f" or name another variable")], source="engine settings")


class OpenAIHTTPEngine:
    name = "openai"
    #: chat() accepts `notify` (the batch runner passes the job's progress callback)
    reports_outages = True

    def __init__(self, model: str, base_url: str = DEFAULT_BASE_URL,
                 api_key_env: str | None = None, concurrency: int = 16,
                 timeout_s: float = 600.0, connect_timeout_s: float = 10.0,
                 max_attempts: int = 6, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 breaker_after: int = 5, probe_every_s: float = 10.0,
                 outage_deadline_s: float = 900.0, **_: Any) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = key_variable(self.base_url, api_key_env)
        self.concurrency = concurrency
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.policy = RetryPolicy(max_attempts=max_attempts, initial_s=backoff_s,
                                  max_s=max_backoff_s, jitter_s=backoff_s / 2)
        self.breaker_after = breaker_after
        self.probe_every_s = probe_every_s
        self.outage_deadline_s = outage_deadline_s
        self.client: httpx.Client | None = None
        self._cancel = threading.Event()
        self._stats_lock = threading.Lock()
        self.breaker = self._new_breaker()
        #: counters of the last chat() call: requests sent, retries, requests re-queued
        self.stats = {"attempts": 0, "retries": 0, "requeued": 0}

    def _new_breaker(self) -> CircuitBreaker:
        return CircuitBreaker(self.breaker_after, self.probe_every_s, self.outage_deadline_s)

    def load(self) -> None:
        if self.client is not None:
            return
        self.client = httpx.Client(base_url=self.base_url, timeout=self.timeout,
                                   limits=httpx.Limits(max_connections=self.concurrency + 1))

    def _auth(self) -> dict[str, str]:
        """Read at every request, never kept: a key fixed in the environment is used at
        the next retry without reloading the engine."""
        key = os.environ.get(self.api_key_env or "", "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def unload(self) -> dict[str, Any]:
        if self.client is not None:
            self.client.close()
            self.client = None
        return {}

    def abort(self, ids: Iterable[str] | None = None) -> list[str]:
        """Requests already sent finish on the server; none not yet sent will go."""
        self._cancel.set()
        return []

    # -- one request ----------------------------------------------------------------------
    def _halted(self) -> bool:
        return self._cancel.is_set() or self.breaker.is_open

    def _sleep(self, seconds: float) -> bool:
        """Back off; True if an outage or a stop cut the wait short (then re-queue)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self._halted():
                return True
            time.sleep(min(0.05, left))
        return self._halted()

    def _send(self, req: ChatRequest, attempt: int) -> dict[str, Any] | Failure:
        assert self.client is not None
        path = "/chat/completions" if req.endpoint == "chat" else "/completions"
        body: dict[str, Any] = {"model": self.model, **req.params}
        if req.endpoint == "chat":
            body["messages"] = req.messages
        else:
            body["prompt"] = req.prompt
        # the server's logs name the request: custom_id plus a per-attempt suffix
        rid = f"{quote(req.custom_id, safe='')[:100]}-{uuid.uuid4().hex[:8]}"
        self._count("attempts")
        try:
            r = self.client.post(path, json=body, headers={"X-Request-Id": rid, **self._auth()})
        except Exception as e:  # no answer (transport) or a request httpx refuses (final)
            return classify(e, endpoint=self.base_url, attempts=attempt)
        if r.status_code != 200:
            try:
                payload: Any = r.json()
            except ValueError:
                payload = r.text
            return classify_status(r.status_code, payload, headers=r.headers,
                                   endpoint=self.base_url, attempts=attempt)
        try:
            return r.json()
        except ValueError as e:
            return Failure(transient=False, code="invalid_response", status=200,
                           endpoint=self.base_url, attempts=attempt,
                           message=f"the answer is not JSON ({e})")

    def _one(self, req: ChatRequest, tries: dict[str, int]) -> ChatResult | None:
        """Send with retries; None means "not done: queue it again" (outage or stop)."""
        t0 = time.monotonic()
        attempt = tries.get(req.custom_id, 0)
        while True:
            if self._halted():
                tries[req.custom_id] = attempt
                return None
            attempt += 1
            out = self._send(req, attempt)
            if not isinstance(out, Failure):
                self.breaker.success()
                return self._result(req, out, t0)
            if not out.transient:
                self.breaker.success()  # the server answered: it is there
                return self._failed(req, out)
            opened = self.breaker.failure(out)
            if not self.policy.should_retry(out):
                return self._failed(req, out)
            if opened or self._sleep(self.policy.delay(attempt, out.retry_after_s)):
                tries[req.custom_id] = attempt
                return None
            self._count("retries")

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def _failed(self, req: ChatRequest, failure: Failure) -> ChatResult:
        return ChatResult(custom_id=req.custom_id, error=failure.described(),
                          error_code=failure.code, failure=failure, model=self.model)

    def _result(self, req: ChatRequest, data: dict[str, Any], t0: float) -> ChatResult:
        usage = data.get("usage") or {}
        choices = [Choice(text=(c.get("message") or {}).get("content") or c.get("text") or "",
                          finish_reason=c.get("finish_reason"),
                          logprobs=lp.from_openai(c.get("logprobs"), req.endpoint))
                   for c in data.get("choices", [])]
        return ChatResult(custom_id=req.custom_id, choices=choices,
                          prompt_tokens=usage.get("prompt_tokens", 0),
                          completion_tokens=usage.get("completion_tokens", 0),
                          latency_s=round(time.monotonic() - t0, 4), model=self.model)

    # -- probing --------------------------------------------------------------------------
    def probe(self) -> bool:
        """Does the server answer at all? GET /models: any answer but 502/503/504 counts
        (a 401 too: the server is up, the requests will say why they fail)."""
        assert self.client is not None
        try:
            r = self.client.get("/models", headers=self._auth())
        except httpx.HTTPError:
            return False
        return r.status_code not in (502, 503, 504)

    # -- the stream -----------------------------------------------------------------------
    def chat(self, requests: Iterable[ChatRequest], window: int = 5000, mode: str = "window",
             stop: Callable[[], bool] | None = None,
             notify: Notify | None = None) -> Iterator[ChatResult]:
        """At most min(window, concurrency) requests in flight; results as they finish.

        `notify(message, **metrics)` hears about outages ("server unreachable since ...")
        and recoveries. Raises BackendUnreachable when an outage outlasts the deadline;
        requests not answered by then are simply not yielded (a resume sends them).
        """
        self.load()
        self._cancel.clear()
        self.breaker = self._new_breaker()
        self.stats = {"attempts": 0, "retries": 0, "requeued": 0}
        say = notify or (lambda *a, **k: None)
        limit = max(1, min(window, self.concurrency))
        source = iter(requests)
        exhausted = False
        queue: deque[ChatRequest] = deque()
        tries: dict[str, int] = {}
        told_open = False
        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="openai-http") as pool:
            inflight: dict[Future[ChatResult | None], ChatRequest] = {}
            while True:
                stopping = self._cancel.is_set() or (stop is not None and stop())
                if stopping:
                    self._cancel.set()
                if self.breaker.is_open:
                    if self.breaker.expired():
                        self._cancel.set()  # in-flight requests come back; then give up
                    elif not told_open:
                        told_open = True
                        say(self.breaker.message(len(queue) + len(inflight)), http=self.metrics())
                    elif self.breaker.probe_due() and not stopping:
                        length = self.breaker.probed(self.probe())
                        if length is None:
                            say(self.breaker.message(len(queue) + len(inflight)),
                                http=self.metrics())
                        else:
                            told_open = False
                            say(f"server back after {length:.0f} s; re-sending {len(queue)}"
                                " requests", http=self.metrics())
                may_add = not inflight if mode == "chunk" else True
                while (not self._halted() and may_add and len(inflight) < limit
                       and (queue or not exhausted)):
                    req = queue.popleft() if queue else next(source, None)
                    if req is None:
                        exhausted = True
                        break
                    inflight[pool.submit(self._one, req, tries)] = req
                if not inflight:
                    if self._cancel.is_set() and self.breaker.expired():
                        say(None, http=self.metrics())
                        raise self._unreachable()
                    if self._cancel.is_set() or (exhausted and not queue):
                        say(None, http=self.metrics())
                        return
                    if self.breaker.is_open:  # paused: nothing in flight, wait for a probe
                        time.sleep(min(0.5, max(0.05, self.breaker.seconds_to_probe())))
                        continue
                done, _ = wait(inflight, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    req = inflight.pop(fut)
                    res = fut.result()
                    if res is None:
                        self.stats["requeued"] += 1
                        queue.append(req)
                        continue
                    yield res

    def metrics(self) -> dict[str, Any]:
        return {**self.stats, **self.breaker.stats(), "endpoint": self.base_url}

    def _unreachable(self) -> BackendUnreachable:
        b = self.breaker
        reason = b.last.described() if b.last is not None else ""
        return BackendUnreachable(self.base_url, clock_time(b.since_wall or time.time()),
                                  b.outage_s(), reason)
