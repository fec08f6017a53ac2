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

from tests.batch_helpers import records, run_to_end, write_jsonl
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
    run_to_end(wb, job)
    assert job.status == "completed", job.info
    out = {r["custom_id"]: r["response"]["body"] for r in records(job.dir / "output.jsonl")}
    errs = {r["custom_id"]: r["error"]["message"] for r in records(job.dir / "errors.jsonl")}
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


def test_openai_client_runs_a_transcriptions_batch_on_serve_with_a_media_dir(
        tmp_path: Path, tiny_llama: Path) -> None:
    """Over HTTP as over `wb.batch.submit`: audio inline (data: URL) or by path under the
    server's `--media-dir`; a path outside it is that line's error, the rest completes."""
    from tests.server_helpers import LiveServer, poll, upload
    from workbench.server import create_app

    media = tmp_path / "media"
    wavs = [speak(s, media / f"h{i}.wav") for i, s in enumerate(SENTENCES[6:8])]
    outside = speak(SENTENCES[8], tmp_path / "elsewhere" / "x.wav")
    inline = "data:audio/wav;base64," + base64.b64encode(wavs[0].read_bytes()).decode()
    lines = [{"custom_id": "inline", "method": "POST", "url": URL,
              "body": {"file_url": inline, "model": "whisper-1"}},
             {"custom_id": "by-path", "method": "POST", "url": URL,
              "body": {"file_url": str(wavs[1]), "model": "whisper-1",
                       "response_format": "verbose_json"}},
             {"custom_id": "outside", "method": "POST", "url": URL,
              "body": {"file_url": str(outside), "model": "whisper-1"}}]
    wb = make_wb(tmp_path / "wb")
    app = create_app(wb, models=[f"chat={tiny_llama}"], worker=True, media_dirs=[str(media)])
    wb.start_worker()
    try:
        with LiveServer(app) as srv:
            c = srv.client()
            batch = c.batches.create(
                input_file_id=upload(c, write_jsonl(tmp_path / "in.jsonl", lines)),
                endpoint=URL, completion_window="24h")  # type: ignore[arg-type]
            done = poll(c, batch.id, {"completed", "failed", "cancelled", "expired"})
            assert done.status == "completed", done
            assert done.endpoint == URL
            assert (done.request_counts.total, done.request_counts.completed,
                    done.request_counts.failed) == (3, 2, 1)
            out = {o["custom_id"]: o["response"] for o in
                   map(json.loads, c.files.content(done.output_file_id).text.splitlines())}
            err = [json.loads(x) for x in c.files.content(done.error_file_id).text.splitlines()]
    finally:
        wb.stop_workers()
    from openai.types.audio import Transcription, TranscriptionVerbose

    ref = WhisperEngine()
    phased = [ref.transcribe(w).text for w in wavs]
    ref.unload()
    assert out["inline"]["status_code"] == 200
    assert Transcription.model_validate(out["inline"]["body"]).text == phased[0]
    verbose = TranscriptionVerbose.model_validate(out["by-path"]["body"])
    assert verbose.text == phased[1] and verbose.language == "en" and verbose.segments
    truth = [norm(s) for s in SENTENCES[6:8]]
    assert jiwer.wer(truth, [norm(t) for t in phased]) < 0.35
    assert [e["custom_id"] for e in err] == ["outside"]
    assert "is outside the folders this job may read audio from" in err[0]["error"]["message"]


def test_serve_refuses_a_media_dir_that_does_not_exist(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--root", str(tmp_path / "wb"), "serve", "--media-dir", str(tmp_path / "nope")])
    assert e.value.code == 2
    assert f"--media-dir {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err
