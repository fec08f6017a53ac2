"""One classification of every failure, and one retry policy, for every engine.

A failed call is either **final** (the request itself is bad: 400/401/403/404/413/422, a
prompt too long for the context, a schema the engine refuses; sending it again gives the
same answer) or **transient** (the backend could not answer *this time*: connection
refused or reset, connect/read timeout, 408/409/429/5xx, a replica that died). Transient
failures are retried here with backoff, pause the dispatch when they pile up
(`engines.outage`), and are sent again by `job.resume()` / `job.retry_failed()`; final
ones are written once and left alone.

`classify()` takes whatever the caller has: an exception (httpx / httpx2 / aiohttp /
builtin socket errors, google-genai `APIError`, Ray's actor and worker deaths, pydantic
validation errors, an engine's ValueError), an HTTP status (+ body and headers), or an
engine's error text. It returns a `Failure`: the class, the *true* HTTP status (None when
no HTTP response arrived — never a made-up 400), an OpenAI-like code, the endpoint, the
attempt count and a message in words. The OpenAI HTTP engine, the Gemini client and the
Ray backend's replica deaths all go through it, so one table decides what is retried.
"""

from __future__ import annotations

import email.utils
import random
import time
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, Field

#: Statuses worth sending again (what openai-python retries too): the server was busy,
#: overloaded, restarting or timed out, not offended by the request.
TRANSIENT_STATUS = frozenset({408, 409, 425, 429})

#: HTTP status → OpenAI-like error code (anything else: 5xx server_error, 4xx invalid_request)
STATUS_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                408: "timeout", 409: "conflict", 413: "request_too_large",
                422: "invalid_request", 425: "too_early", 429: "rate_limited"}

#: Exception class names (anywhere in the MRO, most specific first) → (code, words).
#: Names, not classes: httpx, httpx2 (google-genai 3), aiohttp and Ray share them and
#: none of those need importing here.
_TRANSIENT_NAMES: dict[str, tuple[str, str]] = {
    "ConnectTimeout": ("timeout", "connect timeout"),
    "ReadTimeout": ("timeout", "read timeout"),
    "WriteTimeout": ("timeout", "write timeout"),
    "PoolTimeout": ("timeout", "no free connection in the pool"),
    "ServerTimeoutError": ("timeout", "read timeout"),
    "GetTimeoutError": ("timeout", "timeout"),
    "TimeoutException": ("timeout", "timeout"),
    "TimeoutError": ("timeout", "timeout"),
    "ConnectError": ("connection_error", "connection failed"),
    "ClientConnectorError": ("connection_error", "connection failed"),
    "ConnectionRefusedError": ("connection_error", "connection refused"),
    "ConnectionResetError": ("connection_error", "connection reset"),
    "ConnectionAbortedError": ("connection_error", "connection aborted"),
    "BrokenPipeError": ("connection_error", "connection closed"),
    "RemoteProtocolError": ("connection_error", "server closed the connection without answering"),
    "ServerDisconnectedError": ("connection_error", "server closed the connection"),
    "ReadError": ("connection_error", "connection lost while reading"),
    "WriteError": ("connection_error", "connection lost while sending"),
    "ClientOSError": ("connection_error", "connection error"),
    "ClientConnectionError": ("connection_error", "connection error"),
    "NetworkError": ("connection_error", "network error"),
    "TransportError": ("connection_error", "transport error"),
    "ConnectionError": ("connection_error", "connection error"),
    # Ray: the replica (actor), its worker process or its node died; Ray restarts it
    "ActorDiedError": ("replica_died", "the replica died"),
    "ActorUnavailableError": ("replica_died", "the replica is unavailable"),
    "RayActorError": ("replica_died", "the replica died"),
    "WorkerCrashedError": ("replica_died", "the replica's worker process crashed"),
    "NodeDiedError": ("replica_died", "the replica's node died"),
    "LocalRayletDiedError": ("replica_died", "the local Ray node died"),
    "ObjectLostError": ("replica_died", "a result was lost with its replica"),
    "OwnerDiedError": ("replica_died", "a result was lost with its owner"),
    "ObjectReconstructionFailedError": ("replica_died", "a lost result could not be rebuilt"),
    "RaySystemError": ("replica_died", "Ray system error"),
    "OutOfMemoryError": ("out_of_memory", "out of memory"),
    "MemoryError": ("out_of_memory", "out of memory"),
}

_TOO_LONG = ("context length", "maximum context", "too long", "maximum model length",
             "max_model_len", "too many tokens", "exceeds the model")


class Failure(BaseModel):
    """What went wrong with one call, decided once (`classify`), carried to the error line."""

    transient: bool
    code: str
    message: str
    #: the HTTP status the server sent; None when no HTTP response arrived
    status: int | None = None
    endpoint: str | None = None
    attempts: int = 1
    #: the server asked us to wait this long (Retry-After, RetryInfo)
    retry_after_s: float | None = None

    @property
    def kind(self) -> str:
        """'transient' or 'final': the class error lines and job summaries name."""
        return "transient" if self.transient else "final"

    @property
    def stops_backend(self) -> bool:
        """Counts towards the circuit breaker: the backend itself looks unreachable.

        A 429 is the server answering (pace down, honour Retry-After), not an outage.
        """
        return self.transient and self.status != 429

    def described(self) -> str:
        """The message with where and how often, in words (the error line's message)."""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        if self.status is None and self.code == "connection_error":
            where = self.endpoint or "the server"
            if self.message in ("connection refused", "connection failed"):
                return f"could not connect to {where}{tries} ({self.message})"
            return f"lost the connection to {where}{tries} ({self.message})"
        if self.status is None and self.code == "timeout":
            return f"no answer from {self.endpoint or 'the server'}{tries} ({self.message})"
        if self.status is not None:
            head = f"HTTP {self.status} {_phrase(self.status)}"
            where = f" from {self.endpoint}" if self.endpoint else ""
            return f"{head}{where}{tries}: {self.message}" if self.message else f"{head}{where}{tries}"
        return f"{self.message}{tries}"

    def line_extra(self) -> dict[str, Any]:
        """The keys workbench adds to an OpenAI error line (`error.workbench`)."""
        return {"class": self.kind, "attempts": self.attempts, "endpoint": self.endpoint}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def _body_message(body: Any) -> str:
    """The server's own words from an error body ({"error": {"message"}}, {"message"}, text)."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("msg")
            if msg:
                return str(msg)
        elif err:
            return str(err)
        if body.get("detail"):
            return str(body["detail"])
        return ""
    return str(body or "").strip()[:500]


def classify_status(status: int, body: Any = None, *, headers: Any = None,
                    endpoint: str | None = None, attempts: int = 1) -> Failure:
    """An HTTP error answer: 408/409/425/429/5xx transient, every other 4xx final."""
    text = _body_message(body)
    transient = status in TRANSIENT_STATUS or status >= 500
    code = STATUS_CODES.get(status) or ("server_error" if status >= 500 else "invalid_request")
    if status in (400, 413, 422) and any(k in text.lower() for k in _TOO_LONG):
        code = "context_length_exceeded"
    retry_after = None
    if headers is not None and status in (429, 503):
        retry_after = parse_retry_after(_header(headers, "retry-after"))
    return Failure(transient=transient, code=code, message=text[:500], status=status,
                   endpoint=endpoint, attempts=attempts, retry_after_s=retry_after)


def classify_exception(exc: BaseException, *, endpoint: str | None = None,
                       attempts: int = 1) -> Failure:
    """An exception raised instead of an answer (or an SDK error carrying a status)."""
    names = [t.__name__ for t in type(exc).__mro__]
    cause = getattr(exc, "cause", None)
    if names[0].startswith("RayTaskError") and isinstance(cause, BaseException):
        return classify_exception(cause, endpoint=endpoint, attempts=attempts)  # user code failed
    status = _status_of(exc)
    if status is not None:
        return classify_status(status, _sdk_message(exc), headers=_headers_of(exc),
                               endpoint=endpoint, attempts=attempts)
    if "ValidationError" in names:  # pydantic: the request does not fit the schema
        return Failure(transient=False, code="invalid_request", message=_short(exc),
                       endpoint=endpoint, attempts=attempts)
    for name in names:
        if name in _TRANSIENT_NAMES:
            code, words = _TRANSIENT_NAMES[name]
            text = str(exc).lower()
            if "refused" in text:
                words = "connection refused"
            elif "reset" in text:
                words = "connection reset"
            return Failure(transient=True, code=code, message=words, endpoint=endpoint,
                           attempts=attempts)
    return classify_message(_short(exc), endpoint=endpoint, attempts=attempts)


def classify_message(text: str, code: str | None = None, *, endpoint: str | None = None,
                     attempts: int = 1) -> Failure:
    """An engine's error text (an in-process engine refusing one request): final.

    Too long for the context → context_length_exceeded; anything else the request's own
    problem (invalid_request, or the engine's code). In-process engines have no HTTP: the
    error line still says 400, what an OpenAI server answers for the same request.
    """
    low = text.lower()
    if any(k in low for k in _TOO_LONG):
        code = "context_length_exceeded"
    return Failure(transient=False, code=code or "invalid_request", message=text[:1000],
                   status=None, endpoint=endpoint, attempts=attempts)


def classify(what: BaseException | int | str, body: Any = None, *, headers: Any = None,
             endpoint: str | None = None, attempts: int = 1) -> Failure:
    """The one entry point: an exception, an HTTP status (with body/headers) or error text."""
    if isinstance(what, BaseException):
        return classify_exception(what, endpoint=endpoint, attempts=attempts)
    if isinstance(what, int):
        return classify_status(what, body, headers=headers, endpoint=endpoint, attempts=attempts)
    return classify_message(what, endpoint=endpoint, attempts=attempts)


def is_transient(exc: BaseException) -> bool:
    """For tenacity's `retry_if_exception` and the Ray backend: send it again?"""
    return classify_exception(exc).transient


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status_code", "code", "status"):
        v = getattr(exc, attr, None)
        if isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599:
            return v
    response = getattr(exc, "response", None)
    v = getattr(response, "status_code", None)
    return v if isinstance(v, int) and 100 <= v <= 599 else None


def _header(headers: Any, name: str) -> str | None:
    """A header from httpx/aiohttp headers (case-insensitive) or a plain dict."""
    try:
        value = headers.get(name)
        if value is None:
            value = next((v for k, v in dict(headers).items() if str(k).lower() == name), None)
    except (AttributeError, TypeError, ValueError):
        return None
    return None if value is None else str(value)


def _headers_of(exc: BaseException) -> Any:
    response = getattr(exc, "response", None)
    return getattr(response, "headers", None) or getattr(exc, "headers", None)


def _sdk_message(exc: BaseException) -> str:
    msg = getattr(exc, "message", None)
    return str(msg) if msg else _short(exc)


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds to wait: delta-seconds ("120") or an HTTP date.

    A date in the past means "now" (0); anything unparsable is ignored (None).
    """
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RetryPolicy(BaseModel):
    """How often and how patiently a transient failure is sent again (per request).

    delay before attempt n+1 = min(max_s, initial_s * 2**(n-1)) + U(0, jitter_s), but
    never shorter than what the server asked for (Retry-After / RetryInfo, capped at
    `max_retry_after_s`). Which failures are retried is `classify`'s job, not the policy's.
    """

    max_attempts: int = Field(6, ge=1)
    initial_s: float = Field(1.0, ge=0)
    max_s: float = Field(60.0, ge=0)
    jitter_s: float = Field(0.5, ge=0)
    max_retry_after_s: float = Field(300.0, ge=0)

    def delay(self, attempt: int, hint_s: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        base = min(self.max_s, self.initial_s * (2 ** max(0, attempt - 1)))
        delay = base + random.uniform(0, self.jitter_s)
        if hint_s is not None:
            delay = max(delay, min(hint_s, self.max_retry_after_s))
        return delay

    def should_retry(self, failure: Failure) -> bool:
        return failure.transient and failure.attempts < self.max_attempts
