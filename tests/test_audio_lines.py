"""`/v1/audio/transcriptions` and `/translations` batch lines, run by batched faster-whisper.

Real speech (espeak-ng), the embedded Whisper tiny.en. The reference is the engine the
phased STT path uses (`WhisperEngine.transcribe`) on the same files: same words, same WER.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import jiwer
import pytest

from tests.batch_helpers import write_jsonl
from tests.conftest import make_wb
from tests.speech import SENTENCES, have_espeak, speak
from workbench.engines.whisper import WhisperEngine

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")
URL = "/v1/audio/transcriptions"


def norm(t: str) -> str:
    return " ".join("".join(c for c in t.lower() if c.isalnum() or c == " ").split())


def test_transcription_lines_equal_the_phased_path_and_paths_outside_are_refused(
        tmp_path: Path) -> None:
    media = tmp_path / "media"
    wavs = [speak(s, media / f"s{i}.wav") for i, s in enumerate(SENTENCES[:4])]
    outside = speak(SENTENCES[5], tmp_path / "secret" / "x.wav")
    (media / "link.wav").symlink_to(outside)  # inside by name, outside once resolved
    lines = [{"custom_id": f"s{i}", "method": "POST", "url": URL,
              "body": {"file_url": str(w), "model": "whisper-1"}} for i, w in enumerate(wavs)]
    lines += [
        {"custom_id": "uri", "method": "POST", "url": URL,
         "body": {"file_url": wavs[0].as_uri(), "response_format": "verbose_json"}},
        {"custom_id": "data", "method": "POST", "url": URL, "body": {
            "file_url": "data:audio/wav;base64," + base64.b64encode(wavs[1].read_bytes()).decode()}},
        {"custom_id": "translate", "method": "POST", "url": "/v1/audio/translations",
         "body": {"file_url": str(wavs[2])}},
        {"custom_id": "outside", "method": "POST", "url": URL, "body": {"file_url": str(outside)}},
        {"custom_id": "dotdot", "method": "POST", "url": URL,
         "body": {"file_url": str(media / ".." / "secret" / "x.wav")}},
        {"custom_id": "symlink", "method": "POST", "url": URL,
         "body": {"file_url": str(media / "link.wav")}},
        {"custom_id": "http", "method": "POST", "url": URL,
         "body": {"file_url": "http://127.0.0.1:9/a.wav"}},
        {"custom_id": "missing", "method": "POST", "url": URL,
         "body": {"file_url": str(media / "nope.wav")}},
    ]
    wb = make_wb(tmp_path / "wb")
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", lines), media_dir=media)
    wb.start_worker()
    try:
        job.wait(timeout=600, progress=False)
    finally:
        wb.stop_workers()
    assert job.status == "completed", job.info
    out = {r["custom_id"]: r["response"]["body"] for r in
           map(json.loads, (job.dir / "output.jsonl").read_text().splitlines())}
    errs = {r["custom_id"]: r["error"]["message"] for r in
            map(json.loads, (job.dir / "errors.jsonl").read_text().splitlines())}
    assert set(out) == {"s0", "s1", "s2", "s3", "uri", "data", "translate"}
    assert set(errs) == {"outside", "dotdot", "symlink", "http", "missing"}
    for k in ("outside", "dotdot", "symlink"):
        assert "is outside the folders this job may read audio from" in errs[k], errs[k]
    assert "nothing is fetched over the network" in errs["http"]
    assert errs["missing"].endswith("no such file")
    # the phased path's engine on the same files: same text, same WER
    ref = WhisperEngine()
    phased = [ref.transcribe(w).text for w in wavs]
    ref.unload()
    batch = [out[f"s{i}"]["text"] for i in range(4)]
    assert batch == phased
    truth = [norm(s) for s in SENTENCES[:4]]
    wer_batch = jiwer.wer(truth, [norm(t) for t in batch])
    assert wer_batch == jiwer.wer(truth, [norm(t) for t in phased]) and wer_batch < 0.35
    assert out["uri"]["text"] == phased[0] and out["data"]["text"] == phased[1]
    assert out["uri"]["segments"] and out["uri"]["language"] == "en"
    assert out["s0"]["usage"]["type"] == "duration"
    assert not any(p.name.endswith(".audio") for p in Path(os.environ.get("TMPDIR", "/tmp")).glob(
        "wb-audio-*/*"))
