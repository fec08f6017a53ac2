"""A webhook receiver for tests: records every POST (headers, body), can be down and back.

Down means nothing listens on its port (connection refused), the way a crashed receiver
looks to a sender; `start()` after `stop()` binds the same port again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

from tests.http_fake import QuietHandler, serve_in_thread, shut_down
from tests.server_helpers import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, port: int | None = None, path: str = "/hooks") -> None:
        self.port = port or free_port()
        self.path = path
        self.got: list[Received] = []
        self.lock = threading.Lock()
        self._srv: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> Receiver:
        me = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with me.lock:
                    me.got.append(Received({k.lower(): v for k, v in self.headers.items()},
                                           body))
                self.send_response(200 if self.path == me.path else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._srv = serve_in_thread(Handler, self.port, "receiver")
        return self

    def stop(self) -> None:
        shut_down(self._srv)
        self._srv = None

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.got)
