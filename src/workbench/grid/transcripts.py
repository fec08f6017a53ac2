"""Transcripts of a grid's media for text-only models: the store's cache first, else Whisper.

A transcript is keyed by the media's content hash and the STT model, and shared by every
job of the root: a media transcribed once is never transcribed again, across re-runs and
grids. Whisper is loaded only when some media has no transcript yet (in its own phase on
the device), and unloaded after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workbench.grid import tables
from workbench.grid.spec import MediaRef
from workbench.runtime.child import EngineSpec
from workbench.runtime.phase import Isolation, Phase
from workbench.store import Store


@dataclass
class Transcripts:
    #: media id → transcript text
    texts: dict[str, str] = field(default_factory=dict)
    #: media id → why it has none (a text-only model's call for it fails with this)
    errors: dict[str, str] = field(default_factory=dict)
    #: what Whisper held and released, and which model it was (None when not loaded)
    metrics: dict[str, Any] = field(default_factory=dict)


async def transcribe(store: Store, media: list[MediaRef], stt_model: str | None, *,
                     stopping: Callable[[], bool],
                     progress: Callable[[str, float], None], device: str = "cpu",
                     isolation: Isolation = "process", job_id: str | None = None) -> Transcripts:
    """Transcripts of `media`; `progress(message, percent)` reports 5–8 % while Whisper runs.

    Whisper is a model on the device like the grid's local LLMs: it takes its turn
    through the phase lock, and its phase (memory before, loaded, after) is recorded.
    """
    from workbench.engines.whisper import MediaError
    from workbench.engines.whisper_models import resolve_whisper_model

    out = Transcripts()
    stt_name = stt_model or "default"
    todo = []
    for m in media:
        text = tables.get_transcript(store, m.sha256, stt_name)
        if text is None:
            todo.append(m)
        else:
            out.texts[m.id] = text
    if not todo:
        return out
    spec = EngineSpec(target="workbench.engines.whisper:WhisperEngine", kwargs={"model": stt_model})
    phase = Phase(store, "stt", spec, device=device, isolation=isolation, job_id=job_id,
                  should_stop=stopping)
    progress(f"Loading speech-to-text for {len(todo)} media (text-only models)", 5.0)
    engine = await asyncio.to_thread(phase.__enter__)
    error: BaseException | None = None
    try:
        for i, m in enumerate(todo):
            if stopping():
                return out
            progress(f"Transcribing media {i + 1}/{len(todo)} ({m.name}) for text-only models",
                     5.0 + 3.0 * i / len(todo))
            try:
                tr = await asyncio.to_thread(engine.transcribe, m.path)
            except MediaError as e:
                out.errors[m.id] = f"no transcript of {m.name}: {e}".replace(m.path, m.name)
                continue
            out.texts[m.id] = tr.text
            tables.put_transcript(store, m.sha256, stt_name, tr.text, tr.language, tr.duration_s)
    except BaseException as e:
        error = e
        raise
    finally:
        await asyncio.to_thread(phase.__exit__, type(error) if error else None, error, None)
        rec = phase.record
        out.metrics["stt_memory"] = {"mem_before": rec.mem_before, "mem_loaded": rec.mem_loaded,
                                     "mem_after": rec.mem_after, "residue": rec.residue,
                                     "isolation": rec.isolation}
        out.metrics["stt_model"] = resolve_whisper_model(stt_model)
    return out
