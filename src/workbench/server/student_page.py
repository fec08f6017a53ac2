"""A student's own page, `GET /s/<token>`: plain server-rendered HTML, readable on a phone.

The token (`phased.links`) is the whole credential, so the page is built to keep it and
the student's data where they belong:

- every value shown is escaped here (`html.escape`), and a Content-Security-Policy
  allows only this page's own script and style (by hash): a transcript or model feedback
  holding `<script>` or `<img onerror=...>` shows as text and could not run anyway;
- `Referrer-Policy: no-referrer` (+ the meta tag): links out never carry the token;
  `X-Robots-Tag: noindex` (+ meta robots) and `Cache-Control: no-store`;
- a wrong, malformed or revoked token is a plain "not found" (404), whatever its shape;
- nothing of another student is shown (`phased.student`).

It refreshes itself every 2 s: a few lines of script fetch the JSON twin
(`GET /s/<token>.json`, the same view as data plus the escaped fragment) and swap it in;
without script, a meta refresh does it. Refreshing stops once the result is there.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from workbench.api import Workbench
from workbench.errors import WorkbenchError
from workbench.phased.links import find
from workbench.phased.student import StudentView, student_view

log = logging.getLogger("workbench.server")

STEPS = ("waiting", "transcribing", "evaluating", "done")
RANK = {"waiting": 0, "transcribing": 1, "transcribed": 1, "evaluating": 2, "done": 3}

SCRIPT = """(function () {
  var main = document.getElementById("main"), live = document.getElementById("live");
  var url = location.pathname + ".json", last = main.innerHTML;
  function again() { setTimeout(tick, 2000); }
  function tick() {
    fetch(url, {cache: "no-store", credentials: "omit"}).then(function (r) {
      if (r.status === 404) { main.textContent = "not found"; live.textContent = ""; return; }
      if (!r.ok) { throw new Error(r.status); }
      return r.json().then(function (d) {
        if (d.html !== last) { main.innerHTML = d.html; last = d.html; }
        live.textContent = d.final ? "" : "updated " + new Date().toLocaleTimeString();
        if (!d.final) { again(); }
      });
    }).catch(function () { live.textContent = "connection lost, retrying"; again(); });
  }
  if (main.dataset.final !== "1") { again(); }
})();"""

STYLE = """body{font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:#f6f7f9;color:#1d2430}
.wrap{max-width:40rem;margin:0 auto;padding:1rem}
.file{color:#5a6473;font-size:.9rem;margin:0 0 .75rem;overflow-wrap:anywhere}
ol.steps{display:flex;gap:.25rem;list-style:none;padding:0;margin:0 0 1rem}
ol.steps li{flex:1;min-width:0;text-align:center;font-size:.75rem;padding:.35rem .15rem;border-radius:.3rem;overflow-wrap:anywhere;
background:#e3e6eb;color:#5a6473}
ol.steps li.past{background:#cfe8d6;color:#1e5a32}
ol.steps li.now{background:#2f6fde;color:#fff;font-weight:600}
h1{font-size:1.35rem;margin:.25rem 0 .5rem}
.details{margin:0 0 .5rem}
.details span+span::before{content:" · ";color:#8a93a0}
.step,.basis{color:#5a6473;font-size:.9rem;margin:.25rem 0}
.failed h1,.stopped h1{color:#a4262c}
.result h2{font-size:1.05rem;margin:1.25rem 0 .4rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #e3e6eb;overflow-wrap:anywhere}
td.num{text-align:right;white-space:nowrap}
tr.overall th,tr.overall td{font-weight:700}
.feedback,.transcript{background:#fff;padding:.6rem .75rem;border-radius:.3rem;
white-space:pre-wrap;overflow-wrap:anywhere;margin:0}
.live{color:#8a93a0;font-size:.8rem;margin-top:1.5rem}"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (f"default-src 'none'; script-src {_sha256(SCRIPT)}; style-src {_sha256(STYLE)};"
       " connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none';"
       " frame-ancestors 'none'")
#: sent with every answer under /s/, found or not
PRIVATE = {"Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex, nofollow",
           "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
           "X-Frame-Options": "DENY"}


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fragment(v: StudentView) -> str:
    """The page's <main> content; every value escaped."""
    rank = RANK.get(v.state)
    steps = []
    for i, name in enumerate(STEPS):
        cls = "todo" if rank is None or i > rank else "now" if i == rank else "past"
        steps.append(f'<li class="{cls}">{name}</li>')
    out = [f'<div class="{e(v.state)}"><p class="file">your recording: {e(v.file)}</p>',
           f'<ol class="steps">{"".join(steps)}</ol>', f"<h1>{e(v.headline)}</h1>",
           '<p class="details">' + "".join(f"<span>{e(d)}</span>" for d in v.details) + "</p>"]
    if v.step:
        out.append(f'<p class="step">now: {e(v.step)}</p>')
    if v.eta_basis:
        out.append(f'<p class="basis">estimate: {e(v.eta_basis)}</p>')
    if v.result is not None:
        r = v.result
        rows = "".join(f'<tr><th>{e(s.criterion)}</th><td class="num">'
                       f'{e("–" if s.score is None else s.score)}/{e(s.max_score)}</td></tr>'
                       for s in r.scores)
        rows += (f'<tr class="overall"><th>overall</th><td class="num">'
                 f'{e("–" if r.overall is None else r.overall)}/{e(r.overall_max)}</td></tr>')
        out.append(f'<section class="result"><h2>Scores</h2><table>{rows}</table>'
                   f'<h2>Feedback</h2><p class="feedback">{e(r.feedback or "")}</p>'
                   f'<h2>Transcript</h2><p class="transcript">{e(r.transcript)}</p></section>')
    out.append("</div>")
    return "".join(out)


def page(v: StudentView) -> str:
    refresh = "" if v.final else '<noscript><meta http-equiv="refresh" content="2"></noscript>'
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="robots" content="noindex, nofollow">'
            '<meta name="referrer" content="no-referrer">'
            f"<title>your recording · {e(v.headline)}</title><style>{STYLE}</style>{refresh}"
            f'</head><body><div class="wrap"><main id="main" aria-live="polite" '
            f'data-final="{1 if v.final else 0}">{fragment(v)}</main>'
            '<p id="live" class="live"></p></div>'
            f"<script>{SCRIPT}</script></body></html>")


def not_found() -> Response:
    return PlainTextResponse("not found", status_code=404, headers=PRIVATE)


def student_router(wb: Workbench) -> APIRouter:
    """`GET /s/{token}` (HTML) and `GET /s/{token}.json` (the same view as data)."""
    r = APIRouter(include_in_schema=False)

    def view(token: str) -> StudentView | None:
        found = find(wb.store, token)
        if found is None:
            return None
        try:
            return student_view(wb.phased.job(found[0]), found[1])
        except (WorkbenchError, LookupError):  # its job was removed under it
            return None

    @r.get("/s/{token}.json")
    def student_json(token: str) -> Response:
        v = view(token)
        if v is None:
            return not_found()
        body = {**v.model_dump(mode="json"), "line": v.line, "html": fragment(v)}
        return JSONResponse(body, headers=PRIVATE)

    @r.get("/s/{token}")
    def student_page(token: str) -> Response:
        v = view(token)
        if v is None:
            return not_found()
        return HTMLResponse(page(v), headers={**PRIVATE, "Content-Security-Policy": CSP})

    return r
