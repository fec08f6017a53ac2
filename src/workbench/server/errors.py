"""OpenAI-style error bodies for every refusal: `{"error": {message, type, param, code}}`.

Handlers turn our own `APIError`, Starlette's HTTP errors (404, 405, 413) and request
validation errors (400, not FastAPI's 422, as OpenAI does) into that one shape.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from workbench.errors import DiskFull, Where, mib, where_text
from workbench.store import disk

log = logging.getLogger("workbench.server")

_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 409: "invalid_request_error",
          413: "invalid_request_error", 429: "rate_limit_error"}


class APIError(Exception):
    """A refusal the client can act on; carries the HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str | None = None,
                 headers: dict[str, str] | None = None,
                 problems: list[tuple[Where, str, str]] | None = None,
                 total_problems: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "invalid_request_error" if status < 500
                                       else "server_error")
        self.headers = headers
        self.problems, self.total_problems = problems, total_problems

    @classmethod
    def refused(cls, what: str, problems: list[tuple[Where, str, str]], total: int,
                code: str = "invalid_input", param: str | None = None) -> APIError:
        """400 for an input refused whole (InvalidInput): every problem in the message and,
        as an extension, in `error.problems` ({line, param, message})."""
        listed = "; ".join(f"{where_text(ln)}{f'{field}: ' if field else ''}{reason}"
                           for ln, field, reason in problems[:50])
        more = f"; ... and {total - len(problems[:50])} more" if total > len(problems[:50]) else ""
        return cls(400, f"{what} refused, nothing was stored ({total} problem"
                   f"{'s' if total != 1 else ''}): {listed}{more}", param=param, code=code,
                   problems=problems[:50], total_problems=total)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None,
               problems: list[tuple[Where, str, str]] | None = None,
               total_problems: int | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"message": message, "type": type, "param": param, "code": code}
    if problems is not None:
        err["problems"] = [{"line": ln if isinstance(ln, int) and ln > 0 else None,
                            "entry": ln if isinstance(ln, str) and ln else None,
                            "param": field or None, "message": reason}
                           for ln, field, reason in problems]
        err["total_problems"] = total_problems if total_problems is not None else len(problems)
    return {"error": err}


def error_response(status: int, message: str, *, param: str | None = None,
                   code: str | None = None, type: str | None = None,
                   headers: dict[str, str] | None = None,
                   problems: list[tuple[Where, str, str]] | None = None,
                   total_problems: int | None = None) -> JSONResponse:
    t = type or _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse(error_body(message, t, param, code, problems, total_problems),
                        status_code=status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str | None:
    parts = [str(x) for x in loc if x not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def disk_full_response(free: int, needed: int) -> JSONResponse:
    """507 Insufficient Storage: the server's disk is full (no path of the server given)."""
    return error_response(507, f"the server's disk is full ({mib(free)} free, it needs "
                          f"{mib(needed)}); nothing was stored: try again once space is freed",
                          code="disk_full", type="server_error")


def install(app: FastAPI, root: Path) -> None:
    """Register the handlers that give every error response the OpenAI shape."""

    @app.exception_handler(DiskFull)
    async def _disk_full(_: Request, e: DiskFull) -> JSONResponse:
        return disk_full_response(e.free, e.needed)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return error_response(e.status, e.message, param=e.param, code=e.code, type=e.type,
                              headers=e.headers, problems=e.problems,
                              total_problems=e.total_problems)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        param = _field(tuple(first.get("loc", ())))
        msgs = "; ".join(f"{_field(tuple(x.get('loc', ()))) or 'request'}: {x.get('msg')}"
                         for x in errs[:10])
        return error_response(400, f"invalid request: {msgs}", param=param,
                              code="invalid_value" if param else "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "file_too_large"}.get(e.status_code)
        headers = dict(getattr(e, "headers", None) or {})
        if e.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return error_response(e.status_code, str(e.detail), code=code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _crash(_: Request, e: Exception) -> JSONResponse:
        if disk.is_disk_full(e):  # ENOSPC / SQLite full anywhere in a write
            log.warning("refused a request: %s", disk.disk_full(root, submit=True))
            return disk_full_response(disk.free_bytes(root), disk.min_free_bytes())
        log.exception("unhandled error")
        return error_response(500, f"internal error: {type(e).__name__}", code="internal_error")
