"""A fake Gemini REST server (stdlib only) that the real google-genai SDK talks to in tests.

It speaks the wire protocol the SDK uses (see shared/RECIPES.md): resumable upload
start/upload/finalize with `X-Goog-Upload-URL`, `files.get` PROCESSING → ACTIVE (or FAILED),
`generateContent`, the Batch API (`batchGenerateContent`, `batches.get/cancel/delete`) with
inlined requests and responses. Every request is appended to `server.log`, so tests can
assert exactly what the client sent (uploads per media, calls per cell, resends on resume).

Knobs: per-model latency, injected errors (`inject`), models that always fail, a per-model
token-bucket rate limit that answers 429 like the real service, a judge that returns invalid
JSON, media that fail processing, files that vanish (expiry).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.http_fake import QuietHandler, serve_in_thread, shut_down

API_KEY = "fake-test-key"
ANSWER_TAG = re.compile(r'<answer id="([A-Za-z0-9_-]+)">')


@dataclass
class Injection:
    """Answer `times` matching requests with an HTTP error instead of serving them."""

    op: str
    status: int
    times: int | None  # None = forever
    model: str | None = None
    message: str = "injected error"
    retry_delay_s: float | None = None
    used: int = 0

    def matches(self, op: str, model: str | None) -> bool:
        if self.op != op or (self.model is not None and self.model != model):
            return False
        return self.times is None or self.used < self.times


@dataclass
class Bucket:
    """Token bucket per model: the fake's own rate limit, answered with 429 when empty."""

    rps: float
    burst: float
    tokens: float = 0.0
    last: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rps)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                503: "UNAVAILABLE"}


class FakeGemini:
    """Start with `with FakeGemini() as server:`; point the SDK at `server.url`."""

    def __init__(self, *, latency_s: float = 0.0, model_latency: dict[str, float] | None = None,
                 processing_polls: int = 1, batch_polls: int = 2,
                 rate_limits: dict[str, tuple[float, float]] | None = None,
                 batch_echo_metadata: bool = True) -> None:
        self.latency_s = latency_s
        #: lifetime of an uploaded file (the service's is 48 h); tests shorten it
        self.file_ttl_s = 48 * 3600.0
        self.model_latency = dict(model_latency or {})
        self.processing_polls = processing_polls
        self.batch_polls = batch_polls
        self.batch_echo_metadata = batch_echo_metadata
        self.buckets = {m: Bucket(rps, burst) for m, (rps, burst) in (rate_limits or {}).items()}
        self.injections: list[Injection] = []
        self.failing_media: set[str] = set()
        self.invalid_judge_times: int | None = 0
        self.judge_fenced = False
        self.responder: Callable[[str, dict[str, Any]], str] | None = None
        self.log: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.file_polls: dict[str, int] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> FakeGemini:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = serve_in_thread(handler, 0, "fake-gemini")
        return self

    def stop(self) -> None:
        shut_down(self._httpd)
        self._httpd = None

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- test controls -------------------------------------------------------------------
    def inject(self, op: str = "generate", status: int = 429, times: int | None = 1,
               model: str | None = None, message: str = "injected error",
               retry_delay_s: float | None = None) -> Injection:
        inj = Injection(op, status, times, model, message, retry_delay_s)
        with self.lock:
            self.injections.append(inj)
        return inj

    def fail_always(self, model: str, status: int = 500) -> None:
        self.inject("generate", status, None, model, f"model {model} is down")

    def fail_media(self, display_name: str) -> None:
        self.failing_media.add(display_name)

    def judge_returns_invalid_json(self, times: int | None = 1) -> None:
        self.invalid_judge_times = times

    def forget_files(self) -> None:
        """Every uploaded file disappears (as after its 48 h expiry)."""
        with self.lock:
            self.files.clear()

    # -- log queries ---------------------------------------------------------------------
    def requests(self, op: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.log if (op is None or e["op"] == op)
                    and (model is None or e.get("model") == model)]

    def generate_keys(self, status: int | None = 200) -> list[tuple[str, str]]:
        """(model, call key) of generateContent requests; the key is the first line tag."""
        return [(e["model"], e["key"]) for e in self.requests("generate")
                if status is None or e["status"] == status]

    # -- behaviour -----------------------------------------------------------------------
    def _injected(self, op: str, model: str | None) -> Injection | None:
        with self.lock:
            for inj in self.injections:
                if inj.matches(op, model):
                    inj.used += 1
                    return inj
        return None

    def _rate_limited(self, model: str) -> bool:
        with self.lock:
            b = self.buckets.get(model)
            return b is not None and not b.take()

    def answer(self, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One generateContent: (HTTP status, JSON body). Also used for batch items."""
        inj = self._injected("generate", model)
        if inj is not None:
            return inj.status, _error(inj.status, inj.message, inj.retry_delay_s)
        if self._rate_limited(model):
            return 429, _error(429, f"Resource has been exhausted (rate limit of {model})", 1.0)
        prompt, file_uris = _prompt_and_files(body)
        for uri in file_uris:
            fid = uri.rstrip("/").rsplit("/", 1)[-1]
            with self.lock:
                f = self.files.get(fid)
            if f is None:
                return 403, _error(403, f"You do not have permission to access the File {fid}"
                                   " or it may not exist.")
            if f["state"] != "ACTIVE":
                return 400, _error(400, f"The File {fid} is not in an ACTIVE state and usage"
                                   " is not allowed.")
        gen = body.get("generationConfig") or {}
        is_judge = bool(gen.get("responseSchema") or gen.get("responseJsonSchema"))
        if self.responder is not None:
            text = self.responder(model, body)
        elif is_judge:
            text = self._judge_text(model, prompt)
        else:
            first = prompt.strip().splitlines()[0] if prompt.strip() else ""
            text = (f"[{model}] answer to «{first[:80]}» using {len(file_uris)} file(s). "
                    f"The clip shows a person talking about the weather.")
        usage = {"promptTokenCount": len(prompt.split()) + 258 * len(file_uris),
                 "candidatesTokenCount": len(text.split()),
                 "totalTokenCount": len(prompt.split()) + 258 * len(file_uris) + len(text.split())}
        return 200, {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                                     "finishReason": "STOP", "index": 0}],
                     "usageMetadata": usage, "modelVersion": model,
                     "responseId": uuid.uuid4().hex[:12]}

    def _judge_text(self, model: str, prompt: str) -> str:
        with self.lock:
            if self.invalid_judge_times is None or self.invalid_judge_times > 0:
                if self.invalid_judge_times is not None:
                    self.invalid_judge_times -= 1
                return "Sure! Here is my evaluation: model A did great {not json"
        verdicts: dict[str, Any] = {}
        for label in ANSWER_TAG.findall(prompt):
            score = 1 + zlib.crc32(f"{label}:{len(prompt)}".encode()) % 10
            verdicts[label] = {"score": score, "reasoning": f"answer {label} is plausible",
                               "strengths": [f"{label} is concise"],
                               "weaknesses": [f"{label} lacks detail"]}
        verdicts["overall_summary"] = f"{len(verdicts)} answers compared by {model}"
        text = json.dumps(verdicts)
        # markdown fences around the JSON, as models do: the SDK's `parsed` is then None
        return f"```json\n{text}\n```" if self.judge_fenced else text


def _error(status: int, message: str, retry_delay_s: float | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": status, "message": message,
                           "status": STATUS_NAMES.get(status, "UNKNOWN")}
    if retry_delay_s is not None:
        err["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                           "retryDelay": f"{retry_delay_s}s"}]
    return {"error": err}


def _prompt_and_files(body: dict[str, Any]) -> tuple[str, list[str]]:
    texts, uris = [], []
    for content in body.get("contents") or []:
        for part in content.get("parts") or []:
            if "text" in part:
                texts.append(part["text"])
            fd = part.get("fileData") or part.get("file_data")
            if fd:
                uris.append(fd.get("fileUri") or fd.get("file_uri") or "")
    return "\n".join(texts), uris


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w.title() for w in rest)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z"


class _Handler(QuietHandler):
    fake: FakeGemini
    protocol_version = "HTTP/1.1"

    # -- plumbing ------------------------------------------------------------------------
    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, payload: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _log(self, op: str, status: int, **extra: Any) -> None:
        entry = {"t": time.monotonic(), "method": self.command, "path": self.path, "op": op,
                 "status": status, "api_version": self.path.split("/")[1 if not
                                                                    self.path.startswith("/upload") else 2],
                 **extra}
        with self.fake.lock:
            self.fake.log.append(entry)

    def _authorized(self) -> bool:
        if "upload_id=" in self.path:  # the upload URL itself is the credential, as upstream
            return True
        key = self.headers.get("x-goog-api-key") or parse_qs(urlparse(self.path).query).get("key", [None])[0]
        if key == API_KEY:
            return True
        self._body()
        self._log("unauthorized", 401)
        self._send(401, _error(401, "API key not valid. Please pass a valid API key."))
        return False

    # -- routing -------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        path = urlparse(self.path).path
        if path.startswith("/upload/"):
            return self._upload()
        m = re.fullmatch(r"/(v\w+)/models/([^:]+):generateContent", path)
        if m:
            return self._generate(m.group(2))
        m = re.fullmatch(r"/(v\w+)/models/([^:]+):batchGenerateContent", path)
        if m:
            return self._batch_create(m.group(2))
        m = re.fullmatch(r"/(v\w+)/batches/([^:]+):cancel", path)
        if m:
            return self._batch_cancel(m.group(2))
        self._body()
        self._log("unknown", 404)
        self._send(404, _error(404, f"no route for POST {path}"))

    def do_GET(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        path = urlparse(self.path).path
        m = re.fullmatch(r"/(v\w+)/files/([a-z0-9]+)", path)
        if m:
            return self._file_get(m.group(2))
        m = re.fullmatch(r"/(v\w+)/batches/([^/:]+)", path)
        if m:
            return self._batch_get(m.group(2))
        self._log("unknown", 404)
        self._send(404, _error(404, f"no route for GET {path}"))

    def do_DELETE(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        path = urlparse(self.path).path
        m = re.fullmatch(r"/(v\w+)/files/([a-z0-9]+)", path)
        if m:
            with self.fake.lock:
                gone = self.fake.files.pop(m.group(2), None)
            self._log("files.delete", 200 if gone else 403, file=m.group(2))
            return self._send(200 if gone else 403, {} if gone else _error(403, "no such file"))
        m = re.fullmatch(r"/(v\w+)/batches/([^/:]+)", path)
        if m:
            with self.fake.lock:
                self.fake.batches.pop(m.group(2), None)
            self._log("batch.delete", 200, batch=m.group(2))
            return self._send(200, {})
        self._log("unknown", 404)
        self._send(404, _error(404, f"no route for DELETE {path}"))

    # -- files ---------------------------------------------------------------------------
    def _upload(self) -> None:
        fake = self.fake
        q = parse_qs(urlparse(self.path).query)
        command = (self.headers.get("X-Goog-Upload-Command") or "").replace(" ", "")
        body = self._body()
        if command == "start":
            inj = fake._injected("upload", None)
            if inj is not None:
                self._log("upload.start", inj.status)
                return self._send(inj.status, _error(inj.status, inj.message))
            meta = (json.loads(body or b"{}").get("file") or {})
            # the SDK sends this object's keys snake_case (display_name, mime_type)
            meta = {_camel(k): v for k, v in meta.items()}
            uid = uuid.uuid4().hex
            with fake.lock:
                fake.uploads[uid] = {"meta": meta, "data": bytearray(),
                                     "size": int(self.headers.get("X-Goog-Upload-Header-Content-Length") or 0),
                                     "mime": self.headers.get("X-Goog-Upload-Header-Content-Type")}
            self._log("upload.start", 200, display_name=meta.get("displayName"))
            return self._send(200, {}, {
                "X-Goog-Upload-URL": f"{fake.url}/upload/v1beta/files?upload_id={uid}",
                "X-Goog-Upload-Status": "active"})
        uid = q.get("upload_id", [""])[0]
        with fake.lock:
            up = fake.uploads.get(uid)
        if up is None:
            self._log("upload.chunk", 404)
            return self._send(404, _error(404, "unknown upload"), {"X-Goog-Upload-Status": "final"})
        offset = int(self.headers.get("X-Goog-Upload-Offset") or 0)
        if offset != len(up["data"]):
            self._log("upload.chunk", 400)
            return self._send(400, _error(400, f"offset {offset} != {len(up['data'])}"),
                              {"X-Goog-Upload-Status": "final"})
        up["data"] += body
        if "finalize" not in command:
            self._log("upload.chunk", 200, bytes=len(body))
            return self._send(200, {}, {"X-Goog-Upload-Status": "active"})
        fid = uuid.uuid4().hex[:12]
        data = bytes(up["data"])
        meta = up["meta"]
        f = {"name": f"files/{fid}", "displayName": meta.get("displayName", ""),
             "mimeType": up["mime"] or meta.get("mimeType"), "sizeBytes": str(len(data)),
             "createTime": _now_iso(), "updateTime": _now_iso(),
             "expirationTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z",
                                             time.gmtime(time.time() + fake.file_ttl_s)),
             "sha256Hash": base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode(),
             "uri": f"{fake.url}/v1beta/files/{fid}", "state": "PROCESSING",
             "source": "UPLOADED"}
        with fake.lock:
            fake.files[fid] = f
            fake.file_polls[fid] = 0
            fake.uploads.pop(uid, None)
        self._log("upload.finalize", 200, file=fid, sha256=hashlib.sha256(data).hexdigest(),
                  display_name=f["displayName"])
        self._send(200, {"file": f}, {"X-Goog-Upload-Status": "final"})

    def _file_get(self, fid: str) -> None:
        fake = self.fake
        inj = fake._injected("files.get", None)
        if inj is not None:
            self._log("files.get", inj.status, file=fid)
            return self._send(inj.status, _error(inj.status, inj.message))
        with fake.lock:
            f = fake.files.get(fid)
            if f is not None and f["state"] == "PROCESSING":
                fake.file_polls[fid] += 1
                if fake.file_polls[fid] > fake.processing_polls:
                    failing = f["displayName"] in fake.failing_media
                    f["state"] = "FAILED" if failing else "ACTIVE"
                    if failing:
                        f["error"] = {"code": 400, "message": "video could not be processed"}
            snapshot = dict(f) if f is not None else None
        if snapshot is None:
            self._log("files.get", 403, file=fid)
            return self._send(403, _error(403, f"You do not have permission to access the"
                                          f" File {fid} or it may not exist."))
        self._log("files.get", 200, file=fid, state=snapshot["state"])
        self._send(200, snapshot)

    # -- generate ------------------------------------------------------------------------
    def _generate(self, model: str) -> None:
        body = json.loads(self._body() or b"{}")
        prompt, uris = _prompt_and_files(body)
        delay = self.fake.model_latency.get(model, self.fake.latency_s)
        t0 = time.monotonic()
        if delay:
            time.sleep(delay)
        status, payload = self.fake.answer(model, body)
        gen = body.get("generationConfig") or {}
        self._log("generate", status, model=model, key=prompt.strip().splitlines()[0]
                  if prompt.strip() else "", prompt=prompt, files=uris, t0=t0,
                  schema=bool(gen.get("responseSchema") or gen.get("responseJsonSchema")),
                  generation_config=gen, system=body.get("systemInstruction"))
        self._send(status, payload)

    # -- batches -------------------------------------------------------------------------
    def _batch_create(self, model: str) -> None:
        fake = self.fake
        body = json.loads(self._body() or b"{}")
        inj = fake._injected("batch.create", model)
        if inj is not None:
            self._log("batch.create", inj.status, model=model)
            return self._send(inj.status, _error(inj.status, inj.message))
        batch = body.get("batch") or {}
        items = ((batch.get("inputConfig") or {}).get("requests") or {}).get("requests") or []
        bid = uuid.uuid4().hex[:10]
        rec = {"name": f"batches/{bid}", "model": f"models/{model}", "items": items,
               "displayName": batch.get("displayName", ""), "polls": 0,
               "state": "BATCH_STATE_PENDING", "createTime": _now_iso(), "output": None}
        with fake.lock:
            fake.batches[bid] = rec
        self._log("batch.create", 200, model=model, batch=bid, n=len(items),
                  keys=[(it.get("metadata") or {}).get("key") for it in items],
                  prompts=[_prompt_and_files(it.get("request") or {})[0] for it in items])
        self._send(200, self._batch_json(rec))

    def _batch_json(self, rec: dict[str, Any]) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "model": rec["model"], "displayName": rec["displayName"], "state": rec["state"],
            "createTime": rec["createTime"], "updateTime": _now_iso(), "name": rec["name"],
            "batchStats": {"requestCount": str(len(rec["items"]))}}
        if rec["output"] is not None:
            meta["output"] = rec["output"]
            meta["endTime"] = _now_iso()
        out: dict[str, Any] = {"name": rec["name"], "metadata": meta}
        if rec["state"] in ("BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED"):
            out["done"] = True
        return out

    def _batch_get(self, bid: str) -> None:
        fake = self.fake
        with fake.lock:
            rec = fake.batches.get(bid)
        if rec is None:
            self._log("batch.get", 404, batch=bid)
            return self._send(404, _error(404, f"batch {bid} not found"))
        run_now = False
        with fake.lock:
            if rec["state"] in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
                rec["polls"] += 1
                if rec["polls"] >= fake.batch_polls:
                    run_now = True
                    rec["state"] = "BATCH_STATE_RUNNING"
                else:
                    rec["state"] = "BATCH_STATE_RUNNING" if rec["polls"] > 0 else rec["state"]
        if run_now:
            model = rec["model"].split("/", 1)[1]
            responses = []
            for it in rec["items"]:
                status, payload = fake.answer(model, it.get("request") or {})
                r: dict[str, Any] = {}
                if status == 200:
                    r["response"] = payload
                else:
                    r["error"] = payload["error"]
                if fake.batch_echo_metadata and it.get("metadata"):
                    r["metadata"] = it["metadata"]
                responses.append(r)
            with fake.lock:
                rec["output"] = {"inlinedResponses": {"inlinedResponses": responses}}
                rec["state"] = "BATCH_STATE_SUCCEEDED"
        self._log("batch.get", 200, batch=bid, state=rec["state"])
        self._send(200, self._batch_json(rec))

    def _batch_cancel(self, bid: str) -> None:
        self._body()
        with self.fake.lock:
            rec = self.fake.batches.get(bid)
            if rec is not None and rec["state"] in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
                rec["state"] = "BATCH_STATE_CANCELLED"
        self._log("batch.cancel", 200 if rec else 404, batch=bid)
        self._send(200 if rec else 404, {} if rec else _error(404, "no such batch"))


def engine_settings(url: str, **kw: Any) -> dict[str, Any]:
    """GeminiSettings kwargs for tests: the fake's URL, tiny delays, generous rates."""
    base: dict[str, Any] = {
        "base_url": url, "api_version": "v1beta", "default_rpm": 60_000, "burst": 100,
        "poll_initial_s": 0.01, "poll_max_s": 0.05,
        "retry": {"max_attempts": 4, "initial_s": 0.01, "max_s": 0.05, "jitter_s": 0.0}}
    base.update(kw)
    return base
