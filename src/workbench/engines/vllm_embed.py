"""Embeddings on vLLM's pooling runner, in-process: OpenAI `/v1/embeddings` lines.

A line's `input` (a string, a list of strings, token ids, or a list of token-id lists)
becomes one pooling request per item. Each item is tokenized here first (the model's own
tokenizer, as vLLM's renderer does), so what is wrong with one line — an empty input, an
input over the model's context, a `dimensions` the model cannot give — is that line's
error and never fails its neighbours. Lines are taken in chunks of at most `window` items
and embedded with one `LLM.embed` call each: an encoder has no decode phase, so a chunk
boundary drains nothing worth keeping, and `stop()` is polled between chunks.

`dimensions`: the model's own size is accepted; a smaller one only on a Matryoshka model
(vLLM truncates and renormalises), else that line's error, with vLLM's message.
`encoding_format: "base64"` is OpenAI's: the little-endian float32 bytes, base64-encoded.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from workbench.engines.base import ChatRequest, ChatResult
from workbench.engines.vllm import VLLMEngine

#: items embedded per `LLM.embed` call at most (bounded by the job's window too)
CHUNK = 512


def encode(vector: Any, encoding_format: str | None) -> list[float] | str:
    """One vector as OpenAI sends it: a list of floats, or base64 of float32 bytes."""
    arr = np.asarray(vector, dtype=np.float32)
    if encoding_format == "base64":
        return base64.b64encode(arr.astype("<f4").tobytes()).decode("ascii")
    return arr.tolist()


def items_of(value: Any) -> list[str | list[int]]:
    """`input` as a list of items: strings or token-id lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(x, int) for x in value):
        return [value]
    return list(value)


class VLLMEmbedEngine(VLLMEngine):
    """ChatEngine over one in-process `vllm.LLM(runner="pooling")`: answers embedding lines."""

    name = "vllm-embed"

    def __init__(self, model: str | None = None, **settings: Any) -> None:
        settings["runner"] = "pooling"
        super().__init__(model, **settings)

    def load(self) -> None:
        super().load()
        cfg = self.llm.llm_engine.model_config
        self.dims = int(cfg.get_hidden_size())
        self.matryoshka = bool(getattr(cfg, "is_matryoshka", False))

    def _prepare(self, req: ChatRequest) -> tuple[list[list[int]], Any]:
        """Token ids of each item and the pooling params; ValueError names what is wrong."""
        from vllm import PoolingParams

        items = items_of(req.params.get("input"))
        if not items:
            raise ValueError("input is empty: give a string, a list of strings or token ids")
        tok = self.llm.get_tokenizer()
        ids: list[list[int]] = []
        for i, item in enumerate(items):
            where = "input" if len(items) == 1 else f"input[{i}]"
            if isinstance(item, str):
                if not item.strip():
                    raise ValueError(f"{where} is an empty string: nothing to embed")
                toks = list(tok(item).input_ids)
            else:
                toks = list(item)
                if not toks:
                    raise ValueError(f"{where} is an empty token list: nothing to embed")
                vocab = len(tok)
                bad = [t for t in toks if not 0 <= t < vocab]
                if bad:
                    raise ValueError(f"{where} holds token id {bad[0]}, outside this model's "
                                     f"vocabulary (0..{vocab - 1})")
            if len(toks) > self.max_model_len:
                raise ValueError(
                    f"This model's maximum context length is {self.max_model_len} tokens. "
                    f"However, {where} has {len(toks)} tokens. Please reduce its length.")
            ids.append(toks)
        dims = req.params.get("dimensions")
        if dims is not None and dims != self.dims:
            if not self.matryoshka:
                raise ValueError(f"dimensions={dims}: model {self.settings.model} gives "
                                 f"{self.dims}-dimensional vectors only (not a Matryoshka "
                                 "model); leave dimensions unset or give "
                                 f"{self.dims}")
            if dims > self.dims:
                raise ValueError(f"dimensions={dims} is more than this model's {self.dims}")
            return ids, PoolingParams(dimensions=int(dims))
        return ids, PoolingParams()

    def _run(self, chunk: list[tuple[ChatRequest, list[list[int]], Any]]) -> Iterator[ChatResult]:
        prompts = [{"prompt_token_ids": t} for _, ids, _ in chunk for t in ids]
        params = [p for _, ids, p in chunk for _ in ids]
        t0 = time.monotonic()
        outs = self.llm.embed(prompts, pooling_params=params, use_tqdm=False)
        took = round(time.monotonic() - t0, 4)
        k = 0
        for req, ids, _ in chunk:
            mine = outs[k:k + len(ids)]
            k += len(ids)
            fmt = req.params.get("encoding_format")
            data = [{"object": "embedding", "index": i,
                     "embedding": encode(o.outputs.embedding, fmt)} for i, o in enumerate(mine)]
            n = sum(len(t) for t in ids)
            yield ChatResult(custom_id=req.custom_id, data=data, prompt_tokens=n,
                             latency_s=took, model=self.settings.model)

    def chat(self, requests: Iterable[ChatRequest], window: int = 5000, mode: str = "window",
             stop: Callable[[], bool] | None = None) -> Iterator[ChatResult]:
        """Yield one result per line, in input order, chunk by chunk."""
        self.load()
        size = max(1, min(int(window), CHUNK))
        chunk: list[tuple[ChatRequest, list[list[int]], Any]] = []
        n = 0
        for req in requests:
            if stop is not None and stop():
                return
            if req.endpoint != "embedding":
                yield ChatResult(custom_id=req.custom_id, error_code="invalid_request",
                                 error=f"model {self.settings.model} is an embedding model: it "
                                       "answers /v1/embeddings lines, not chat or completions")
                continue
            try:
                ids, params = self._prepare(req)
            except ValueError as e:
                yield ChatResult(custom_id=req.custom_id, error=str(e),
                                 error_code="context_length_exceeded"
                                 if "context length" in str(e) else "invalid_request")
                continue
            chunk.append((req, ids, params))
            n += len(ids)
            if n >= size:
                yield from self._run(chunk)
                chunk, n = [], 0
        if chunk and not (stop is not None and stop()):
            yield from self._run(chunk)

    def abort(self, ids: Iterable[str] | None = None) -> list[str]:
        return []  # a chunk runs to its end within one call: nothing is left in flight
