"""The protocols every engine speaks, and the request/result records they exchange.

`ChatEngine` is what batch, phased and grid runners drive: `load()`, then
`chat(requests)` yields one `ChatResult` per request as it finishes (order not
guaranteed; each tagged with its `custom_id`), `abort(ids)` stops in-flight requests,
`unload()` gives the memory back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field


class ChatRequest(BaseModel):
    """One request: a chat (`messages`) or a plain completion (`prompt`)."""

    custom_id: str
    endpoint: Literal["chat", "completion"] = "chat"
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    #: OpenAI body fields: max_tokens, temperature, top_p, seed, stop, n, response_format, ...
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None


class Choice(BaseModel):
    text: str
    finish_reason: str | None = None


class ChatResult(BaseModel):
    """One finished request. `error` set means it failed and `choices` is empty."""

    custom_id: str
    choices: list[Choice] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    error_code: str | None = None
    latency_s: float | None = None
    model: str | None = None

    @property
    def text(self) -> str:
        return self.choices[0].text if self.choices else ""

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class ChatEngine(Protocol):
    name: str

    def load(self) -> None: ...

    def chat(self, requests: Iterable[ChatRequest]) -> Iterator[ChatResult]: ...

    def abort(self, ids: Iterable[str]) -> None: ...

    def unload(self) -> dict[str, Any]: ...
