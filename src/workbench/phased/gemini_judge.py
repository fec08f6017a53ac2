"""Gemini as the evaluating model: the ChatEngine calls the phased runner makes, over
`workbench.engines.gemini.GeminiEngine`.

Why an adapter: GeminiEngine is async and takes a pydantic model as the response schema
(google-genai's structured output), while the phased runner speaks ChatRequest /
ChatResult with a JSON schema. The adapter builds the rubric's evaluation model once,
runs the calls (at most `window` at a time) on an event loop in a helper thread, and
yields each result as it arrives, so finished evaluations are recorded one by one.
The API key comes from the environment only (GEMINI_API_KEY / GOOGLE_API_KEY).
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from workbench.engines.base import ChatRequest, ChatResult, Choice
from workbench.phased.evaluation import evaluation_model
from workbench.phased.spec import Rubric

_END = object()
PASSED_PARAMS = ("max_tokens", "temperature", "top_p", "seed", "stop")


class GeminiJudge:
    name = "gemini"

    def __init__(self, model: str, rubric: dict[str, Any], **settings: Any) -> None:
        self.model = model
        self.schema = evaluation_model(Rubric.model_validate(rubric))
        self.settings = settings
        self._engine: Any = None

    def load(self) -> None:
        from workbench.engines.gemini_client import GeminiSettings, MissingApiKey, api_key_from_env

        if not api_key_from_env():
            raise MissingApiKey()
        self._settings = GeminiSettings(**self.settings)

    def _request(self, req: ChatRequest) -> Any:
        from workbench.engines.gemini_messages import GeminiRequest

        msgs = req.messages or [{"role": "user", "content": req.prompt or ""}]
        system = "\n".join(m["content"] for m in msgs if m.get("role") == "system") or None
        prompt = "\n\n".join(m["content"] for m in msgs if m.get("role") != "system")
        params = {k: v for k, v in req.params.items() if k in PASSED_PARAMS}
        return GeminiRequest(key=req.custom_id, prompt=prompt, schema=self.schema, system=system,
                             params=params)

    def chat(self, requests: Iterable[ChatRequest], window: int = 8) -> Iterator[ChatResult]:
        from workbench.engines.gemini import GeminiEngine

        reqs = list(requests)
        out: queue.Queue[Any] = queue.Queue()

        async def one(engine: GeminiEngine, sem: asyncio.Semaphore, req: ChatRequest) -> None:
            async with sem:
                call = await engine.generate(self.model, self._request(req))
            text = json.dumps(call.parsed) if call.parsed is not None else call.text
            out.put(ChatResult(custom_id=req.custom_id, model=self.model,
                               choices=[] if call.error else [Choice(text=text, finish_reason=call.finish_reason)],
                               prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
                               error=call.error, error_code=call.error_code, latency_s=call.latency_s))

        async def main() -> None:
            engine = GeminiEngine(self._settings)
            sem = asyncio.Semaphore(max(1, window))
            try:
                await asyncio.gather(*(one(engine, sem, r) for r in reqs))
            finally:
                await engine.aclose()

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as e:  # handed to the consuming thread
                out.put(e)
            out.put(_END)

        threading.Thread(target=run, daemon=True, name="gemini-judge").start()
        while (item := out.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def abort(self, ids: Iterable[str] | None = None) -> list[str]:
        return []

    def unload(self) -> dict[str, Any]:
        return {}
