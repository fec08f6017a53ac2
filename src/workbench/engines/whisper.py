"""Speech to text with faster-whisper: `WhisperEngine().transcribe(path) -> Transcript`.

Modelled on faster-whisper's own `WhisperModel`: one object per loaded model, one verb.
It knows nothing about jobs, so the phased pipeline and the comparison grid (transcripts
of videos) share it.

- int8 on CPU, float16 on a CUDA device (`device="auto"` picks what CTranslate2 sees;
  engines/whisper_args.py decides).
- Batched by default: `BatchedInferencePipeline` cuts the audio at pauses (Silero VAD)
  and decodes the pieces together, ~1.7x faster than sequential 30 s windows on CPU.
- Audio or video files: PyAV decodes (it ships FFmpeg). A file with no audio track is
  refused with `NoAudioTrack` before anything is decoded; faster-whisper itself would
  raise a bare `IndexError`.
- Lazy: the model loads on the first `transcribe()` (or an explicit `load()`), and
  `unload()` frees it, trims the C heap and reports what RSS came back.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from workbench.engines import whisper_args
from workbench.engines.memory import rss_bytes, trim
from workbench.engines.whisper_models import resolve_whisper_model
from workbench.errors import WorkbenchError

SAMPLE_RATE = 16_000


class MediaError(WorkbenchError):
    """A file could not be read as audio or video."""


class NoAudioTrack(MediaError):
    """A (video) file that has no audio stream: there is nothing to transcribe."""


class Segment(BaseModel):
    """One decoded segment, with what OpenAI's `verbose_json` transcription reports of it."""

    start: float
    end: float
    text: str
    seek: int = 0
    tokens: list[int] = []
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


class Transcript(BaseModel):
    """What one file said, where, in which language, and how long it took."""

    path: str
    text: str
    segments: list[Segment]
    language: str
    language_probability: float
    #: length of the audio in seconds, and of the part VAD kept as speech (batched mode)
    duration_s: float
    speech_s: float
    elapsed_s: float
    model: str
    batched: bool

    @property
    def speed(self) -> float:
        """Audio seconds transcribed per wall-clock second (higher is faster)."""
        return self.duration_s / self.elapsed_s if self.elapsed_s > 0 else float("inf")


def default_device() -> str:
    """"cuda" when CTranslate2 sees a CUDA device, else "cpu" (engines/whisper_args.py)."""
    return whisper_args.default_device()


def probe_audio(path: str | os.PathLike[str]) -> float:
    """Duration of the file's first audio track in seconds; raises MediaError/NoAudioTrack.

    Cheap (reads the container header, decodes nothing), so submissions can refuse
    unreadable files early and the ETA can count audio seconds.
    """
    import av

    p = Path(path)
    if not p.is_file():
        raise MediaError(f"{p}: no such file")
    try:
        with av.open(str(p), metadata_errors="ignore") as c:
            if not c.streams.audio:
                kinds = ", ".join(f"{s.type} ({s.codec_context.name})" for s in c.streams) or "none"
                raise NoAudioTrack(f"{p}: no audio track to transcribe (streams: {kinds})")
            a = c.streams.audio[0]
            if a.duration is not None and a.time_base is not None:
                return float(a.duration * a.time_base)
            if c.duration is not None:
                return c.duration / 1_000_000
            return 0.0
    except MediaError:
        raise
    except Exception as e:  # av.error.InvalidDataError and friends
        raise MediaError(f"{p}: not a readable audio or video file ({media_reason(e)})") from e


def media_reason(e: BaseException) -> str:
    """What went wrong reading a media file, in words: FFmpeg's text without its error number.

    PyAV's errors read `[Errno 1094995529] Invalid data found when processing input: '/x'`
    (the number is FFmpeg's tag, meaningless to a person; the path is said elsewhere).
    """
    text = getattr(e, "strerror", None) or str(e)
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(text))
    filename = getattr(e, "filename", None)
    if filename:
        text = text.replace(f": {filename!r}", "").replace(f": {filename}", "")
    text = text.strip().rstrip(".") or type(e).__name__
    return text[0].lower() + text[1:] if text[:2] != text[:2].upper() else text


class WhisperEngine:
    """One faster-whisper model, loaded on first use: `transcribe(path) -> Transcript`."""

    name = "whisper"

    def __init__(self, model: str | os.PathLike[str] | None = None, *, device: str = "auto",
                 compute_type: str | None = None, batched: bool = True, batch_size: int = 8,
                 beam_size: int = 5, language: str | None = None, cpu_threads: int = 0,
                 vad_filter: bool | None = None) -> None:
        self.model_name = os.fspath(model) if model is not None else None
        args = whisper_args.whisper_args(device, compute_type)
        self.device = args["device"] if device == "auto" else device
        self.compute_type = args["compute_type"]
        self.batched = batched
        self.batch_size = batch_size
        self.beam_size = beam_size
        self.language = language
        self.cpu_threads = cpu_threads or min(os.cpu_count() or 1, 8)
        #: batched mode needs VAD to cut the audio; sequential mode decodes everything
        self.vad_filter = batched if vad_filter is None else vad_filter
        self._model: Any = None
        self._pipeline: Any = None
        self.model_path: str | None = None
        self.memory: dict[str, Any] = {}

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return (f"WhisperEngine({self.model_name or 'default'!r}, {self.device}/{self.compute_type},"
                f" batched={self.batched}, {state})")

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> WhisperEngine:
        if self._model is not None:
            return self
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.model_path = resolve_whisper_model(self.model_name)
        self.memory = {"rss_before_load": rss_bytes()}
        t0 = time.monotonic()
        args = whisper_args.whisper_args(self.device, self.compute_type)
        if args["device"] == "cuda":
            whisper_args.preload_cuda_libraries()
        self._model = WhisperModel(self.model_path, cpu_threads=self.cpu_threads, **args)
        self._pipeline = BatchedInferencePipeline(model=self._model) if self.batched else None
        self.memory.update(load_s=round(time.monotonic() - t0, 3), rss_after_load=rss_bytes())
        return self

    def decode(self, path: str | os.PathLike[str]) -> Any:
        """16 kHz mono float32 samples of the file's audio; MediaError if unreadable."""
        from faster_whisper import decode_audio

        probe_audio(path)
        try:
            return decode_audio(str(path), sampling_rate=SAMPLE_RATE)
        except Exception as e:
            raise MediaError(f"{path}: audio could not be decoded ({media_reason(e)})") from e

    def transcribe(self, path: str | os.PathLike[str], *, language: str | None = None,
                   task: str = "transcribe", prompt: str | None = None,
                   temperature: float | None = None) -> Transcript:
        """Transcribe one audio or video file (the segments are consumed here, not lazily).
        `task="translate"` gives English; `language`/`prompt`/`temperature` are per call."""
        audio = self.decode(path)
        self.load()
        t0 = time.monotonic()
        kw: dict[str, Any] = dict(language=language or self.language, beam_size=self.beam_size,
                                  vad_filter=self.vad_filter, task=task)
        if prompt:
            kw["initial_prompt"] = prompt
        if temperature is not None:
            kw["temperature"] = temperature
        if self._pipeline is not None:
            segments, info = self._pipeline.transcribe(audio, batch_size=self.batch_size, **kw)
        else:
            segments, info = self._model.transcribe(audio, **kw)
        segs = [Segment(start=round(s.start, 3), end=round(s.end, 3), text=s.text.strip(),
                        seek=int(s.seek), tokens=list(s.tokens),
                        temperature=float(s.temperature or 0.0),
                        avg_logprob=float(s.avg_logprob),
                        compression_ratio=float(s.compression_ratio),
                        no_speech_prob=float(s.no_speech_prob))
                for s in segments]  # the generator does the work: iterate inside the timing
        elapsed = time.monotonic() - t0
        duration = float(info.duration)
        return Transcript(
            path=str(path), text=" ".join(s.text for s in segs if s.text).strip(), segments=segs,
            language=info.language, language_probability=float(info.language_probability),
            duration_s=round(duration, 3),
            speech_s=round(float(getattr(info, "duration_after_vad", duration) or duration), 3),
            elapsed_s=round(elapsed, 4), model=self.model_name or Path(self.model_path or "").name,
            batched=self._pipeline is not None,
        )

    def unload(self) -> dict[str, Any]:
        """Drop the model, trim the heap, and report RSS before load and after unload."""
        if self._model is None:
            return self.memory
        self._pipeline = None
        self._model = None
        trim()
        self.memory["rss_after_unload"] = rss_bytes()
        self.memory["residue_rss"] = self.memory["rss_after_unload"] - self.memory["rss_before_load"]
        return self.memory
