"""The HTTP skeleton the test doubles share (fake OpenAI, fake Gemini, the webhook
receiver): a handler that does not log every request, a server on a loopback port served
by a daemon thread, and its shutdown."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *a: Any) -> None:
        pass


def serve_in_thread(handler: type[BaseHTTPRequestHandler], port: int,
                    name: str) -> ThreadingHTTPServer:
    """Serve `handler` on 127.0.0.1:`port` (0: any free port) until `shut_down`."""
    srv = ThreadingHTTPServer(("127.0.0.1", port), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True, name=name).start()
    return srv


def shut_down(srv: ThreadingHTTPServer | None) -> None:
    if srv is not None:
        srv.shutdown()
        srv.server_close()
