"""Who may call, how much they may send, and where the server may listen.

- Bearer token: the admin key (`WORKBENCH_API_KEY`) is compared here in constant time;
  `server.auth` checks every `/v1/...` request (admin or minted key) in an ASGI
  middleware *before* the body is read, so a caller without a key can neither fill the
  disk nor create anything.
- Body size: uploads (batch files, grid media, recordings) are capped (default 200 MB,
  OpenAI's batch file limit), other bodies at 1 MiB; counted while streaming, not
  trusted from Content-Length alone.
- Binding: a non-loopback address without an API key is refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workbench.errors import WorkbenchError
from workbench.server.errors import error_body

DEFAULT_MAX_UPLOAD_BYTES = 200 * 1024 * 1024
MAX_JSON_BYTES = 1024 * 1024
#: room for the multipart envelope (boundaries, part headers, the purpose field)
MULTIPART_OVERHEAD = 64 * 1024
#: routes that take file uploads (the upload cap, not the 1 MiB JSON cap)
UPLOAD_PATHS = frozenset({"/v1/files", "/v1/grids", "/v1/phased"})


class UnsafeBind(WorkbenchError):
    """Listening beyond this machine without an API key would expose every job."""


def api_key_from_env() -> str | None:
    return os.environ.get("WORKBENCH_API_KEY") or None


def max_upload_from_env() -> int:
    return int(os.environ.get("WORKBENCH_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_bind(host: str, api_key: str | None) -> None:
    if not api_key and not is_loopback(host):
        raise UnsafeBind(f"refusing to listen on {host!r} without an API key: set "
                         "WORKBENCH_API_KEY (clients send it as a Bearer token) or bind "
                         "127.0.0.1")


def token_ok(header: str | None, api_key: str | None) -> bool:
    """Constant-time comparison of `Authorization: Bearer <token>` with the key."""
    if not api_key:
        return True
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), api_key.encode())


async def send_json(send: Send, status: int, body: dict[str, Any],
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


def header_of(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


class _TooLarge(HTTPException):
    """Raised from `receive`: an HTTPException, so FastAPI's body parsing re-raises it."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


class BodyLimit:
    """413 when a request body outgrows its cap (uploads vs. everything else)."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app, self.max_upload = app, max_upload_bytes

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        path = scope["path"].rstrip("/")
        if scope["method"] == "POST" and (path in UPLOAD_PATHS or (
                path.startswith("/v1/jobs/") and path.endswith("/items"))):
            return (self.max_upload + MULTIPART_OVERHEAD,
                    f"upload larger than {self.max_upload:,} bytes (WORKBENCH_MAX_UPLOAD_BYTES)")
        return MAX_JSON_BYTES, f"request body larger than {MAX_JSON_BYTES:,} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, message = self.limit_for(scope)
        declared = header_of(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, message)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge(message)
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, message)

    @staticmethod
    async def _refuse(send: Send, message: str) -> None:
        await send_json(send, 413, error_body(message, "invalid_request_error", None,
                                               "file_too_large"))
