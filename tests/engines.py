"""Fast ChatEngine doubles for tests and benchmarks (never used by src/)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from workbench.engines import pool
from workbench.engines.base import ChatRequest, ChatResult, Choice


class EchoEngine:
    """Answers instantly (or after `delay_s`) with the request's last message reversed.

    Keeps at most `window` requests "in flight" like the real engine, and counts the
    largest number it ever held, so tests can check the window bound.
    """

    name = "echo"
    max_inflight_seen = 0

    def __init__(self, model: str = "echo", delay_s: float = 0.0, **_: Any) -> None:
        self.model = model
        self.delay_s = delay_s
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def unload(self) -> dict[str, Any]:
        self.loaded = False
        return {}

    def abort(self, ids: Iterable[str] | None = None) -> list[str]:
        return []

    def _answer(self, req: ChatRequest) -> ChatResult:
        text = (req.messages[-1]["content"] if req.messages else req.prompt or "")[::-1]
        n = int(req.params.get("max_tokens") or 16)
        words = text.split()[:n]
        return ChatResult(custom_id=req.custom_id, choices=[Choice(text=" ".join(words),
                          finish_reason="stop")], prompt_tokens=len(text.split()),
                          completion_tokens=len(words), model=self.model)

    def chat(self, requests: Iterable[ChatRequest], window: int = 5000, mode: str = "window",
             stop: Callable[[], bool] | None = None) -> Iterator[ChatResult]:
        buf: list[ChatRequest] = []
        for req in requests:
            if stop is not None and stop():
                return
            buf.append(req)
            EchoEngine.max_inflight_seen = max(EchoEngine.max_inflight_seen, len(buf))
            if len(buf) >= window:
                yield from self._drain(buf)
        yield from self._drain(buf)

    def _drain(self, buf: list[ChatRequest]) -> Iterator[ChatResult]:
        while buf:
            if self.delay_s:
                time.sleep(self.delay_s)
            yield self._answer(buf.pop(0))


pool.register_provider("echo", EchoEngine)
