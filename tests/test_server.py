"""The OpenAI-compatible batch server, driven by the official `openai` client over HTTP.

Most tests run without a worker (batches stay queued) and need no model; the two
`vllm` tests run the real engine on the tiny Llama through a worker thread.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.batch_helpers import request_lines, write_jsonl
from tests.conftest import make_wb, worker_env
from tests.server_helpers import LiveServer, create, free_port, poll, upload
from workbench import Workbench
from workbench.server import create_app, serve
from workbench.server.security import UnsafeBind, check_bind


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Workbench, LiveServer]]:
    """A server over a fresh root, no worker: created batches stay queued."""
    wb = make_wb(tmp_path / "wb")
    with LiveServer(create_app(wb, model="tiny-test-model")) as srv:
        yield wb, srv


# -- files ---------------------------------------------------------------------------------
def test_files_upload_retrieve_list_content_delete(live: tuple[Workbench, LiveServer],
                                                   tmp_path: Path) -> None:
    wb, srv = live
    c = srv.client()
    paths = [write_jsonl(tmp_path / f"in{i}.jsonl", request_lines(3 + i, prefix=f"f{i}-"))
             for i in range(3)]
    ids = [upload(c, p) for p in paths]
    assert len(set(ids)) == 3 and all(i.startswith("file-") for i in ids)
    got = c.files.retrieve(ids[0])
    assert (got.filename, got.purpose, got.bytes) == ("in0.jsonl", "batch", paths[0].stat().st_size)
    assert got.expires_at == got.created_at + 30 * 86400
    assert c.files.content(ids[1]).content == paths[1].read_bytes()
    # newest first, one per page, the client follows `after` through every page
    page = c.files.list(limit=1)
    assert len(page.data) == 1 and page.has_more
    assert [f.id for f in c.files.list(limit=1)] == ids[::-1]
    assert [f.id for f in c.files.list(order="asc")] == ids
    assert c.files.list(purpose="batch_output").data == []
    # delete: gone from the API and from disk
    assert c.files.delete(ids[0]).deleted is True
    assert not (wb.root / "files" / f"{ids[0]}.jsonl").exists()
    with pytest.raises(openai.NotFoundError) as e:
        c.files.retrieve(ids[0])
    assert e.value.body["code"] == "file_not_found" and ids[0] in e.value.body["message"]
    assert [f.id for f in c.files.list()] == ids[:0:-1]


def test_file_ids_cannot_reach_outside_the_store(live: tuple[Workbench, LiveServer]) -> None:
    wb, srv = live
    (wb.root / "secret.jsonl").write_text("secret\n")
    http = httpx.Client(base_url=srv.url)
    for bad in ["..%2Fworkbench.db", "..%2F..%2Fsecret", "%2Fetc%2Fpasswd", "file-..%2Fsecret",
                "file-batch_..%2F..%2Fsecret-output", "workbench.db", "file-" + "0" * 31,
                "file-batch_zz-output", "file-batch_123-../../x"]:
        for path in (f"/v1/files/{bad}", f"/v1/files/{bad}/content"):
            r = http.get(path)
            assert r.status_code == 404, (path, r.status_code, r.text)
            assert b"secret" not in r.content and b"SQLite" not in r.content
            assert r.json()["error"]["type"] == "invalid_request_error"


def test_output_read_while_worker_appends_gives_complete_lines_only(
        live: tuple[Workbench, LiveServer], tmp_path: Path) -> None:
    wb, srv = live
    job = wb.batch.submit(write_jsonl(tmp_path / "in.jsonl", request_lines(3)), model="m")
    whole = [json.dumps({"custom_id": f"r{i}", "response": {"status_code": 200}}) for i in range(2)]
    job.output_path.write_text("\n".join(whole) + "\n" + '{"custom_id": "r2", "resp')  # mid-write
    c = srv.client()
    fid = f"file-{job.id}-output"
    assert c.files.retrieve(fid).bytes == len("\n".join(whole)) + 1
    assert c.files.content(fid).text.splitlines() == whole
    assert c.batches.retrieve(job.id).output_file_id is None  # offered once the batch settles


def test_odd_upload_names_are_kept_as_data(live: tuple[Workbench, LiveServer],
                                           tmp_path: Path) -> None:
    wb, srv = live
    c = srv.client()
    data = write_jsonl(tmp_path / "in.jsonl", request_lines(2)).read_bytes()
    with pytest.raises(openai.BadRequestError) as e:  # no filename: not a file part at all
        c.files.create(file=("", data), purpose="batch")
    assert e.value.body["param"] == "file"
    for name in ('../../evil"\r\nX-Injected: 1.jsonl', "données é 名前.jsonl"):
        f = c.files.create(file=(name, data), purpose="batch")
        got = c.files.retrieve(f.id)
        if name.startswith("donn"):
            assert got.filename == name
        assert got.filename and got.id == f.id  # (the client escapes quotes and CR/LF itself)
        r = httpx.get(f"{srv.url}/v1/files/{f.id}/content")
        assert r.status_code == 200 and r.content == data and "x-injected" not in r.headers
    assert sorted(p.name for p in (wb.root / "files").iterdir()) == sorted(
        f"{x.id}.jsonl" for x in c.files.list())


def test_upload_purpose_other_than_batch_is_refused(live: tuple[Workbench, LiveServer],
                                                    tmp_path: Path) -> None:
    wb, srv = live
    path = write_jsonl(tmp_path / "in.jsonl", request_lines(2))
    with pytest.raises(openai.BadRequestError) as e, open(path, "rb") as f:
        srv.client().files.create(file=f, purpose="fine-tune")
    assert e.value.body["param"] == "purpose" and "'batch'" in e.value.body["message"]
    assert list((wb.root / "files").iterdir()) == []


def test_upload_size_cap_refuses_whole_upload(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    with LiveServer(create_app(wb, max_upload_bytes=4000)) as srv:
        c = srv.client()
        small = write_jsonl(tmp_path / "small.jsonl", request_lines(3))
        big = write_jsonl(tmp_path / "big.jsonl", request_lines(80))
        assert small.stat().st_size < 4000 < big.stat().st_size
        with pytest.raises(openai.APIStatusError) as e:
            upload(c, big)
        assert e.value.status_code == 413 and e.value.body["code"] == "file_too_large"
        assert "4,000 bytes" in e.value.body["message"]
        # a chunked body (no Content-Length) is counted while it streams
        body = b"--xx\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n" \
               b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n" \
               b"Content-Type: application/octet-stream\r\n\r\n" + b"x" * 200_000 + b"\r\n--xx--\r\n"

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 8192):
                yield body[i:i + 8192]

        r = httpx.post(f"{srv.url}/v1/files", content=chunks(),
                       headers={"content-type": "multipart/form-data; boundary=xx"})
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "file_too_large"
        assert c.files.list().data == [] and list((wb.root / "files").iterdir()) == []
        assert c.files.retrieve(upload(c, small)).bytes == small.stat().st_size


# -- batches: validation, limits -------------------------------------------------------------
def test_bad_upload_is_refused_at_upload_with_line_numbered_problems_on_request(
        live: tuple[Workbench, LiveServer], tmp_path: Path) -> None:
    """`?validate=true`: the upload is validated whole on arrival; nothing of a bad one is
    kept. (Without it the file is accepted and its batch fails: test_server_failed_file.)"""
    wb, srv = live
    c = srv.client()
    lines = [json.dumps(x) for x in request_lines(6)]
    lines[1] = '{"custom_id": "r1", "method": "POST"'                     # line 2: not JSON
    bad = json.loads(lines[2])
    del bad["body"]["messages"]
    lines[2] = json.dumps(bad)                                            # line 3: no messages
    lines[3] = lines[0]                                                   # line 4: duplicate id
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(openai.BadRequestError) as e, open(path, "rb") as f:
        c.files.create(file=f, purpose="batch", extra_query={"validate": "true"})
    err = e.value.body
    assert (err["code"], err["param"], err["total_problems"]) == ("invalid_file", "file", 3)
    assert [(p["line"], p["param"]) for p in err["problems"]] == [
        (2, "line"), (3, "body.messages"), (4, "custom_id")]
    assert "line 3: body.messages: required field is missing" in err["message"]
    assert "first on line 1" in err["problems"][2]["message"]
    # a binary file is refused the same way, before anything is stored, with or without
    with pytest.raises(openai.BadRequestError) as e:
        c.files.create(file=("model.bin", b"\x89PNG\r\n\x1a\n\x00\x00" * 100), purpose="batch")
    assert "binary file" in e.value.body["message"] and e.value.body["code"] == "invalid_file"
    with pytest.raises(openai.BadRequestError) as e:  # not UTF-8 (no NUL byte)
        c.files.create(file=("latin1.jsonl", "{\"custom_id\": \"é\"}\n".encode("latin-1")),
                       purpose="batch", extra_query={"validate": "true"})
    assert e.value.body["problems"][0]["message"].startswith("not valid UTF-8")
    assert c.files.list().data == [] and list((wb.root / "files").iterdir()) == []
    assert wb.store.list_jobs() == []


def test_lines_for_another_endpoint_give_failed_batch_with_line_numbered_errors(
        live: tuple[Workbench, LiveServer], tmp_path: Path) -> None:
    wb, srv = live
    c = srv.client()
    lines = request_lines(5)
    lines[4] = {"custom_id": "c", "method": "POST", "url": "/v1/completions",
                "body": {"prompt": "hi", "max_tokens": 3}}                 # line 5: other endpoint
    batch = create(c, upload(c, write_jsonl(tmp_path / "mixed.jsonl", lines)),
                   metadata={"app": "aris"})
    assert batch.status == "failed" and batch.failed_at is not None
    assert [(e.line, e.code, e.param) for e in batch.errors.data] == [(5, "invalid_url", "url")]
    assert batch.errors.data[0].message == (
        "The URL provided for this request does not match the batch endpoint: the line asks "
        "for /v1/completions, the batch is for /v1/chat/completions.")
    assert batch.request_counts.total == 0 and batch.output_file_id is None
    assert batch.metadata == {"app": "aris"}
    # the failed batch persists and is listed; nothing was queued
    assert c.batches.retrieve(batch.id).status == "failed"
    assert [b.id for b in c.batches.list()] == [batch.id]
    assert wb.store.list_jobs() == [] and wb.queue()["queued_jobs"] == 0
    assert list((wb.root / "jobs").iterdir()) == []


def test_request_mistakes_are_openai_4xx_and_create_nothing(
        live: tuple[Workbench, LiveServer], tmp_path: Path) -> None:
    wb, srv = live
    c = srv.client()
    fid = upload(c, write_jsonl(tmp_path / "in.jsonl", request_lines(3)))
    with pytest.raises(openai.BadRequestError) as e:
        c.batches.create(input_file_id=fid, endpoint="/v1/responses",  # type: ignore[arg-type]
                         completion_window="24h")
    assert e.value.body["param"] == "endpoint" and "/v1/chat/completions" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        c.batches.create(input_file_id=fid, endpoint="/v1/chat/completions",
                         completion_window="1h")  # type: ignore[arg-type]
    assert e.value.body["param"] == "completion_window"
    with pytest.raises(openai.NotFoundError) as e:
        create(c, "file-" + "a" * 32)
    assert e.value.body["param"] == "input_file_id" and e.value.body["code"] == "file_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        create(c, fid, metadata={f"k{i}": "v" for i in range(17)})
    assert e.value.body["param"] == "metadata" and "16" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        create(c, fid, extra_body={"priority": "high"})
    assert e.value.body["param"] == "priority"
    with pytest.raises(openai.NotFoundError) as e:
        c.batches.retrieve("batch_doesnotexist")
    assert e.value.body["code"] == "batch_not_found"
    with pytest.raises(openai.NotFoundError):
        c.batches.cancel("batch_doesnotexist")
    r = httpx.post(f"{srv.url}/v1/batches", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(f"{srv.url}/v1/batches", params={"limit": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"
    r = httpx.get(f"{srv.url}/v1/batches", params={"after": "batch_nope"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "after"
    r = httpx.get(f"{srv.url}/v1/files", params={"after": "file-nope"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_found"
    assert wb.store.list_jobs() == [] and c.batches.list().data == []


def test_queue_limit_is_429_with_openai_body_and_health_tells_before(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb", max_queued_jobs=2, max_queued_requests=1000)
    with LiveServer(create_app(wb, model="tiny-test-model")) as srv:
        c = srv.client()
        health = httpx.get(f"{srv.url}/health").json()
        assert health["queue_available"] and health["jobs_available"] == 2
        assert health["limits"]["max_queued_jobs"] == 2 and "model" not in health
        assert "tiny-test-model" not in json.dumps(health)  # no model names or paths unauthenticated
        fid = upload(c, write_jsonl(tmp_path / "in.jsonl", request_lines(5)))
        first, second = create(c, fid), create(c, fid)
        assert first.status == second.status == "validating"  # queued: no worker here
        assert first.request_counts.total == 5 and first.workbench["status"] == "queued"
        assert first.input_file_id == fid and first.in_progress_at is None
        assert first.expires_at == first.created_at + 86400
        health = httpx.get(f"{srv.url}/health").json()
        assert (health["queued_jobs"], health["queued_requests"]) == (2, 10)
        assert health["queue_available"] is False and health["jobs_available"] == 0
        with pytest.raises(openai.RateLimitError) as e:
            create(c, fid)
        assert e.value.status_code == 429 and e.value.body["code"] == "max_queued_jobs"
        assert e.value.body["type"] == "rate_limit_error"
        assert "2 now + 1 submitted > 2 allowed" in e.value.body["message"]
        assert e.value.response.headers["retry-after"] == "5"
        assert len(wb.store.list_jobs()) == 2 and len(c.batches.list().data) == 2
        # cancelling a queued batch frees the queue at once
        assert c.batches.cancel(first.id).status == "cancelled"
        assert c.batches.cancel(first.id).status == "cancelled"  # idempotent
        assert httpx.get(f"{srv.url}/health").json()["queue_available"] is True
        # too many requests in one more batch → 429 on max_queued_requests
        big = upload(c, write_jsonl(tmp_path / "big.jsonl", request_lines(996)))
        with pytest.raises(openai.RateLimitError) as e:
            create(c, big)
        assert e.value.body["code"] == "max_queued_requests"
        assert len(wb.store.list_jobs()) == 2


def test_batch_over_per_job_limit_fails_with_too_many_tasks(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb", max_requests_per_job=4)
    with LiveServer(create_app(wb)) as srv:
        c = srv.client()
        batch = create(c, upload(c, write_jsonl(tmp_path / "in.jsonl", request_lines(6))))
        assert batch.status == "failed"
        assert [(e.line, e.code) for e in batch.errors.data] == [(5, "too_many_tasks")]
        assert wb.store.list_jobs() == []


# -- batches: listing, both front doors ------------------------------------------------------
def test_list_paginates_newest_first_over_http_and_notebook_batches(
        live: tuple[Workbench, LiveServer], tmp_path: Path) -> None:
    wb, srv = live
    c = srv.client()
    path = write_jsonl(tmp_path / "in.jsonl", request_lines(4))
    fid = upload(c, path)
    ids = [create(c, fid, metadata={"n": str(i)}).id for i in range(2)]
    notebook = wb.batch.submit(path, model="tiny-test-model")      # the notebook front door
    ids.append(notebook.id)
    other = write_jsonl(tmp_path / "other.jsonl", [{"custom_id": "c", "method": "POST",
                        "url": "/v1/completions", "body": {"prompt": "hi"}}])
    ids.append(create(c, upload(c, other)).id)   # refused at create: another endpoint
    page = c.batches.list(limit=3)
    assert [b.id for b in page.data] == ids[::-1][:3] and page.has_more
    assert [b.id for b in c.batches.list(limit=1)] == ids[::-1]   # auto-paging via `after`
    # the notebook's job, seen over HTTP: its own input file, readable
    nb = c.batches.retrieve(notebook.id)
    assert nb.input_file_id == f"file-{notebook.id}-input" and nb.status == "validating"
    assert nb.endpoint == "/v1/chat/completions" and nb.metadata is None
    assert c.files.content(nb.input_file_id).content == path.read_bytes()
    assert c.files.retrieve(nb.input_file_id).purpose == "batch"
    with pytest.raises(openai.BadRequestError):
        c.files.delete(nb.input_file_id)   # belongs to the job
    # and the HTTP batches, seen from the notebook side (jobs table and dashboard)
    jobs = wb.jobs()
    assert set(jobs["id"]) == set(ids[:3]) and (jobs["status"] == "queued").all()
    dash = wb.dashboard(interval=None)
    assert set(dash.views) == set(ids[:3])
    wb.job(ids[0]).cancel()
    b0 = c.batches.retrieve(ids[0])
    assert b0.status == "cancelled" and b0.cancelled_at is not None and b0.metadata == {"n": "0"}
    assert b0.output_file_id is None  # nothing ran
    with pytest.raises(openai.ConflictError):
        c.batches.cancel(ids[3])  # failed at validation: nothing to cancel


# -- auth, binding ---------------------------------------------------------------------------
def test_wrong_or_missing_token_is_401_and_creates_nothing(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    path = write_jsonl(tmp_path / "in.jsonl", request_lines(3))
    with LiveServer(create_app(wb, api_key="s3cret-key")) as srv:
        good = srv.client("s3cret-key")
        fid = upload(good, path)
        for key in ("wrong-key", "s3cret-ke", "s3cret-key2"):
            bad = srv.client(key)
            with pytest.raises(openai.AuthenticationError) as e:
                upload(bad, path)
            assert e.value.body["code"] == "invalid_api_key"
            with pytest.raises(openai.AuthenticationError):
                create(bad, fid)
            for call in (bad.batches.list, bad.files.list, lambda b=bad: b.files.content(fid),
                         lambda b=bad: b.files.delete(fid)):
                with pytest.raises(openai.AuthenticationError):
                    call()
        r = httpx.post(f"{srv.url}/v1/batches", json={"input_file_id": fid,
                       "endpoint": "/v1/chat/completions", "completion_window": "24h"})
        assert r.status_code == 401 and "missing API key" in r.json()["error"]["message"]
        r = httpx.get(f"{srv.url}/v1/files", headers={"Authorization": "Basic s3cret-key"})
        assert r.status_code == 401
        assert wb.store.list_jobs() == [] and [f.id for f in good.files.list()] == [fid]
        assert len(list((wb.root / "files").iterdir())) == 1
        assert httpx.get(f"{srv.url}/health").status_code == 200  # liveness stays open
        assert create(good, fid).status == "validating"
        assert len(wb.store.list_jobs()) == 1


def test_non_loopback_bind_needs_an_api_key(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "192.168.1.5", "example.org", "::"):
        with pytest.raises(UnsafeBind, match="WORKBENCH_API_KEY"):
            check_bind(host, None)
        check_bind(host, "key")
    for host in ("127.0.0.1", "localhost", "::1"):
        check_bind(host, None)
    wb = make_wb(tmp_path / "wb")
    with pytest.raises(UnsafeBind):
        serve(wb, host="0.0.0.0", port=1, worker=True, api_key="")
    assert wb._workers == []  # refused before starting anything


# -- the real engine: the whole flow with the official client ---------------------------------
@pytest.fixture(scope="module")
def vllm_live(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[Workbench, LiveServer]]:
    """Server + worker thread on one root, running the tiny Llama (engine pooled in-process)."""
    wb = make_wb(tmp_path_factory.mktemp("srv") / "wb")
    with LiveServer(create_app(wb, models={"aris-scorer": str(tiny_llama)}, window=16,
                               worker=True)) as srv:
        wb.start_worker()
        yield wb, srv
    wb.stop_workers()


@pytest.mark.vllm
def test_openai_client_whole_flow_on_vllm(vllm_live: tuple[Workbench, LiveServer],
                                          tiny_llama: Path, tmp_path: Path) -> None:
    wb, srv = vllm_live
    c = srv.client()
    lines = request_lines(30)
    for x in lines:
        x["body"]["model"] = "aris-scorer"
    lines[7]["body"]["messages"][0]["content"] = "candidate " * 700  # too long: that line's error
    fid = upload(c, write_jsonl(tmp_path / "in.jsonl", lines))
    batch = create(c, fid, metadata={"app": "aris", "run": "7"})
    assert batch.status in ("validating", "in_progress") and batch.request_counts.total == 30
    done = poll(c, batch.id, {"completed", "failed", "cancelled"})
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (29, 1)
    assert done.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at
    assert done.model == "aris-scorer" and done.metadata == {"app": "aris", "run": "7"}
    assert str(tiny_llama) not in done.model_dump_json()  # the served name, never the path
    assert done.workbench["requested_models"] == ["aris-scorer"]
    assert done.output_file_id == f"file-{batch.id}-output"
    out = [json.loads(x) for x in c.files.content(done.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(f"r{i}" for i in range(30) if i != 7)
    for o in out:
        assert o["error"] is None and o["response"]["status_code"] == 200
        assert o["response"]["request_id"].startswith("req_")
        body = o["response"]["body"]
        assert body["model"] == "aris-scorer"
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] > 0
        assert isinstance(body["choices"][0]["message"]["content"], str)
    errs = [json.loads(x) for x in c.files.content(done.error_file_id).text.splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errs] == [("r7", "context_length_exceeded")]
    assert c.files.retrieve(done.output_file_id).purpose == "batch_output"
    # the notebook side sees the same job and the same results
    job = wb.job(batch.id)
    assert job.status == "completed" and len(job.results()) == 30


@pytest.mark.vllm
def test_cancel_mid_run_gives_cancelled_with_partial_results(
        vllm_live: tuple[Workbench, LiveServer], tmp_path: Path) -> None:
    wb, srv = vllm_live
    c = srv.client()
    fid = upload(c, write_jsonl(tmp_path / "in.jsonl", request_lines(600, max_tokens=48)))
    batch = create(c, fid)
    deadline = time.monotonic() + 600
    while (b := c.batches.retrieve(batch.id)).request_counts.completed < 40:
        assert b.status in ("validating", "in_progress") and time.monotonic() < deadline, b
        time.sleep(0.05)
    assert b.status == "in_progress" and b.in_progress_at is not None
    assert b.output_file_id is None  # not offered until the batch settles
    first = c.batches.cancel(batch.id)
    assert first.status in ("cancelling", "cancelled")
    done = poll(c, batch.id, {"cancelled", "completed", "failed"}, timeout=120)
    assert done.status == "cancelled" and done.cancelled_at is not None, done
    assert done.cancelling_at is not None and done.cancelling_at <= done.cancelled_at
    out = [json.loads(x) for x in c.files.content(done.output_file_id).text.splitlines()]
    ids = [o["custom_id"] for o in out]
    assert 40 <= len(ids) < 600 and len(set(ids)) == len(ids)
    assert done.request_counts.completed == len(ids) and done.request_counts.total == 600
    assert all(o["response"]["status_code"] == 200 for o in out)
    # a batch that finished cannot be cancelled any more
    small = create(c, upload(c, write_jsonl(tmp_path / "ok.jsonl", request_lines(2))))
    assert poll(c, small.id, {"completed", "failed", "cancelled"}).status == "completed"
    with pytest.raises(openai.ConflictError) as e:
        c.batches.cancel(small.id)
    assert "completed" in e.value.body["message"]


def test_workbench_serve_command_runs_and_stops(tmp_path: Path) -> None:
    """`workbench serve` as a user starts it: a process with a worker thread, on loopback."""
    env = worker_env()
    env.pop("WORKBENCH_API_KEY", None)
    root, port = tmp_path / "wb", free_port()
    cmd = [sys.executable, "-m", "workbench.cli", "--root", str(root), "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health").json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        assert health["worker"] is True and health["queue_available"] is True
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        fid = upload(c, write_jsonl(tmp_path / "in.jsonl", request_lines(2)))
        assert (root / "files" / f"{fid}.jsonl").exists()
    finally:  # stop it even when an assertion above failed (that error is the one shown)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    assert rc == 0, proc.stderr.read().decode()[-2000:]
    refused = subprocess.run([*cmd[:-2], "--host", "0.0.0.0", "--port", str(port)], env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "WORKBENCH_API_KEY" in refused.stderr


# -- lifecycle without a model: the echo engine double under a served name -------------------
@pytest.fixture
def echo_live(tmp_path: Path) -> Iterator[tuple[Workbench, LiveServer]]:
    import tests.engines  # noqa: F401  (registers the "echo" provider)

    wb = make_wb(tmp_path / "wb")
    app = create_app(wb, models={"echo-model": {"provider": "echo", "model": "echo-model"}},
                     worker=True)
    with LiveServer(app) as srv:
        yield wb, srv
    wb.stop_workers()


def test_expires_after_deletes_uploads_and_outputs_and_queued_batches_expire(
        echo_live: tuple[Workbench, LiveServer], tmp_path: Path) -> None:
    wb, srv = echo_live
    c = srv.client()
    path = write_jsonl(tmp_path / "in.jsonl", request_lines(3))
    with open(path, "rb") as f:
        short = c.files.create(file=f, purpose="batch",
                               expires_after={"anchor": "created_at", "seconds": 1})
    assert short.expires_at == short.created_at + 1
    keep = upload(c, path)
    # a batch waiting past its (extension) window expires without running: no worker yet
    waiting = create(c, keep, extra_body={"completion_window_seconds": 0.5})
    assert waiting.status == "validating" and waiting.completion_window == "0.5s"
    time.sleep(1.2)
    assert [f.id for f in c.files.list(purpose="batch")] == [keep]   # the short one is gone
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(short.id)
    assert not (wb.root / "files" / f"{short.id}.jsonl").exists()
    expired = c.batches.retrieve(waiting.id)
    assert expired.status == "expired" and expired.expired_at is not None
    assert expired.output_file_id is None and expired.request_counts.failed == 3
    errs = [json.loads(x) for x in c.files.content(expired.error_file_id).text.splitlines()]
    assert [e["error"]["code"] for e in errs] == ["batch_expired"] * 3
    assert all(e["response"] is None for e in errs)
    # outputs expire after output_expires_after
    wb.start_worker()
    batch = create(c, keep, output_expires_after={"anchor": "created_at", "seconds": 1})
    done = poll(c, batch.id, {"completed", "failed"}, timeout=60)
    assert done.status == "completed" and done.model == "echo-model"
    out = c.files.retrieve(done.output_file_id)
    assert out.purpose == "batch_output" and out.expires_at - out.created_at == 1
    assert done.output_file_id in {f.id for f in c.files.list(purpose="batch_output")}
    time.sleep(1.2)
    assert done.output_file_id not in {f.id for f in c.files.list()}
    assert c.batches.retrieve(batch.id).output_file_id is None
    assert not wb.job(batch.id).output_path.exists()


def test_retention_is_its_own_field_over_http(echo_live: tuple[Workbench, LiveServer],
                                              tmp_path: Path) -> None:
    wb, srv = echo_live
    c = srv.client()
    wb.start_worker()
    batch = create(c, upload(c, write_jsonl(tmp_path / "in.jsonl", request_lines(2))))
    done = poll(c, batch.id, {"completed"}, timeout=60)
    assert done.workbench["purged_at"] is None and done.usage.total_tokens > 0
    assert [j["id"] for j in httpx.get(f"{srv.url}/v1/jobs", params={"kind": "batch"}
                                       ).json()["data"]] == [batch.id]
    assert wb.purge(0) == [batch.id]
    after = c.batches.retrieve(batch.id)
    assert after.status == "completed" and after.workbench["purged_at"] is not None
    assert after.output_file_id is None and "files purged by retention" in after.workbench["message"]
    assert done.output_file_id not in {f.id for f in c.files.list()}
    r = httpx.get(f"{srv.url}/v1/batches/{batch.id}/output")
    assert r.status_code == 410 and r.json()["error"]["code"] == "files_purged"
    job = httpx.get(f"{srv.url}/v1/jobs/{batch.id}").json()
    assert job["status"] == "completed" and job["purged_at"] is not None
    assert httpx.post(f"{srv.url}/v1/jobs/{batch.id}/resume").status_code == 409
