"""ASGI middleware loaded INTO the real vLLM OpenAI server by tests (`--middleware
tests.vllm_answer_log.AnswerLog`): one line per chat request received and per answer.

The line "answered <X-Request-Id> <status>" is written (unbuffered, O_APPEND: it survives
`kill -9`) just *before* the last body chunk goes to the socket. So a request counted as
answered by a server that was then killed was either delivered or lost in the kill — and
a lost one must come back to the next server, which is what the outage test checks.
"""

from __future__ import annotations

import os
from typing import Any


class AnswerLog:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.fd = os.open(os.environ["WB_TEST_ANSWER_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def _log(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"-").decode()
        self._log(f"received {rid}")
        status = [0]

        async def send_logged(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            elif msg["type"] == "http.response.body" and not msg.get("more_body"):
                self._log(f"answered {rid} {status[0]}")
            await send(msg)

        await self.app(scope, receive, send_logged)
