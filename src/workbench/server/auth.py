"""Who is calling: an ASGI middleware that turns `Authorization: Bearer ...` into a
`Caller` before the request body is read, refuses what that caller may not do, and
throttles guessing.

- A `wbk_...` token is a minted key (`server.keys`): verified against its salted hash,
  refused (401) the moment it is revoked.
- Any other token is compared with the admin key (`WORKBENCH_API_KEY`) in constant time.
  Without an admin key the server runs open (loopback only, see `security.check_bind`)
  and every caller without a minted key is the admin, as before keys existed.
- A read-only key gets 403 for anything but GET/HEAD; `/v1/keys` is for the admin only.
- Failed authentications are counted per client address (a bucket of `burst` failures
  refilled one per `refill_s` seconds). Once it is empty that address gets 429 with
  `Retry-After` for every wrong token, and the admin key is not even compared from there
  (a short admin key cannot be guessed faster than the refill). Minted keys are still
  checked: they carry 256 random bits, so guessing them is hopeless anyway, and an app
  behind the same address (a NAT, a proxy) keeps working with its right key. A request
  without any Authorization header is a misconfigured client, not a guess: 401, uncounted.
  The address is the TCP peer; `X-Forwarded-For` is not trusted.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from workbench.server.errors import APIError, error_body
from workbench.server.keys import ADMIN, PREFIX, Caller, KeyStore
from workbench.server.security import header_of, send_json, token_ok

READ_METHODS = frozenset({"GET", "HEAD"})
ADMIN_PATH = "/v1/keys"


class FailureLimiter:
    """Per-address token bucket of failed authentications (bounded memory)."""

    def __init__(self, burst: int = 30, refill_s: float = 1.0,
                 max_addresses: int = 10_000) -> None:
        self.burst, self.refill_s, self.max_addresses = burst, refill_s, max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, addr: str, now: float) -> float:
        tokens, at = self._buckets.get(addr, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) / self.refill_s)

    def wait_s(self, addr: str, now: float | None = None) -> int:
        """Seconds until this address may fail once more (0: it may now)."""
        now = time.monotonic() if now is None else now
        level = self._level(addr, now)
        return 0 if level >= 1 else max(1, math.ceil((1 - level) * self.refill_s))

    def fail(self, addr: str, now: float | None = None) -> int:
        """Count one failure; the seconds to wait when the budget was already spent."""
        now = time.monotonic() if now is None else now
        wait = self.wait_s(addr, now)
        level = self._level(addr, now)
        self._buckets[addr] = (max(0.0, level - 1), now)
        self._buckets.move_to_end(addr)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
        return wait


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


class KeyAuth:
    """401/403/429 with OpenAI error bodies; the caller goes to `request.state.caller`."""

    def __init__(self, app: ASGIApp, api_key: str | None, keys: KeyStore,
                 limiter: FailureLimiter) -> None:
        self.app, self.api_key, self.keys, self.limiter = app, api_key, keys, limiter

    def identify(self, header: str | None, addr: str) -> Caller | None:
        """The caller; None for a wrong key, or for any but a valid minted key while this
        address is throttled (the admin key is then not compared)."""
        token = bearer(header)
        if token is not None and token.startswith(PREFIX):
            return self.keys.verify(token)
        if not self.api_key:
            return ADMIN
        if header is None:
            return None
        if self.limiter.wait_s(addr):
            return None
        return ADMIN if token_ok(header, self.api_key) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        header = header_of(scope, b"authorization")
        addr = (scope.get("client") or ("unknown", 0))[0]
        who = self.identify(header, addr)
        if who is None:
            await self._refuse_auth(send, header, addr)
            return
        if who.read_only and scope["method"] not in READ_METHODS:
            await send_json(send, 403, error_body(
                f"key {who.name!r} is read-only: it can list and read, not create, cancel or "
                "delete", "invalid_request_error", None, "insufficient_permissions"))
            return
        path = scope["path"].rstrip("/")
        if not who.admin and (path == ADMIN_PATH or path.startswith(ADMIN_PATH + "/")):
            await send_json(send, 403, error_body(
                "only the admin key (WORKBENCH_API_KEY) manages keys", "invalid_request_error",
                None, "insufficient_permissions"))
            return
        scope.setdefault("state", {})["caller"] = who
        await self.app(scope, receive, send)

    async def _refuse_auth(self, send: Send, header: str | None, addr: str) -> None:
        if header is None:
            await send_json(send, 401, error_body(
                "missing API key: send 'Authorization: Bearer <key>' (WORKBENCH_API_KEY or a "
                "key minted with `workbench keys create`)", "invalid_request_error", None,
                "invalid_api_key"), [(b"www-authenticate", b"Bearer")])
            return
        if wait := self.limiter.fail(addr):
            await send_json(send, 429, error_body(
                f"too many failed authentications from {addr}: retry in {wait} s",
                "rate_limit_error", None, "too_many_auth_failures"),
                [(b"retry-after", str(wait).encode())])
            return
        await send_json(send, 401, error_body(
            "incorrect API key provided (unknown, mistyped or revoked)", "invalid_request_error",
            None, "invalid_api_key"), [(b"www-authenticate", b"Bearer")])


def current_caller(request: Request) -> Caller:
    """FastAPI dependency: the caller the middleware identified."""
    caller = request.scope.get("state", {}).get("caller")
    if not isinstance(caller, Caller):  # only reachable if the middleware was bypassed
        raise APIError(401, "incorrect API key provided", code="invalid_api_key")
    return caller
