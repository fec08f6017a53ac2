"""vLLM in-process (`vllm.LLM`), fed incrementally so the continuous batch never drains.

`LLM.chat()` takes a whole list and blocks until every request is done; a batch of
50,000 would sit in memory and a chunked loop would drain the batch at every chunk
boundary. Instead we render each request with the LLM's own chat/completion renderer
(so prompts are token-for-token what `LLM.chat` builds), add it to the engine, and keep
at most `window` requests in flight, topping up as results come back. `mode="chunk"`
keeps the seed's design (fill a chunk, wait for all of it) for comparison.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from workbench.engines import logprobs as lp
from workbench.engines import vllm_args
from workbench.engines.base import ChatRequest, ChatResult, Choice
from workbench.engines.memory import rss_bytes, snapshot, trim
from workbench.engines.vllm_args import VLLMSettings

log = logging.getLogger("workbench.vllm")

__all__ = ["SAMPLING_FIELDS", "VLLMEngine", "VLLMSettings", "chat_template_inputs"]

#: OpenAI body fields we map onto SamplingParams (others are refused at validation).
SAMPLING_FIELDS = frozenset({
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "n",
    "presence_penalty", "frequency_penalty", "response_format", "top_k", "min_p",
    "repetition_penalty", "ignore_eos", "logit_bias", "min_tokens", "stop_token_ids",
    "bad_words", "allowed_token_ids", "skip_special_tokens", "include_stop_str_in_output",
})


def _llm_class() -> Any:
    """`vllm.LLM` (a seam: unit tests put a recording fake here to pin the arguments)."""
    from vllm import LLM

    return LLM


class VLLMEngine:
    """ChatEngine over one in-process `vllm.LLM`."""

    name = "vllm"

    def __init__(self, model: str | None = None, **settings: Any) -> None:
        self.settings = VLLMSettings(model=model or settings.pop("model"), **settings)
        self.llm: Any = None
        self._counter = itertools.count()
        self._inflight: dict[str, str] = {}  # vLLM request id -> custom_id
        self._top: dict[str, int] = {}  # vLLM request id -> alternatives kept per token
        self.memory: dict[str, Any] = {}

    # -- lifecycle -----------------------------------------------------------------------
    def load(self) -> None:
        if self.llm is not None:
            return
        gpu = vllm_args.on_gpu()
        vllm_args.apply_env(gpu)
        from workbench.models import resolve

        s = self.settings
        path = resolve(s.model)
        kwargs = vllm_args.llm_kwargs(s.model_dump(exclude={"model"}), path, gpu)
        LLM = _llm_class()
        self.memory = {"before_load": snapshot()}
        t0 = time.monotonic()
        self.llm = LLM(**kwargs)
        self.memory["after_load"] = snapshot()
        self.memory["load_s"] = round(time.monotonic() - t0, 3)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)

    def unload(self) -> dict[str, Any]:
        """Shut the engine down and measure what memory came back (RECIPES: clean unload)."""
        if self.llm is None:
            return self.memory
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        try:
            self.llm.llm_engine.engine_core.shutdown()
        except Exception:  # already down
            log.debug("engine_core.shutdown failed", exc_info=True)
        self.llm = None
        trim()
        cleanup_dist_env_and_memory()
        trim()
        self.memory["after_unload"] = snapshot()
        before = self.memory["before_load"]["rss"]
        self.memory["residue_rss"] = rss_bytes() - before
        return self.memory

    # -- requests ------------------------------------------------------------------------
    def sampling_params(self, params: dict[str, Any], prompt_len: int,
                        endpoint: str = "chat") -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        p = dict(params)
        n_logprobs, _ = lp.requested(endpoint, p)
        p.pop("logprobs", None)
        p.pop("top_logprobs", None)
        max_tokens = p.pop("max_completion_tokens", None) or p.pop("max_tokens", None)
        p.pop("max_tokens", None)
        if max_tokens is None:  # OpenAI server semantics: the rest of the context
            max_tokens = max(1, self.max_model_len - prompt_len)
        elif prompt_len and prompt_len + int(max_tokens) > self.max_model_len:
            where = "messages" if endpoint == "chat" else "prompt"
            # OpenAI answers this request with a 400 (its message, below); vLLM 0.32's server
            # refuses max_tokens > max_model_len but caps the rest silently, handing back a
            # shorter answer than was asked for
            raise ValueError(
                f"This model's maximum context length is {self.max_model_len} tokens. However,"
                f" you requested {prompt_len + int(max_tokens)} tokens ({prompt_len} in the"
                f" {where}, {max_tokens} in the completion). Please reduce the length of the"
                f" {where} or completion.")
        stop = p.pop("stop", None)
        fmt = p.pop("response_format", None)
        kw: dict[str, Any] = {k: v for k, v in p.items() if k in SAMPLING_FIELDS and v is not None}
        if "logit_bias" in kw:  # JSON keys are strings; vLLM compares them with the vocab size
            kw["logit_bias"] = {int(t): float(b) for t, b in kw["logit_bias"].items()}
        if isinstance(stop, str):
            stop = [stop]
        if stop:
            kw["stop"] = stop
        if fmt and fmt.get("type") == "json_schema":
            kw["structured_outputs"] = StructuredOutputsParams(json=fmt["json_schema"]["schema"])
        elif fmt and fmt.get("type") == "json_object":
            kw["structured_outputs"] = StructuredOutputsParams(json_object=True)
        if n_logprobs is not None:
            kw["logprobs"] = n_logprobs
        sp = SamplingParams(max_tokens=int(max_tokens), **kw)
        sp.output_kind = RequestOutputKind.FINAL_ONLY
        # made for this one request: the engine may take it as is instead of deep-copying
        # it (~30-50 us a request); vLLM's own server does the same for its requests
        sp.skip_clone = True
        return sp

    def render(self, req: ChatRequest) -> Any:
        if req.endpoint == "chat":
            tools, kwargs = chat_template_inputs(req.params)
            return self.llm._preprocess_chat_one(req.messages, tools=tools,
                                                 chat_template_kwargs=kwargs)
        if req.params.get("suffix") is not None:
            raise ValueError("suffix is not currently supported")  # vLLM's server, non-FIM
        return self.llm._preprocess_cmpl_one(req.prompt)

    def _add(self, req: ChatRequest) -> str:
        engine_input = self.render(req)
        prompt_len = len(engine_input.get("prompt_token_ids") or ())
        sp = self.sampling_params(req.params, prompt_len, req.endpoint)
        rid = f"{next(self._counter)}"
        self.llm.llm_engine.add_request(rid, engine_input, sp)
        self._inflight[rid] = req.custom_id
        if sp.logprobs is not None:
            self._top[rid] = lp.requested(req.endpoint, req.params)[1]
        return rid

    def _choices(self, rid: str, outputs: Any) -> list[Choice]:
        n_top = self._top.pop(rid, None)
        if n_top is None:
            return [Choice(text=o.text, finish_reason=o.finish_reason) for o in outputs]
        tok = self.llm.get_tokenizer()
        return [Choice(text=o.text, finish_reason=o.finish_reason,
                       logprobs=lp.from_vllm(o.token_ids, o.logprobs, n_top,
                                             lambda t: tok.decode([t])))
                for o in outputs]

    def chat(self, requests: Iterable[ChatRequest], window: int = 5000,
             mode: Literal["window", "chunk"] = "window",
             stop: Callable[[], bool] | None = None) -> Iterator[ChatResult]:
        """Yield one result per request as each finishes; at most `window` in flight.

        `stop()` is polled every engine step: when it turns true, in-flight requests are
        aborted and the generator ends (cancel within one step, not one window).
        """
        self.load()
        engine = self.llm.llm_engine
        source = iter(requests)
        exhausted = False
        started: dict[str, float] = {}
        while True:
            if stop is not None and stop():
                self.abort()
                return
            may_add = len(self._inflight) == 0 if mode == "chunk" else True
            while may_add and not exhausted and len(self._inflight) < window:
                req = next(source, None)
                if req is None:
                    exhausted = True
                    break
                try:
                    rid = self._add(req)
                    started[rid] = time.monotonic()
                except Exception as e:  # prompt too long, bad params: that request's error
                    yield ChatResult(custom_id=req.custom_id, error=str(e),
                                     error_code=_error_code(e))
            if not self._inflight:
                if exhausted:
                    return
                continue
            for out in engine.step():
                if not out.finished or out.request_id not in self._inflight:
                    continue
                cid = self._inflight.pop(out.request_id)
                t0 = started.pop(out.request_id, None)
                yield ChatResult(
                    custom_id=cid,
                    choices=self._choices(out.request_id, out.outputs),
                    prompt_tokens=len(out.prompt_token_ids or ()),
                    completion_tokens=sum(len(o.token_ids) for o in out.outputs),
                    cached_tokens=out.num_cached_tokens or 0,
                    latency_s=None if t0 is None else round(time.monotonic() - t0, 4),
                    model=self.settings.model,
                )

    def abort(self, ids: Iterable[str] | None = None) -> list[str]:
        """Abort in-flight requests (all of them when `ids` is None); returns their custom_ids."""
        wanted = None if ids is None else set(ids)
        rids = [r for r, c in self._inflight.items() if wanted is None or c in wanted]
        if rids and self.llm is not None:
            self.llm.llm_engine.abort_request(rids)
        for r in rids:
            self._top.pop(r, None)
        cids = [self._inflight.pop(r) for r in rids]
        return cids


def chat_template_inputs(params: dict[str, Any]) -> tuple[list[dict[str, Any]] | None,
                                                          dict[str, Any] | None]:
    """`tools` and chat-template kwargs for one chat request, as vLLM's server renders them.

    Without a tool-call parser (the offline engine has none) vLLM's server passes `tools`
    to the chat template when `tool_choice` is "none" and answers "auto" (the default when
    tools are given), "required" or a named function with a 400; so do we, per request.
    `reasoning_effort` goes to the template (and switches `enable_thinking`), as there.
    """
    tools = params.get("tools")
    choice = params.get("tool_choice") or ("auto" if tools else None)
    if tools and choice != "none":
        what = (f'function "{choice["function"]["name"]}"' if isinstance(choice, dict)
                else f'"{choice}"')
        raise ValueError(f"tool_choice={what} needs a tool-call parser, and this engine has "
                         "none (vLLM's server: --enable-auto-tool-choice --tool-call-parser); "
                         'send tool_choice "none" to give the tools to the chat template only')
    kwargs = None
    effort = params.get("reasoning_effort")
    if effort is not None:
        kwargs = {"reasoning_effort": effort, "enable_thinking": effort != "none"}
    return tools, kwargs


def _error_code(e: Exception) -> str:
    name = type(e).__name__
    if "context length" in str(e) or "maximum context" in str(e):
        return "context_length_exceeded"
    return "invalid_request" if "Validation" in name or isinstance(e, ValueError) else "engine_error"
