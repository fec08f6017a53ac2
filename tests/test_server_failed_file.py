"""A bad batch file fails the OpenAI way: the upload is accepted (200), the batch created
from it is `failed` with `errors.data[]` ({code, message, param, line}, OpenAI's codes),
the official `openai` client reads it unchanged, and nothing of it is queued.
`?validate=true` keeps the refusal at upload (tests/test_server.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types import Batch, BatchError

from tests.batch_helpers import request_lines
from tests.conftest import make_wb
from tests.server_helpers import LiveServer, create, upload
from workbench import Workbench
from workbench.server import create_app


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Workbench, LiveServer]]:
    wb = make_wb(tmp_path / "wb")
    with LiveServer(create_app(wb, model="tiny-test-model")) as srv:
        yield wb, srv


def nothing_queued(wb: Workbench) -> None:
    assert wb.store.list_jobs() == [] and wb.queue()["queued_jobs"] == 0
    assert list((wb.root / "jobs").iterdir()) == []
    assert list((wb.root / "staging").iterdir()) == []


def test_broken_line_upload_is_accepted_and_its_batch_fails_with_openai_errors(
        live: tuple[Workbench, LiveServer], tmp_path: Path) -> None:
    wb, srv = live
    c = srv.client()
    lines = [json.dumps(x) for x in request_lines(7)]
    lines[2] = '{"custom_id": "r2", "method": "POST", "url": '              # line 3: cut off
    no_messages = json.loads(lines[3])
    del no_messages["body"]["messages"]
    lines[3] = json.dumps(no_messages)                                     # line 4: no messages
    lines[5] = lines[0]                                                    # line 6: duplicate
    streaming = json.loads(lines[6])
    streaming["body"]["stream"] = True
    lines[6] = json.dumps(streaming)                                       # line 7: stream
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with open(path, "rb") as f:
        uploaded = c.files.create(file=f, purpose="batch")                 # 200, as at OpenAI
    assert uploaded.bytes == path.stat().st_size and uploaded.status == "processed"
    assert c.files.content(uploaded.id).content == path.read_bytes()

    batch = create(c, uploaded.id, metadata={"app": "scorer"})
    assert isinstance(batch, Batch) and batch.status == "failed"
    assert batch.failed_at is not None and batch.failed_at >= batch.created_at
    assert batch.errors is not None and batch.errors.object == "list"
    assert all(isinstance(e, BatchError) for e in batch.errors.data)
    first = batch.errors.data[0]
    assert (first.code, first.line, first.param) == ("invalid_json_line", 3, None)
    assert first.message.startswith("This line is not parseable as valid JSON: ")
    assert [(e.code, e.line, e.param) for e in batch.errors.data] == [
        ("invalid_json_line", 3, None),
        ("missing_required_parameter", 4, "body.messages"),
        ("duplicate_custom_id", 6, "custom_id"),
        ("streaming_unsupported", 7, "body.stream")]
    assert batch.errors.data[1].message == "Missing required parameter: 'body.messages'."
    assert "first on line 1" in batch.errors.data[2].message
    assert batch.request_counts.total == 0 and batch.output_file_id is None
    assert batch.metadata == {"app": "scorer"} and batch.input_file_id == uploaded.id
    # on the wire: exactly OpenAI's fields, and the same again on retrieve and list
    raw = httpx.get(f"{srv.url}/v1/batches/{batch.id}").json()
    assert raw["errors"]["object"] == "list"
    assert [set(e) for e in raw["errors"]["data"]] == [{"code", "message", "param", "line"}] * 4
    again = c.batches.retrieve(batch.id)
    assert again.status == "failed" and again.errors == batch.errors
    assert [b.id for b in c.batches.list()] == [batch.id]
    with pytest.raises(openai.ConflictError):
        c.batches.cancel(batch.id)
    nothing_queued(wb)


def test_empty_and_mixed_files_fail_with_their_codes(live: tuple[Workbench, LiveServer],
                                                      tmp_path: Path) -> None:
    wb, srv = live
    c = srv.client()
    empty = c.files.create(file=("empty.jsonl", b"\n\n"), purpose="batch")
    batch = create(c, empty.id)
    assert batch.status == "failed"
    assert [(e.code, e.line, e.param) for e in batch.errors.data] == [("empty_file", None, None)]
    odd = [json.dumps(x) for x in request_lines(3)]
    odd[0] = json.dumps({"custom_id": "c", "method": "POST", "url": "/v1/completions",
                         "body": {"prompt": "hi", "max_tokens": 3}})        # another endpoint
    odd[1] = json.dumps({**json.loads(odd[1]), "priority": "high"})         # unknown field
    odd[2] = "[1, 2]"                                                       # JSON, not an object
    fid = c.files.create(file=("odd.jsonl", "\n".join(odd).encode()), purpose="batch").id
    failed = create(c, fid)
    assert [(e.code, e.line, e.param) for e in failed.errors.data] == [
        ("invalid_url", 1, "url"), ("unknown_parameter", 2, "priority"),
        ("invalid_request", 3, None)]
    assert "expected a JSON object, got list" in failed.errors.data[2].message
    # a file with more problems than are listed says how many there were
    many = c.files.create(file=("many.jsonl", b"{\n" * 60), purpose="batch").id
    listed = create(c, many).errors.data
    assert len(listed) == 51 and listed[49].line == 50
    assert (listed[50].code, listed[50].message) == (
        "too_many_errors", "60 problems in all; the first 50 are listed")
    nothing_queued(wb)
    good = tmp_path / "ok.jsonl"
    good.write_text("\n".join(json.dumps(x) for x in request_lines(2)))
    assert create(c, upload(c, good)).status == "validating"   # a good file queues as before
    assert len(wb.store.list_jobs()) == 1
