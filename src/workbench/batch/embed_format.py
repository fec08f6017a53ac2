"""The body of an OpenAI `/v1/embeddings` batch line, as OpenAI's Batch API takes it.

`input` is a string, a list of strings, a list of token ids, or a list of token-id lists
(OpenAI's four forms); `encoding_format` is "float" (default) or "base64"; `dimensions`
asks for shorter vectors; `user` is bookkeeping. A field OpenAI does not have is refused
with the file (so a typo cannot silently change nothing). What only the model can judge —
an empty input, an input over its context, a `dimensions` it cannot give — is checked
when the line runs and becomes that line's error (engines/vllm_embed.py), not the file's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EMBEDDINGS_URL = "/v1/embeddings"
#: OpenAI's cap on items in one embeddings request
MAX_ITEMS = 2048


class EmbeddingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | Annotated[list[str], Field(max_length=MAX_ITEMS)] | list[int] | \
        Annotated[list[list[int]], Field(max_length=MAX_ITEMS)]
    model: str | None = None
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None


def params_of(body: dict[str, Any]) -> dict[str, Any]:
    """What the embedding engine reads from a validated body."""
    return {k: body.get(k) for k in ("input", "encoding_format", "dimensions")}
