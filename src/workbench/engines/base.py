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

from workbench.engines.failures import Failure
from workbench.engines.logprobs import TokenLogprob


class ChatRequest(BaseModel):
    """One request: a chat (`messages`) or a plain completion (`prompt`)."""

    custom_id: str
    endpoint: Literal["chat", "completion", "embedding", "audio"] = "chat"
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    #: OpenAI body fields: max_tokens, temperature, top_p, seed, stop, n, response_format, ...
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None


class Choice(BaseModel):
    text: str
    finish_reason: str | None = None
    #: per generated token, when the request asked for `logprobs` (see engines/logprobs.py)
    logprobs: list[TokenLogprob] | None = None


class ChatResult(BaseModel):
    """One finished request. `error` set means it failed and `choices` is empty."""

    custom_id: str
    choices: list[Choice] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: prompt tokens the engine served from its prefix cache (vLLM's `num_cached_tokens`;
    #: OpenAI's `usage.prompt_tokens_details.cached_tokens`); 0 when it does not say
    cached_tokens: int = 0
    error: str | None = None
    error_code: str | None = None
    latency_s: float | None = None
    model: str | None = None
    #: how it failed, classified once (`engines.failures`); engines that only give an
    #: error text leave it None and the batch runner classifies the text
    failure: Failure | None = None
    #: an embedding line's answer: OpenAI's `data` items ({"object": "embedding", "index",
    #: "embedding"}), the vectors already in the line's `encoding_format`
    data: list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        return self.choices[0].text if self.choices else ""

    @property
    def ok(self) -> bool:
        return self.error is None


class Outcome(BaseModel):
    """One finished model call as the kinds record it: the answer or the error, and its costs.

    The one definition of these fields: the Gemini engine's `GeminiCall` extends it, the
    grid's callers return it for every provider, and the grid's call rows (`CallRow`)
    extend it with where the call belongs.
    """

    text: str = ""
    parsed: dict[str, Any] | None = None
    error: str | None = None
    #: HTTP status as a string ("429", "500"), "parse" for invalid structured output,
    #: "media" when the input file failed, "batch" for a batch-level failure
    error_code: str | None = None
    finish_reason: str | None = None
    latency_s: float | None = None
    #: seconds spent waiting for the rate limiter, over all attempts
    wait_s: float = 0.0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

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
