"""The jobs API over HTTP: a grid (the real google-genai SDK against tests/fake_gemini.py)
and a phased job (test doubles for both phases, from tests/phased_doubles.py), submitted
with multipart uploads, polled, cancelled, resumed, read; a student's own item status.
"""

from __future__ import annotations

import json
import math
import struct
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_wb, wait_until
from tests.fake_gemini import API_KEY, FakeGemini, engine_settings
from tests.server_helpers import LiveServer
from workbench import Workbench
from workbench.server import create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
JUDGE = "tests.phased_doubles:ScriptedJudge"
STT = "tests.phased_doubles:SlowTranscriber"
RUBRIC = {"criteria": [{"name": "accuracy", "description": "facts are right", "max_score": 5}],
          "question": "Explain one fact of nature."}


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[tuple[Workbench, httpx.Client]]:
    monkeypatch.setenv("WORKBENCH_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    wb = make_wb(tmp_path / "wb")
    with LiveServer(create_app(wb, model="unused", allow_engine_imports=True)) as srv:
        yield wb, httpx.Client(base_url=srv.url, timeout=30)
    wb.stop_workers()


def tone(path: Path, seconds: float = 1.0) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 8)))
                               for i in range(int(16000 * seconds))))
    return path


def poll_job(http: httpx.Client, job_id: str, until: set[str], seen: list[float],
             timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        j = http.get(f"/v1/jobs/{job_id}").json()
        seen.append(j["progress"])
        if j["status"] in until:
            return j
        assert time.monotonic() < deadline, j
        time.sleep(0.05)


def test_grid_over_http_submit_poll_cancel_resume_result(
        server: tuple[Workbench, httpx.Client], tmp_path: Path) -> None:
    wb, http = server
    with FakeGemini(latency_s=0.15) as fake:
        spec = {"prompts": {"describe": "Describe the clip.", "objects": "List the objects."},
                "models": ["gemini-a", "gemini-b"], "judge": "gemini-judge",
                "settings": {"default_rpm": 60_000, "max_cells_in_flight": 1,
                             "gemini": engine_settings(fake.url)}}
        media = [("files", ("a.mp4", b"\x00\x01video-a" * 50, "video/mp4")),
                 ("files", ("b.mp4", b"\x00\x02video-b" * 60, "video/mp4"))]
        # the Python API's checks, over HTTP: every problem listed, nothing queued
        bad = http.post("/v1/grids", files=media, data={"spec": json.dumps(
            {**spec, "prompts": [""], "models": ["gemini-a"], "mode": "sometimes"})})
        assert bad.status_code == 400, bad.text
        err = bad.json()["error"]
        assert err["total_problems"] >= 2
        assert {p["entry"] for p in err["problems"]} >= {"mode", "prompt 1"}, err["problems"]
        assert "grid refused, nothing was stored" in err["message"]
        assert http.post("/v1/grids", files=media, data={"spec": "{not json"}).status_code == 400
        assert http.get("/v1/jobs").json()["data"] == []

        r = http.post("/v1/grids", files=media, data={"spec": json.dumps(spec)})
        assert r.status_code == 200, r.text
        job = r.json()
        assert (job["kind"], job["status"], job["progress"], job["counts"]["total"]) == (
            "grid", "queued", 0.0, 4)
        assert not (wb.root / "uploads").exists() or not any((wb.root / "uploads").iterdir())
        wb.start_worker()
        seen: list[float] = []
        wait_until(lambda: http.get(f"/v1/jobs/{job['id']}").json()["counts"]["completed"] >= 1,
                   30, "a cell")
        running = http.get(f"/v1/jobs/{job['id']}").json()
        assert running["status"] == "in_progress" and 10 <= running["progress"] < 100
        assert running["progress_message"] and running["eta_s"] is not None
        assert http.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] in ("cancelling",
                                                                              "cancelled")
        cancelled = poll_job(http, job["id"], {"cancelled"}, seen)
        assert 1 <= cancelled["counts"]["completed"] < 4
        partial = http.get(f"/v1/jobs/{job['id']}/result").json()
        assert partial["kind"] == "grid" and "score" in partial["columns"]
        fake.latency_s = 0.01
        assert http.post(f"/v1/jobs/{job['id']}/resume").json()["status"] == "queued"
        done = poll_job(http, job["id"], {"completed", "failed"}, seen)
        assert done["status"] == "completed" and done["progress"] == 100.0 and done["eta_s"] is None
        assert seen[-1] == 100.0 and min(seen) < 100
        res = http.get(f"/v1/jobs/{job['id']}/result").json()
        assert res["total"] == len(res["data"]) == 8  # 4 cells × 2 models
        assert {row["model"] for row in res["data"]} == {"gemini-a", "gemini-b"}
        assert all(1 <= row["score"] <= 10 for row in res["data"])
        page = http.get(f"/v1/jobs/{job['id']}/result", params={"offset": 6, "limit": 5}).json()
        assert len(page["data"]) == 2 and page["has_more"] is False
        # a finished job cannot be cancelled; listed with filters
        assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
        assert [j["id"] for j in http.get("/v1/jobs", params={"kind": "grid"}).json()["data"]] \
            == [job["id"]]
        assert http.get("/v1/jobs", params={"kind": "batch"}).json()["data"] == []
        assert http.get("/v1/jobs", params={"status": "nope"}).status_code == 400


def test_phased_over_http_and_a_students_place_while_waiting(
        server: tuple[Workbench, httpx.Client], tmp_path: Path) -> None:
    wb, http = server
    gate = tmp_path / "gate"
    clips = [tone(tmp_path / f"s{i}.wav") for i in range(5)]
    spec = {"rubric": RUBRIC, "batch_size": 2,
            "stt": {"engine": STT, "isolation": "inline", "options": {"delay_s": 0.05}},
            "llm": {"model": "judge", "engine": JUDGE, "isolation": "inline",
                    "options": {"gate": str(gate)}}}
    files = [("files", (p.name, p.read_bytes(), "audio/wav")) for p in clips]
    bad = http.post("/v1/phased", files=files,
                    data={"spec": json.dumps({**spec, "batch_size": 0})})
    (problem,) = bad.json()["error"]["problems"]
    assert bad.status_code == 400 and (problem["entry"], problem["param"]) == ("settings",
                                                                              "batch_size")
    assert http.get("/v1/jobs").json()["data"] == []

    r = http.post("/v1/phased", files=files, data={"spec": json.dumps(spec)})
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    s4 = http.get(f"/v1/jobs/{job_id}/items/s4").json()
    assert (s4["state"], s4["batch"], s4["position_in_batch"], s4["queue_position"]) == (
        "waiting", 3, 1, 5)
    assert s4["eta_s"] > 0 and "5th in line" in s4["message"]
    wb.start_worker()
    wait_until(lambda: http.get(f"/v1/jobs/{job_id}/items/s0").json()["state"] == "evaluating",
               30, "batch 1 evaluating")
    s3 = http.get(f"/v1/jobs/{job_id}/items/s3").json()
    assert (s3["state"], s3["batch"], s3["position_in_batch"], s3["queue_position"]) == (
        "waiting", 2, 2, 4)
    assert s3["eta_s"] > 0 and "4th in line, batch 2 (position 2 of 2)" in s3["message"]
    added = http.post(f"/v1/jobs/{job_id}/items", data={"item_ids": ["late"]},
                      files=[("files", ("late.wav", clips[0].read_bytes(), "audio/wav"))]).json()
    (late,) = added["data"]
    assert (late["item_id"], late["state"], late["batch"], late["queue_position"]) == (
        "late", "waiting", 3, 6)
    running = http.get(f"/v1/jobs/{job_id}").json()
    assert running["status"] == "in_progress" and running["counts"]["total"] == 6
    assert 0 <= running["progress"] < 100
    assert http.get(f"/v1/jobs/{job_id}/items/nobody").status_code == 404
    assert http.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelling"
    gate.touch()
    seen: list[float] = []
    assert poll_job(http, job_id, {"cancelled"}, seen)["status"] == "cancelled"
    assert http.post(f"/v1/jobs/{job_id}/resume").json()["status"] == "queued"
    done = poll_job(http, job_id, {"completed", "failed"}, seen)
    assert done["status"] == "completed" and done["counts"] == {"total": 6, "completed": 6,
                                                                "failed": 0}
    assert seen[-1] == 100.0
    rows = http.get(f"/v1/jobs/{job_id}/result").json()["data"]
    assert sorted(r["item_id"] for r in rows) == ["late", "s0", "s1", "s2", "s3", "s4"]
    assert {r["state"] for r in rows} == {"done"} and all(r["score_accuracy"] is not None
                                                          for r in rows)
    items = http.get(f"/v1/jobs/{job_id}/items").json()["data"]
    assert {i["state"] for i in items} == {"done"} and len(items) == 6
    late = http.post(f"/v1/jobs/{job_id}/items",
                     files=[("files", ("x.wav", clips[0].read_bytes(), "audio/wav"))])
    assert late.status_code == 400 and "takes no more" in late.json()["error"]["message"]
    # an unreadable recording is accepted and fails alone, with the reason (wb.phased's rule)
    mixed = http.post("/v1/phased", data={"spec": json.dumps(spec)}, files=[
        ("files", ("ok.wav", clips[0].read_bytes(), "audio/wav")),
        ("files", ("notes.wav", b"not audio", "audio/wav"))])
    assert mixed.status_code == 200, mixed.text
    junk = http.get(f"/v1/jobs/{mixed.json()['id']}/items/notes").json()
    assert junk["state"] == "failed" and "not a readable audio" in junk["message"], junk
    assert http.get(f"/v1/jobs/{mixed.json()['id']}/items/ok").json()["state"] == "waiting"


def test_engine_import_paths_need_the_servers_permission(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    with LiveServer(create_app(wb, model="unused")) as srv:
        spec = {"rubric": RUBRIC, "llm": {"model": "judge", "engine": JUDGE}}
        r = httpx.post(f"{srv.url}/v1/phased", data={"spec": json.dumps(spec)},
                       files=[("files", ("a.wav", tone(tmp_path / "a.wav").read_bytes()))])
        assert r.status_code == 400 and r.json()["error"]["param"] == "llm.engine"
        assert "WORKBENCH_ALLOW_ENGINE_IMPORTS" in r.json()["error"]["message"]
        assert wb.store.list_jobs() == []
