"""Transcription and translation lines (`/v1/audio/...`) run by batched faster-whisper.

One `WhisperEngine` (the one the phased STT path uses, so the same audio gives the same
words) answers each line with OpenAI's transcription body: `{"text"}` for `json` and
`text`, plus language, duration and segments for `verbose_json`.

Where the audio may come from, per line: a `data:` URL (base64 audio, written to a private
temporary file), or a path / `file://` URL that — after resolving symlinks and `..` — lies
under one of the job's allowed folders (`media_dirs`). Anything else (another folder, an
`http(s)` URL: nothing is fetched) is that line's error, and nothing outside is opened.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from workbench.engines.base import ChatRequest, ChatResult
from workbench.engines.whisper import MediaError, WhisperEngine


class AudioRefused(ValueError):
    """The line's `file_url` names audio this job may not read."""


def allowed_path(file_url: str, media_dirs: list[str]) -> Path:
    """The file a path or file:// URL names, if it lies under an allowed folder."""
    if file_url.startswith("file://"):
        raw = unquote(urlparse(file_url).path)
    elif "://" in file_url:
        raise AudioRefused(f"file_url {file_url[:80]!r}: only data: URLs, file:// URLs and "
                           "paths are read here (nothing is fetched over the network)")
    else:
        raw = file_url
    roots = [Path(d).resolve() for d in media_dirs]
    target = Path(raw).expanduser().resolve()  # symlinks and .. resolved before the check
    if not any(target.is_relative_to(r) for r in roots):
        where = ", ".join(str(r) for r in roots) or "(none: pass media_dir / --media-dir)"
        raise AudioRefused(f"file_url {raw[:200]!r} is outside the folders this job may read "
                           f"audio from: {where}")
    if not target.is_file():
        raise AudioRefused(f"file_url {raw[:200]!r}: no such file")
    return target


def data_url_file(file_url: str, folder: str) -> Path:
    head, _, payload = file_url.partition(",")
    if not head.endswith(";base64"):
        raise AudioRefused("a data: URL must be base64 (data:audio/wav;base64,...)")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error as e:
        raise AudioRefused(f"the data: URL is not valid base64 ({e})") from None
    fd, name = tempfile.mkstemp(dir=folder, suffix=".audio")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


class WhisperBatchEngine:
    """ChatEngine for audio lines: `chat(requests)` yields one transcription per line."""

    name = "whisper"

    def __init__(self, model: str | None = None, media_dirs: list[str] | None = None,
                 **settings: Any) -> None:
        self.media_dirs = list(media_dirs or [])
        self.whisper = WhisperEngine(model, **settings)

    def load(self) -> None:
        self.whisper.load()

    def unload(self) -> dict[str, Any]:
        return self.whisper.unload()

    def abort(self, ids: Iterable[str] | None = None) -> list[str]:
        return []  # one line at a time: nothing in flight between lines

    def _one(self, req: ChatRequest, tmp: str) -> ChatResult:
        p = req.params
        url = str(p["file_url"])
        path = data_url_file(url, tmp) if url.startswith("data:") else allowed_path(
            url, self.media_dirs)
        try:
            t = self.whisper.transcribe(path, language=p.get("language"), task=p["task"],
                                        prompt=p.get("prompt"), temperature=p.get("temperature"))
        finally:
            if url.startswith("data:"):
                path.unlink(missing_ok=True)
        body: dict[str, Any] = {"text": t.text,
                                "usage": {"type": "duration", "seconds": round(t.duration_s)}}
        if p.get("response_format") == "verbose_json":
            body.update(task=p["task"], language=t.language, duration=t.duration_s,
                        segments=[{"id": i, **s.model_dump()} for i, s in enumerate(t.segments)])
        return ChatResult(custom_id=req.custom_id, data=[body], latency_s=t.elapsed_s,
                          model=t.model)

    def chat(self, requests: Iterable[ChatRequest], window: int = 5000, mode: str = "window",
             stop: Callable[[], bool] | None = None) -> Iterator[ChatResult]:
        self.load()
        with tempfile.TemporaryDirectory(prefix="wb-audio-") as tmp:
            for req in requests:
                if stop is not None and stop():
                    return
                if req.endpoint != "audio":
                    yield ChatResult(custom_id=req.custom_id, error_code="invalid_request",
                                     error="a speech-to-text model answers /v1/audio lines only")
                    continue
                try:
                    yield self._one(req, tmp)
                except (AudioRefused, MediaError) as e:
                    yield ChatResult(custom_id=req.custom_id, error=str(e),
                                     error_code="invalid_request")
