"""The body of `/v1/audio/transcriptions` and `/v1/audio/translations` batch lines, as
vLLM's `run_batch` takes them: the audio is named by `file_url` (OpenAI's multipart
`file` has no place in JSONL), here a `data:` URL with base64 audio, a `file://` URL or a
plain path. A path must lie under a folder the job allows (`media_dir` / `--media-dir`,
and the store's media folder); that, and whether the audio decodes, is checked when the
line runs and is that line's error (engines/whisper_batch.py), never a file read outside.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TRANSCRIPTIONS_URL = "/v1/audio/transcriptions"
TRANSLATIONS_URL = "/v1/audio/translations"
AUDIO_URLS = (TRANSCRIPTIONS_URL, TRANSLATIONS_URL)


class AudioBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_url: Annotated[str, Field(min_length=1)]
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    response_format: Literal["json", "text", "verbose_json"] | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    timestamp_granularities: list[Literal["segment"]] | None = None


def audio_params(obj: dict[str, Any]) -> dict[str, Any]:
    body = obj["body"]
    return {"file_url": body["file_url"], "language": body.get("language"),
            "prompt": body.get("prompt"), "temperature": body.get("temperature"),
            "response_format": body.get("response_format") or "json",
            "task": "translate" if obj["url"] == TRANSLATIONS_URL else "transcribe"}
