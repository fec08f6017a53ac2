"""Keys with owners and scopes, driven by the official `openai` client over HTTP.

The admin key (`WORKBENCH_API_KEY`) mints keys; a key sees only what it made (another
key's ids answer exactly as unknown ids: 404); a read-only key cannot create, cancel or
delete (403); a revoked key gets 401 on its very next request; no key is on disk in
plain text; failed authentications are throttled per address while a right key works.
No worker runs here: created batches stay queued (cancel turns them `cancelled`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.batch_helpers import request_lines, write_jsonl
from tests.conftest import REPO, make_wb, worker_env
from tests.server_helpers import LiveServer, create, upload
from workbench import Workbench
from workbench.server import create_app
from workbench.server.auth import FailureLimiter
from workbench.server.keys import KeyStore

ADMIN = "admin-" + "k" * 40


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Workbench, LiveServer]]:
    wb = make_wb(tmp_path / "wb")
    with LiveServer(create_app(wb, model="tiny-test-model", api_key=ADMIN)) as srv:
        yield wb, srv


def mint(srv: LiveServer, name: str, read_only: bool = False) -> dict[str, Any]:
    """A key minted over the admin's HTTP route."""
    r = httpx.post(f"{srv.url}/v1/keys", json={"name": name, "read_only": read_only},
                   headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    return r.json()


def status_and_code(call: Any) -> tuple[int, str | None]:
    with pytest.raises(openai.APIStatusError) as e:
        call()
    return e.value.status_code, e.value.body["code"] if isinstance(e.value.body, dict) else None


def test_a_key_sees_only_what_it_made_and_other_ids_are_404(
        live: tuple[Workbench, LiveServer], tmp_path: Path) -> None:
    wb, srv = live
    a_key = mint(srv, "scorer-app")
    b_key = KeyStore(wb.store).create("other-app")   # what `workbench keys create` does
    assert a_key["key"].startswith("wbk_") and a_key["read_only"] is False
    a, b, admin = srv.client(a_key["key"]), srv.client(b_key.key), srv.client(ADMIN)
    path = write_jsonl(tmp_path / "in.jsonl", request_lines(3))
    fa, fb = upload(a, path), upload(b, path)
    ba, bb = create(a, fa), create(b, fb)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"custom_id": "x"\n')
    failed_b = create(b, upload(b, broken))        # a failed batch is B's too
    assert failed_b.status == "failed"

    # lists: each key its own, the admin all
    assert [f.id for f in a.files.list()] == [fa]
    assert [x.id for x in a.batches.list()] == [ba.id]
    assert {f.id for f in b.files.list()} == {fb, failed_b.input_file_id}
    assert [x.id for x in b.batches.list()] == [failed_b.id, bb.id]
    assert {f.id for f in admin.files.list()} == {fa, fb, failed_b.input_file_id}
    assert {x.id for x in admin.batches.list()} == {ba.id, bb.id, failed_b.id}
    jobs_of = {k: [j["id"] for j in httpx.get(f"{srv.url}/v1/jobs", headers={
        "Authorization": f"Bearer {k}"}).json()["data"]] for k in (a_key["key"], ADMIN)}
    assert jobs_of == {a_key["key"]: [ba.id], ADMIN: [bb.id, ba.id]}

    # B's ids, seen with A's key, answer exactly as ids that never existed
    never_file, never_batch = "file-" + "0" * 32, "batch_" + "0" * 20
    for mine, unknown, calls in (
            (fb, never_file, (a.files.retrieve, a.files.content, a.files.delete,
                              lambda i: create(a, i))),
            (f"file-{bb.id}-input", f"file-{never_batch}-input",
             (a.files.retrieve, a.files.content)),
            (bb.id, never_batch, (a.batches.retrieve, a.batches.cancel)),
            (failed_b.id, never_batch, (a.batches.retrieve, a.batches.cancel))):
        for call in calls:
            theirs = status_and_code(lambda c=call, i=mine: c(i))  # type: ignore[misc]
            assert theirs[0] == 404 and theirs == status_and_code(
                lambda c=call, i=unknown: c(i)), (call, mine)  # type: ignore[misc]
    with pytest.raises(openai.NotFoundError) as e:
        a.files.list(after=fb)
    assert e.value.body["param"] == "after"
    head = {"Authorization": f"Bearer {a_key['key']}"}
    for method, route in (("GET", f"/v1/batches/{bb.id}/output"),
                          ("GET", f"/v1/batches/{bb.id}/errors"),
                          ("GET", f"/v1/jobs/{bb.id}"), ("POST", f"/v1/jobs/{bb.id}/cancel"),
                          ("POST", f"/v1/jobs/{bb.id}/resume"),
                          ("GET", f"/v1/jobs/{bb.id}/result"),
                          ("GET", f"/v1/jobs/{bb.id}/items"),
                          ("GET", f"/v1/batches?after={bb.id}")):
        r = httpx.request(method, srv.url + route, headers=head)
        assert r.status_code == 404, (route, r.text)
        assert bb.id in r.json()["error"]["message"]
    assert wb.store.get(bb.id).status.value == "queued"          # nothing of B's moved
    assert (wb.root / "files" / f"{fb}.jsonl").exists()
    # the owner reads and cancels its own; the admin reaches anyone's
    assert b.files.content(fb).content == path.read_bytes()
    assert b.batches.cancel(bb.id).status == "cancelled"
    assert admin.batches.cancel(ba.id).status == "cancelled"
    assert admin.files.content(fa).content == path.read_bytes()

    # a minted key cannot manage keys
    r = httpx.post(f"{srv.url}/v1/keys", json={"name": "x"}, headers=head)
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_permissions"
    assert httpx.get(f"{srv.url}/v1/keys", headers=head).status_code == 403


def test_a_phased_job_and_its_students_belong_to_the_key_that_submitted_it(
        tmp_path: Path) -> None:
    from tests.test_server_jobs import JUDGE, RUBRIC, STT, tone

    wb = make_wb(tmp_path / "wb")
    with LiveServer(create_app(wb, model="m", api_key=ADMIN, allow_engine_imports=True)) as srv:
        keys = KeyStore(wb.store)
        lab, other = keys.create("lab").key, keys.create("other").key
        reader = keys.create("reader", read_only=True).key
        spec = {"rubric": RUBRIC, "stt": {"engine": STT}, "llm": {"model": "j", "engine": JUDGE}}
        clip = tone(tmp_path / "s0.wav").read_bytes()
        files = [("files", ("s0.wav", clip, "audio/wav"))]

        def call(key: str, method: str, route: str, **kw: Any) -> httpx.Response:
            return httpx.request(method, srv.url + route,
                                 headers={"Authorization": f"Bearer {key}"}, **kw)

        r = call(lab, "POST", "/v1/phased", files=files, data={"spec": json.dumps(spec)})
        assert r.status_code == 200, r.text
        job_id = r.json()["id"]
        assert call(reader, "POST", "/v1/phased", files=files,
                    data={"spec": json.dumps(spec)}).status_code == 403
        assert [j["id"] for j in call(lab, "GET", "/v1/jobs").json()["data"]] == [job_id]
        assert call(lab, "GET", f"/v1/jobs/{job_id}/items/s0").json()["state"] == "waiting"
        assert call(other, "GET", "/v1/jobs").json()["data"] == []
        for method, route, kw in (
                ("GET", f"/v1/jobs/{job_id}", {}), ("GET", f"/v1/jobs/{job_id}/items", {}),
                ("GET", f"/v1/jobs/{job_id}/items/s0", {}),
                ("POST", f"/v1/jobs/{job_id}/items",
                 {"files": [("files", ("s1.wav", clip, "audio/wav"))]}),
                ("POST", f"/v1/jobs/{job_id}/cancel", {})):
            r = call(other, method, route, **kw)
            assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found", route
        assert wb.store.get(job_id).status.value == "queued" and wb.store.get(job_id).total == 1
        assert [j["id"] for j in call(ADMIN, "GET", "/v1/jobs").json()["data"]] == [job_id]


def test_read_only_key_reads_and_cannot_create_cancel_or_delete(
        live: tuple[Workbench, LiveServer], tmp_path: Path) -> None:
    wb, srv = live
    admin = srv.client(ADMIN)
    path = write_jsonl(tmp_path / "in.jsonl", request_lines(2))
    reader_key = mint(srv, "lab-dashboard", read_only=True)
    assert reader_key["read_only"] is True
    reader = srv.client(reader_key["key"])
    assert reader.files.list().data == [] and reader.batches.list().data == []
    assert reader.models.list().data[0].id == "tiny-test-model"
    fid = upload(admin, path)
    batch = create(admin, fid)
    for call in (lambda: upload(reader, path), lambda: create(reader, fid),
                 lambda: reader.batches.cancel(batch.id), lambda: reader.files.delete(fid)):
        with pytest.raises(openai.PermissionDeniedError) as e:
            call()
        assert e.value.status_code == 403
        assert e.value.body["code"] == "insufficient_permissions"
        assert "'lab-dashboard' is read-only" in e.value.body["message"]
        assert "not create, cancel or delete" in e.value.body["message"]
    r = httpx.post(f"{srv.url}/v1/jobs/{batch.id}/cancel",
                   headers={"Authorization": f"Bearer {reader_key['key']}"})
    assert r.status_code == 403
    assert wb.store.get(batch.id).status.value == "queued"
    assert [f.id for f in admin.files.list()] == [fid] and len(wb.store.list_jobs()) == 1


def test_revoked_key_is_401_at_once_and_no_key_is_on_disk_in_plain_text(
        live: tuple[Workbench, LiveServer], tmp_path: Path) -> None:
    wb, srv = live
    path = write_jsonl(tmp_path / "in.jsonl", request_lines(2))
    by_http, by_cli = mint(srv, "app-one"), KeyStore(wb.store).create("app-two", read_only=True)
    one, two = srv.client(by_http["key"]), srv.client(by_cli.key)
    fid = upload(one, path)
    assert two.batches.list().data == []
    # revoked over HTTP by the admin: the next request is refused
    r = httpx.delete(f"{srv.url}/v1/keys/{by_http['id']}",
                     headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    with pytest.raises(openai.AuthenticationError) as e:
        one.files.retrieve(fid)
    assert e.value.body["code"] == "invalid_api_key"
    # revoked on the store (as the CLI does), while the server runs: refused at once too
    KeyStore(wb.store).revoke("app-two")
    with pytest.raises(openai.AuthenticationError):
        two.batches.list()
    listed = httpx.get(f"{srv.url}/v1/keys", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert [(k["name"], k["revoked_at"] is not None) for k in listed["data"]] == [
        ("app-one", True), ("app-two", True)]
    assert "key" not in listed["data"][0] and "digest" not in json.dumps(listed)
    # a token that only looks right: same id, other secret
    forged = by_http["key"][:-4] + "AAAA"
    with pytest.raises(openai.AuthenticationError):
        srv.client(forged).files.list()
    # nothing under the store root holds a key (nor its secret part), database + WAL included
    wb.store.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    secrets = [by_http["key"], by_cli.key, ADMIN, by_http["key"].rsplit("_", 1)[1],
               by_cli.key.rsplit("_", 1)[1]]
    files = [p for p in wb.root.rglob("*") if p.is_file()]
    assert any(p.name == "workbench.db" for p in files) and len(files) >= 2
    for p in files:
        data = p.read_bytes()
        for s in secrets:
            assert s.encode() not in data, (p, s[:8])
    rows = wb.store.conn.execute("SELECT salt, digest FROM api_keys").fetchall()
    assert len(rows) == 2 and rows[0]["salt"] != rows[1]["salt"]
    assert all(len(r["salt"]) == 16 and len(r["digest"]) == 32 for r in rows)


def test_failed_authentications_are_throttled_per_address_and_a_right_key_works(
        tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    limiter = FailureLimiter(burst=5, refill_s=30)
    with LiveServer(create_app(wb, model="m", api_key=ADMIN, auth_limiter=limiter)) as srv:
        good = KeyStore(wb.store).create("app").key
        url = f"{srv.url}/v1/files"
        got = [httpx.get(url, headers={"Authorization": f"Bearer wrong-{i}"}).status_code
               for i in range(5)]
        assert got == [401] * 5
        for bad in ("wrong-6", good[:-1] + "x", ADMIN):   # over budget: even the admin waits
            r = httpx.get(url, headers={"Authorization": f"Bearer {bad}"})
            assert r.status_code == 429, (bad[:6], r.text)
            assert r.json()["error"]["type"] == "rate_limit_error"
            assert r.json()["error"]["code"] == "too_many_auth_failures"
            assert 1 <= int(r.headers["retry-after"]) <= 30
        with pytest.raises(openai.RateLimitError):
            srv.client("wrong-again").files.list()
        # the right minted key still works from the same address; no header is not a guess
        assert srv.client(good).files.list().data == []
        assert httpx.get(url).status_code == 401
        assert httpx.get(f"{srv.url}/health").status_code == 200


def test_failure_limiter_refills_and_forgets_old_addresses() -> None:
    assert (FailureLimiter().burst, FailureLimiter().refill_s) == (30, 1.0)   # as the README says
    lim = FailureLimiter(burst=2, refill_s=10, max_addresses=3)
    assert [lim.fail("a", now=0), lim.fail("a", now=0), lim.fail("a", now=0)] == [0, 0, 10]
    assert lim.wait_s("a", now=5) == 5 and lim.wait_s("b", now=5) == 0   # half refilled
    assert lim.wait_s("a", now=10) == 0          # one failure refilled after refill_s
    assert lim.fail("a", now=10) == 0 and lim.wait_s("a", now=10) == 10
    for addr in ("b", "c", "d"):
        lim.fail(addr, now=10)
    assert "a" not in lim._buckets and len(lim._buckets) == 3


def test_key_names_are_checked_and_revoke_takes_an_id_or_a_name(tmp_path: Path) -> None:
    keys = KeyStore(make_wb(tmp_path / "wb").store)
    one = keys.create("scorer-app")
    with pytest.raises(Exception, match="exists already"):
        keys.create("scorer-app")
    with pytest.raises(Exception, match="1 to 64 letters"):
        keys.create("two words")
    assert keys.revoke("scorer-app").revoked_at is not None
    again = keys.create("scorer-app")              # the name is free once revoked
    assert again.id != one.id and keys.verify(one.key) is None
    assert keys.verify(again.key) is not None and keys.verify(again.key + "x") is None
    assert keys.revoke(again.id).id == again.id
    with pytest.raises(Exception, match="no key 'nope'; active keys: none"):
        keys.revoke("nope")


def readme_keys_block() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if "workbench keys create" in b]
    return block


def test_readme_keys_commands_run_as_printed(tmp_path: Path) -> None:
    block = readme_keys_block()
    env = worker_env(WORKBENCH_ROOT=str(tmp_path / "wb"))
    env.pop("WORKBENCH_API_KEY", None)
    env["PATH"] = f"{Path(os.sys.executable).parent}{os.pathsep}{env['PATH']}"
    # the block as printed, then one line that hands the exported key to the test
    run = subprocess.run(["bash", "-euo", "pipefail", "-c",
                          block + '\nprintf "%s" "$SCORER_KEY" > key.txt\n'],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    token = (tmp_path / "key.txt").read_text()
    assert re.fullmatch(r"wbk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token)
    assert token not in out                            # --quiet went into the variable
    assert re.search(r"key_[0-9a-f]{12}  lab-dashboard  read-only\nwbk_", out), out
    assert "scorer-app               read-write" in out and "revoked key_" in out
    keys = KeyStore(make_wb(tmp_path / "wb").store)
    listed = {k.name: k for k in keys.list()}
    assert set(listed) == {"scorer-app", "lab-dashboard"}
    assert listed["lab-dashboard"].revoked_at is not None and listed["lab-dashboard"].read_only
    assert listed["scorer-app"].revoked_at is None
    caller = keys.verify(token)
    assert caller is not None and caller.name == "scorer-app" and not caller.read_only
