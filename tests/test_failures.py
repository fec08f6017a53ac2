"""The one failure classifier, the retry policy, the circuit breaker, the status table for
retries and the superseding of error lines (pure units: no server, no worker)."""

from __future__ import annotations

import email.utils
import json
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel

from workbench.batch.output import error_line, failure_line
from workbench.engines.base import ChatResult
from workbench.engines.failures import (
    Failure,
    RetryPolicy,
    classify,
    is_transient,
    parse_retry_after,
)
from workbench.engines.outage import CircuitBreaker
from workbench.errors import IllegalTransition
from workbench.store import ResultLog
from workbench.store.status import check_transition, held

URL = "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize(("status", "transient", "code"), [
    (400, False, "invalid_request"), (401, False, "unauthorized"), (403, False, "forbidden"),
    (404, False, "not_found"), (413, False, "request_too_large"), (422, False, "invalid_request"),
    (408, True, "timeout"), (409, True, "conflict"), (429, True, "rate_limited"),
    (500, True, "server_error"), (502, True, "server_error"), (503, True, "server_error"),
    (504, True, "server_error"),
])
def test_http_statuses(status: int, transient: bool, code: str) -> None:
    f = classify(status, {"error": {"message": "nope"}}, endpoint=URL)
    assert (f.transient, f.code, f.status, f.endpoint) == (transient, code, status, URL)
    assert f.kind == ("transient" if transient else "final")
    assert f.described().startswith(f"HTTP {status} ") and f"from {URL}" in f.described()
    assert f.described().endswith(": nope")


def test_too_long_and_schema_are_final() -> None:
    long = classify(400, {"error": {"message": "This model's maximum context length is 512"
                                               " tokens. However, you requested 900"}})
    assert (long.transient, long.code) == (False, "context_length_exceeded")
    text = classify("prompt is too long for max_model_len 512")
    assert (text.transient, text.code, text.status) == (False, "context_length_exceeded", None)
    schema = classify(422, {"detail": "response_format.json_schema: schema is invalid"})
    assert (schema.transient, schema.code, schema.message) == (
        False, "invalid_request", "response_format.json_schema: schema is invalid")

    class Body(BaseModel):
        score: int

    with pytest.raises(Exception) as e:
        Body.model_validate({"score": "high"})
    v = classify(e.value)
    assert (v.transient, v.code, v.status) == (False, "invalid_request", None)
    too_long = classify(ValueError("The decoder prompt (length 900) is longer than the maximum"
                                   " model length of 512"))
    assert (too_long.transient, too_long.code) == (False, "context_length_exceeded")


@pytest.mark.parametrize(("exc", "code", "words"), [
    (httpx.ConnectError("[Errno 111] Connection refused"), "connection_error", "connection refused"),
    (ConnectionRefusedError(111, "Connection refused"), "connection_error", "connection refused"),
    (ConnectionResetError(104, "Connection reset by peer"), "connection_error", "connection reset"),
    (httpx.ReadError("[Errno 104] Connection reset by peer"), "connection_error", "connection reset"),
    (httpx.RemoteProtocolError("Server disconnected without sending a response."),
     "connection_error", "server closed the connection without answering"),
    (httpx.ConnectTimeout("timed out"), "timeout", "connect timeout"),
    (httpx.ReadTimeout("timed out"), "timeout", "read timeout"),
    (TimeoutError(), "timeout", "timeout"),
])
def test_exceptions_without_an_answer_are_transient_and_have_no_status(
        exc: BaseException, code: str, words: str) -> None:
    f = classify(exc, endpoint=URL, attempts=6)
    assert (f.transient, f.code, f.status, f.message, f.attempts) == (True, code, None, words, 6)
    assert is_transient(exc)
    said = f.described()
    assert "Errno" not in said and "111" not in said and URL in said and "after 6 attempts" in said
    if words == "connection refused":
        assert said == f"could not connect to {URL} after 6 attempts (connection refused)"
    elif code == "connection_error":
        assert said == f"lost the connection to {URL} after 6 attempts ({words})"
    else:
        assert said == f"no answer from {URL} after 6 attempts ({words})"


def test_other_libraries_exceptions() -> None:
    import aiohttp
    import httpx2
    from google.genai import errors

    assert classify(httpx2.ConnectError("[Errno 111] Connection refused")).message == \
        "connection refused"
    assert classify(aiohttp.ServerDisconnectedError()).code == "connection_error"
    limited = classify(errors.ClientError(429, {"error": {"code": 429, "message": "quota",
                                                          "status": "RESOURCE_EXHAUSTED"}}))
    assert (limited.transient, limited.status, limited.code) == (True, 429, "rate_limited")
    bad_key = classify(errors.ClientError(401, {"error": {"code": 401, "message": "bad key",
                                                          "status": "UNAUTHENTICATED"}}))
    assert (bad_key.transient, bad_key.status, bad_key.message) == (False, 401, "bad key")
    down = classify(errors.ServerError(503, {"error": {"code": 503, "message": "overloaded"}}))
    assert (down.transient, down.status) == (True, 503)
    resp = httpx.Response(401, request=httpx.Request("POST", URL))
    st = classify(httpx.HTTPStatusError("401", request=resp.request, response=resp))
    assert (st.transient, st.status, st.code) == (False, 401, "unauthorized")


def test_ray_replica_deaths_are_transient_and_user_errors_inside_a_replica_are_not() -> None:
    ray_exc = pytest.importorskip("ray.exceptions")
    died = classify(ray_exc.ActorDiedError())
    assert (died.transient, died.code, died.status) == (True, "replica_died", None)
    assert classify(ray_exc.WorkerCrashedError()).code == "replica_died"
    wrapped = ray_exc.RayTaskError("f", "tb", ValueError("prompt longer than the maximum"
                                                         " context length")).as_instanceof_cause()
    inner = classify(wrapped)
    assert (inner.transient, inner.code) == (False, "context_length_exceeded")


def test_unknown_errors_are_final_in_words() -> None:
    f = classify(KeyError("choices"))
    assert (f.transient, f.status, f.code) == (False, None, "invalid_request")


def test_retry_after_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("") is None
    f = classify(429, headers=httpx.Headers({"Retry-After": "7"}))
    assert f.retry_after_s == 7.0
    assert classify(503, headers={"Retry-After": "3"}).retry_after_s == 3.0
    assert classify(500, headers={"Retry-After": "3"}).retry_after_s is None  # only 429/503


def test_retry_policy_backoff_and_server_hints() -> None:
    p = RetryPolicy(max_attempts=3, initial_s=1.0, max_s=4.0, jitter_s=0.0, max_retry_after_s=60)
    assert [p.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 4.0]
    assert p.delay(1, hint_s=10.0) == 10.0  # Retry-After wins when longer
    assert p.delay(3, hint_s=0.5) == 4.0
    assert p.delay(1, hint_s=600.0) == 60.0  # capped
    t = Failure(transient=True, code="timeout", message="read timeout", attempts=2)
    assert p.should_retry(t) and not p.should_retry(t.model_copy(update={"attempts": 3}))
    assert not p.should_retry(Failure(transient=False, code="unauthorized", message="", status=401))


def test_circuit_breaker_opens_probes_with_backoff_and_closes() -> None:
    now = [100.0]
    b = CircuitBreaker(threshold=3, probe_every_s=10, deadline_s=60, first_probe_s=1,
                       clock=lambda: now[0])
    refused = Failure(transient=True, code="connection_error", message="connection refused",
                      endpoint=URL)
    limited = Failure(transient=True, code="rate_limited", message="", status=429)
    assert not b.failure(refused) and not b.failure(refused)
    b.success()  # an answer in between: not consecutive
    assert not b.failure(refused) and not b.failure(limited) and not b.failure(refused)
    assert b.failure(refused) and b.is_open and b.outages == 1
    assert "server unreachable since " in b.message() and "retrying every 10 s" in b.message()
    assert URL in b.message()
    assert not b.probe_due()
    delays = []
    for _ in range(6):
        now[0] = b.next_probe_at
        assert b.probe_due()
        before = now[0]
        assert b.probed(False) is None
        delays.append(b.next_probe_at - before)
    assert delays == [2, 4, 8, 10, 10, 10]
    assert not b.expired()
    now[0] += 5
    assert b.probed(True) == pytest.approx(now[0] - 100.0) and not b.is_open
    assert b.stats()["probes"] == 7
    for _ in range(3):
        b.failure(refused)
    now[0] += 61
    assert b.expired()


def test_status_table_allows_completed_to_queued_only_for_retry_failed() -> None:
    with pytest.raises(IllegalTransition, match="'completed' to 'queued'.*retry_failed"):
        check_transition("j", "completed", "queued")
    assert check_transition("j", "completed", "queued", retry_failed=True) == "queued"
    with pytest.raises(IllegalTransition):
        check_transition("j", "completed", "in_progress", retry_failed=True)
    assert check_transition("j", "failed", "queued") == "queued"
    assert held("interrupted", "server unreachable") and not held("interrupted", None)
    assert not held("failed", "x")


def test_error_lines_carry_true_status_class_attempts_endpoint() -> None:
    refused = classify(httpx.ConnectError("[Errno 111] Connection refused"), endpoint=URL,
                       attempts=6)
    line = failure_line(ChatResult(custom_id="a", error=refused.described(),
                                   error_code=refused.code, failure=refused))
    assert line["response"] is None and line["custom_id"] == "a"
    assert line["error"] == {"code": "connection_error",
                             "message": f"could not connect to {URL} after 6 attempts"
                                        " (connection refused)",
                             "workbench": {"class": "transient", "attempts": 6, "endpoint": URL}}
    denied = classify(401, {"error": "Unauthorized"}, endpoint=URL)
    line = failure_line(ChatResult(custom_id="b", error=denied.described(), failure=denied))
    assert line["response"]["status_code"] == 401
    assert line["response"]["body"]["error"]["type"] == "authentication_error"
    assert line["error"]["workbench"]["class"] == "final"
    # an in-process engine's refusal: final, 400 as an OpenAI server would answer
    local = failure_line(ChatResult(custom_id="c", error="prompt too long for the maximum"
                                                        " context length", error_code=None))
    assert local["response"]["status_code"] == 400
    assert local["error"]["code"] == "context_length_exceeded"
    assert local["error"]["workbench"]["class"] == "final"
    assert error_line("d", "x")["response"]["status_code"] == 400  # default unchanged


def test_supersede_moves_lines_atomically_and_keeps_the_rest(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "errors.jsonl")
    for i in range(6):
        log.append({"custom_id": f"r{i}", "error": {"workbench": {
            "class": "transient" if i % 2 else "final"}}})
    log.close()
    with open(log.path, "a") as f:
        f.write('{"custom_id": "torn"')  # a torn last line is dropped, not kept
    audit = tmp_path / "errors.superseded.jsonl"
    moved = log.supersede(lambda r: r["error"]["workbench"]["class"] == "transient", audit)
    assert moved == 3
    assert [r["custom_id"] for r in log.records()] == ["r0", "r2", "r4"]
    assert [json.loads(x)["custom_id"] for x in audit.read_text().splitlines()] == ["r1", "r3", "r5"]
    assert not (tmp_path / "errors.jsonl.tmp").exists()
    assert log.supersede(lambda r: r["error"]["workbench"]["class"] == "transient", audit) == 0
    log.append({"custom_id": "r9"})
    with pytest.raises(RuntimeError, match="open for appending"):
        log.supersede(lambda r: True, audit)
    log.close()
