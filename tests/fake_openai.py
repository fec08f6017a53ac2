"""A tiny OpenAI-compatible HTTP server for tests (a test double: never used by src/).

Answers `POST /v1/chat/completions` with the last message upper-cased, `GET /v1/models`
with one model, can demand a bearer key (like `vllm serve --api-key`), and lets a test
script failures per prompt (`fail`: prompt, attempt number → status or None). Every
request is logged (path, prompt, status, Authorization header, time), so tests count
what the server really saw. `start()` / `stop()` can be called repeatedly on one port
(an outage, then the same server back).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.http_fake import QuietHandler, serve_in_thread, shut_down


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Seen:
    path: str
    prompt: str | None
    status: int
    auth: str | None
    at: float


#: (prompt, attempt number for that prompt) → None (answer) or (status, headers)
FailRule = Callable[[str, int], tuple[int, dict[str, str]] | None]


class FakeOpenAI:
    def __init__(self, port: int | None = None, key: str | None = None) -> None:
        self.port = port or free_port()
        self.key = key
        self.fail: FailRule | None = None
        self.log: list[Seen] = []
        self.lock = threading.Lock()
        self._tries: Counter[str] = Counter()
        self._srv: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                if not fake._authorized(self):
                    return fake._send(self, 401, {"error": "Unauthorized"}, None)
                fake._send(self, 200, {"object": "list", "data": [{"id": "m"}]}, None)

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                if not fake._authorized(self):
                    return fake._send(self, 401, {"error": "Unauthorized"}, prompt)
                with fake.lock:
                    fake._tries[prompt] += 1
                    n = fake._tries[prompt]
                rule = fake.fail(prompt, n) if fake.fail else None
                if rule is not None:
                    status, headers = rule
                    return fake._send(self, status, {"error": {"message": f"scripted {status}"}},
                                      prompt, headers)
                fake._send(self, 200, {
                    "id": "chatcmpl-x", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": prompt.upper()},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
                    prompt)

        self._srv = serve_in_thread(Handler, self.port, "fake-openai")
        return self

    def stop(self) -> None:
        shut_down(self._srv)
        self._srv = None

    def _authorized(self, h: BaseHTTPRequestHandler) -> bool:
        return self.key is None or h.headers.get("Authorization") == f"Bearer {self.key}"

    def _send(self, h: BaseHTTPRequestHandler, status: int, obj: Any, prompt: str | None,
              headers: dict[str, str] | None = None) -> None:
        with self.lock:
            self.log.append(Seen(h.path, prompt, status, h.headers.get("Authorization"),
                                 time.monotonic()))
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    # -- what the server saw -------------------------------------------------------------
    def chats(self, since: int = 0) -> list[Seen]:
        with self.lock:
            return [s for s in self.log[since:] if s.path.endswith("/chat/completions")]

    def answered(self, since: int = 0) -> Counter[str]:
        """Prompts answered 200, how many times each."""
        return Counter(s.prompt for s in self.chats(since) if s.status == 200 and s.prompt)

    def sent(self, since: int = 0) -> Counter[str]:
        return Counter(s.prompt for s in self.chats(since) if s.prompt)

    def probes(self) -> int:
        with self.lock:
            return sum(1 for s in self.log if s.path.endswith("/models"))
