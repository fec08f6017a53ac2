"""Keep one chat engine loaded between jobs, and give its memory back on request.

Loading vLLM costs seconds to minutes; consecutive batch jobs on the same model reuse
the engine. A job that needs a different model (or a phase that needs the device) calls
`release()` first, so two models are never resident because of the pool.
"""

from __future__ import annotations

import threading
from typing import Any

from workbench.engines.base import ChatEngine

_lock = threading.RLock()
_engine: ChatEngine | None = None
_key: str | None = None


def make_engine(spec: dict[str, Any]) -> ChatEngine:
    """Build (not load) the engine a spec describes: {"provider": "vllm"|"openai", ...}."""
    spec = dict(spec)
    provider = spec.pop("provider", "vllm")
    if provider == "vllm":
        from workbench.engines.vllm import VLLMEngine

        return VLLMEngine(**spec)
    if provider == "openai":
        from workbench.engines.openai_http import OpenAIHTTPEngine

        return OpenAIHTTPEngine(**spec)
    raise ValueError(f"unknown engine provider {provider!r} (vllm, openai)")


def acquire(spec: dict[str, Any]) -> ChatEngine:
    """The loaded engine for `spec`, loading it (and unloading another) if needed."""
    global _engine, _key
    import json

    key = json.dumps(spec, sort_keys=True)
    with _lock:
        if _engine is not None and _key == key:
            return _engine
        release()
        engine = make_engine(spec)
        engine.load()
        _engine, _key = engine, key
        return engine


def release() -> dict[str, Any] | None:
    """Unload the pooled engine, if any; returns its memory report."""
    global _engine, _key
    with _lock:
        if _engine is None:
            return None
        report = _engine.unload()
        _engine, _key = None, None
        return report


def loaded() -> str | None:
    return _key
