"""Real speech for STT tests: espeak-ng sentences, PyAV-written mp4s, a silent video.

Everything is synthesised on the spot (no recordings shipped): espeak-ng speaks a
sentence to a WAV file; PyAV re-encodes that WAV into an mp4 (h264 + aac) or writes a
video with no audio track at all, which is the bad input a student might upload.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import wave
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: Plain sentences without digits (number formatting would cost WER for no reason).
SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "The mitochondria produce most of the energy that a cell needs to live.",
    "Water boils at a lower temperature on the top of a high mountain.",
    "The French revolution changed the way people thought about kings and rights.",
    "A triangle has three sides and its angles always add up to a straight angle.",
    "Plants need light to grow, and most of them also need good soil and rain.",
    "The moon moves around the earth, and the earth moves around the sun.",
    "Sound travels faster through water than it does through the air.",
    "Every student should explain the answer clearly and give one good example.",
    "Rivers carry sand and small stones down to the sea over many years.",
    "The heart pumps blood through the body and brings oxygen to every organ.",
)


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, path: Path, *, voice: str = "en-us", words_per_minute: int = 150) -> Path:
    """Synthesize `text` to a WAV file with espeak-ng (22,050 Hz mono, 16-bit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text],
                   check=True, capture_output=True)
    return path


def speak_many(texts: Sequence[str], path: Path, *, pause_s: float = 0.6) -> Path:
    """One WAV with the sentences in order, separated by silence (a longer recording)."""
    parts = [speak(t, path.with_suffix(f".part{i}.wav")) for i, t in enumerate(texts)]
    rate, chunks = 0, []
    for p in parts:
        with wave.open(str(p), "rb") as w:
            rate = w.getframerate()
            chunks.append(np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16))
        p.unlink()
    gap = np.zeros(int(rate * pause_s), dtype=np.int16)
    audio = np.concatenate([x for c in chunks for x in (c, gap)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(audio.tobytes())
    return path


def wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def _video_stream(out: av.container.OutputContainer, fps: int) -> av.video.stream.VideoStream:
    v = out.add_stream("libx264", rate=fps)
    v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
    return v


def _frames(v: av.video.stream.VideoStream, seconds: float, fps: int) -> list[av.VideoFrame]:
    frames = []
    for i in range(max(1, int(seconds * fps))):
        img = np.full((48, 64, 3), (i * 7) % 255, dtype=np.uint8)
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = i
        f.time_base = Fraction(1, fps)
        frames.append(f)
    return frames


def wav_to_mp4(wav: Path, mp4: Path, *, fps: int = 5) -> Path:
    """An mp4 (h264 video of a changing grey frame + aac audio) carrying the WAV's sound."""
    with av.open(str(wav)) as src, av.open(str(mp4), "w", format="mp4") as out:
        a_in = src.streams.audio[0]
        rate = a_in.rate
        v = _video_stream(out, fps)
        a = out.add_stream("aac", rate=rate)
        a.bit_rate = 192_000  # transparent for speech: the mp4 should say what the wav says
        a.layout = "mono"
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
        seconds = float(a_in.duration * a_in.time_base) if a_in.duration else wav_duration(wav)
        for frame in _frames(v, seconds, fps):
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
        for frame in src.decode(a_in):
            for rf in resampler.resample(frame):
                for packet in a.encode(rf):
                    out.mux(packet)
        for rf in resampler.resample(None):
            for packet in a.encode(rf):
                out.mux(packet)
        for packet in a.encode():
            out.mux(packet)
    return mp4


def silent_video(mp4: Path, *, seconds: float = 2.0, fps: int = 5) -> Path:
    """An mp4 with a video track and NO audio track (the per-item failure case)."""
    with av.open(str(mp4), "w", format="mp4") as out:
        v = _video_stream(out, fps)
        for frame in _frames(v, seconds, fps):
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
    return mp4


_NUM = re.compile(r"[^a-z' ]+")


def normalise(text: str) -> str:
    """Lower case, punctuation gone, single spaces: what WER should compare."""
    return " ".join(_NUM.sub(" ", text.lower().replace("-", " ")).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))
