"""Gemini batch mode: one Batch job per model (inlined requests), polled until it finishes.

Half the price of realtime calls, hours instead of seconds. Responses come back in
request order; the metadata key, when the service echoes it, is checked against it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pydantic import BaseModel, Field

from workbench.engines.gemini_client import GeminiClient
from workbench.engines.gemini_messages import GeminiCall, GeminiRequest, config, contents, to_call


class BatchPoll(BaseModel):
    name: str
    state: str
    done: bool
    #: per request key, when done
    results: dict[str, GeminiCall] = Field(default_factory=dict)
    error: str | None = None


TERMINAL_BATCH_STATES = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                         "JOB_STATE_EXPIRED", "JOB_STATE_PARTIALLY_SUCCEEDED"}


class GeminiBatches(GeminiClient):
    """Submit, poll and cancel Gemini batch jobs through the client's retries."""

    async def submit_batch(self, model: str, requests: Sequence[GeminiRequest], *,
                           display_name: str = "workbench",
                           stop: asyncio.Event | None = None) -> str:
        """Queue requests in one Gemini Batch job (inlined); returns the batch name."""
        from google.genai import types

        inlined = [types.InlinedRequest(contents=contents(r), config=config(r),
                                        metadata={"key": r.key}) for r in requests]
        async for attempt in self._retrying(stop):
            with attempt:
                job = await self.client.aio.batches.create(
                    model=model, src=types.BatchJobSource(inlined_requests=inlined),
                    config={"display_name": display_name})
        return str(job.name)

    async def poll_batch(self, name: str, model: str, requests: Sequence[GeminiRequest], *,
                         stop: asyncio.Event | None = None) -> BatchPoll:
        """Batch state; once done, one GeminiCall per request key.

        Responses come back in request order (documented); the metadata key, when the
        service echoes it, is checked against that order.
        """
        async for attempt in self._retrying(stop):
            with attempt:
                job = await self.client.aio.batches.get(name=name)
        state = getattr(job.state, "name", str(job.state))
        poll = BatchPoll(name=name, state=state, done=state in TERMINAL_BATCH_STATES)
        if not poll.done:
            return poll
        responses = list((job.dest.inlined_responses or []) if job.dest else [])
        by_key = {r.key: r for r in requests}
        for i, req in enumerate(requests):
            item = responses[i] if i < len(responses) else None
            meta_key = (item.metadata or {}).get("key") if item is not None else None
            if meta_key is not None and meta_key != req.key and meta_key in by_key:
                item = next((x for x in responses if (x.metadata or {}).get("key") == req.key), None)
            if item is None:
                why = job.error.message if getattr(job, "error", None) else f"batch {state}"
                poll.results[req.key] = GeminiCall(model=model, error=f"no response: {why}",
                                                   error_code="batch")
            elif item.error is not None:
                err = item.error
                code = getattr(err, "code", None)
                poll.results[req.key] = GeminiCall(
                    model=model, error=f"HTTP {code}: {getattr(err, 'message', err)}",
                    error_code=str(code) if code is not None else "batch")
            else:
                poll.results[req.key] = to_call(model, req, item.response)
        return poll

    async def cancel_batch(self, name: str) -> None:
        async for attempt in self._retrying(None):
            with attempt:
                await self.client.aio.batches.cancel(name=name)
