"""Keep one chat engine loaded between jobs, and give its memory back on request.

Loading vLLM costs seconds to minutes; consecutive batch jobs on the same model reuse
the engine. A job that needs a different model (or a phase that needs the device) calls
`release()` first, so two models are never resident because of the pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from workbench.engines.base import ChatEngine

_lock = threading.RLock()
_engine: ChatEngine | None = None
_key: str | None = None


def _vllm(**kw: Any) -> ChatEngine:
    if kw.get("runner") == "pooling":  # /v1/embeddings lines (batch.routing sets it)
        from workbench.engines.vllm_embed import VLLMEmbedEngine

        return VLLMEmbedEngine(**kw)
    from workbench.engines.vllm import VLLMEngine

    return VLLMEngine(**kw)


def _openai(**kw: Any) -> ChatEngine:
    from workbench.engines.openai_http import OpenAIHTTPEngine

    return OpenAIHTTPEngine(**kw)


def _ray(**kw: Any) -> ChatEngine:
    from workbench.engines.ray_data import RayDataEngine

    return RayDataEngine(**kw)


def _whisper(**kw: Any) -> ChatEngine:
    from workbench.engines.whisper_batch import WhisperBatchEngine

    return WhisperBatchEngine(**kw)


#: provider name → engine factory; `register_provider` adds more (tests add fast doubles).
PROVIDERS: dict[str, Callable[..., ChatEngine]] = {"vllm": _vllm, "openai": _openai, "ray": _ray,
                                                 "whisper": _whisper}


def register_provider(name: str, factory: Callable[..., ChatEngine]) -> None:
    PROVIDERS[name] = factory


def make_engine(spec: dict[str, Any]) -> ChatEngine:
    """Build (not load) the engine a spec describes: {"provider": "vllm"|"openai", ...}."""
    spec = dict(spec)
    provider = spec.pop("provider", "vllm")
    if provider not in PROVIDERS:
        raise ValueError(f"unknown engine provider {provider!r} ({', '.join(sorted(PROVIDERS))})")
    return PROVIDERS[provider](**spec)


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
