"""Each student's own page, `GET /s/<token>`: links, the words per state, escaping, headers,
revocation, and 10,000 random tokens that all find nothing.

A phased job runs with the inline test doubles (a transcriber whose transcript holds
`<script>` and `<img onerror=...>`, the scripted judge): the pipeline is the real one, only
the models are doubles. The real-browser run with the real models is tests/test_browser_student.py.
"""

from __future__ import annotations

import asyncio
import random
import string
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_wb
from tests.speech import SENTENCES, speak
from workbench import Workbench
from workbench.media import sha256_file
from workbench.phased.api import PhasedJob
from workbench.phased.items import Items
from workbench.phased.links import TOKEN_RE, find
from workbench.phased.student import student_view
from workbench.server import create_app
from workbench.store import Store

EVIL = '<script>alert("t")</script><img src=x onerror="alert(1)"> & "quotes"'
RUBRIC = {"criteria": [{"name": "accuracy", "description": "facts are right", "max_score": 5},
                       {"name": "clarity", "description": "easy to follow", "max_score": 4}],
          "question": "Explain one fact of nature."}
DOUBLES = "tests.phased_doubles"


def _path(link: str | None) -> str:
    assert link is not None and "/s/" in link, link
    return "/s/" + link.split("/s/", 1)[1]


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workbench, PhasedJob]]:
    """A finished 3-student job: 'mal' said EVIL, the others plain sentences."""
    d = tmp_path_factory.mktemp("student")
    clips = [speak(s, d / f"c{i}.wav") for i, s in enumerate(SENTENCES[:3])]
    wb = make_wb(d / "wb")
    texts = {sha256_file(clips[0]): EVIL, sha256_file(clips[1]): "the moon moves around us",
             sha256_file(clips[2]): "rivers carry sand to the sea"}
    job = wb.phased.submit({"mal": clips[0], "ben": clips[1], "<b>cara</b>": clips[2]},
                           rubric=RUBRIC, batch_size=2,
                           stt={"engine": f"{DOUBLES}:SlowTranscriber", "isolation": "inline",
                                "options": {"delay_s": 0.0, "texts": texts}},
                           llm={"model": "judge", "engine": f"{DOUBLES}:ScriptedJudge",
                                "isolation": "inline"})
    wb.start_worker()
    job.wait(timeout=120, progress=False, poll_s=0.05)
    assert job.status == "completed", job.info
    yield wb, job
    wb.stop_workers()


def test_every_item_has_its_own_unguessable_link_in_the_tables(
        done: tuple[Workbench, PhasedJob], monkeypatch: pytest.MonkeyPatch) -> None:
    wb, job = done
    rows = Items(wb.store).all(job.id)
    tokens = [r.link for r in rows]
    assert len(set(tokens)) == 3 and all(t and TOKEN_RE.fullmatch(t) for t in tokens)
    assert all(len(t) == 32 for t in tokens)  # 24 random bytes = 192 bits
    items = job.items().set_index("item_id")
    results = job.results().set_index("item_id")
    for r in rows:
        assert items.loc[r.item_id, "link"] == results.loc[r.item_id, "link"] == \
            job.item(r.item_id).link == f"http://127.0.0.1:4080/s/{r.link}"
        assert find(wb.store, r.link) == (job.id, r.item_id)
    monkeypatch.setenv("WORKBENCH_PUBLIC_URL", "https://lab.example.org/")
    assert job.item("ben").link == f"https://lab.example.org/s/{rows[1].link}"


def test_the_done_page_shows_the_result_escaped_with_private_headers(
        done: tuple[Workbench, PhasedJob]) -> None:
    wb, job = done
    client = TestClient(create_app(wb))
    r = client.get(_path(job.item("mal").link))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-robots-tag"] == "noindex, nofollow"
    assert r.headers["cache-control"] == "no-store"
    csp = r.headers["content-security-policy"]
    assert "script-src 'sha256-" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    page = r.text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert '<meta name="robots" content="noindex, nofollow">' in page
    assert '<meta name="referrer" content="no-referrer">' in page
    # the transcript is text: escaped, never markup
    assert "&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt;&lt;img src=x onerror=" in page
    assert "<img" not in page and page.count("<script>") == 1  # only the page's own script
    assert "&amp; &quot;quotes&quot;" in page
    v = student_view(job, "mal")
    assert v.state == "done" and v.final and v.result is not None
    assert v.result.transcript == EVIL
    assert [(s.criterion, s.max_score) for s in v.result.scores] == [("accuracy", 5), ("clarity", 4)]
    assert f"overall {v.result.overall}/10" in page and "accuracy" in page and "Transcript" in page
    assert v.result.feedback and v.result.feedback in page
    # nothing of the other students
    for other in ("ben", "cara", "the moon moves", "rivers carry sand", "c1.wav", "c2.wav"):
        assert other not in page, other
    # a hostile item id / file name is escaped on its own page too
    cara = client.get(_path(job.item("<b>cara</b>").link)).text
    assert "rivers carry sand" in cara and "<b>cara" not in cara

    twin = client.get(_path(job.item("mal").link) + ".json")
    assert twin.status_code == 200 and twin.headers["referrer-policy"] == "no-referrer"
    body = twin.json()
    assert body["state"] == "done" and body["final"] is True
    assert body["result"]["transcript"] == EVIL and "&lt;script&gt;" in body["html"]
    assert body["line"] == f"done · overall {v.result.overall}/10"


def test_waiting_page_says_place_batch_and_wait_in_the_labs_words(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    clip = speak(SENTENCES[4], tmp_path / "a.wav")
    job = wb.phased.submit({f"s{i}": clip for i in range(3)}, rubric=RUBRIC, batch_size=2,
                           llm={"model": "judge", "engine": f"{DOUBLES}:ScriptedJudge"})
    v = student_view(job, "s2")  # no worker: everyone waits
    assert v.state == "waiting" and not v.final
    assert v.details[0] == "your position: batch 2, student 1/2"
    assert v.details[1] == "2 ahead of you"
    assert v.details[2].startswith("estimated wait ") and v.eta_basis == "default guess"
    assert v.line.startswith("waiting · your position: batch 2, student 1/2 · 2 ahead of you")
    page = TestClient(create_app(wb)).get(_path(job.item("s2").link))
    assert page.status_code == 200 and "your position: batch 2, student 1/2" in page.text
    assert '<meta http-equiv="refresh" content="2">' in page.text  # the no-script refresh
    assert "s0" not in page.text and "s1" not in page.text
    job.cancel()
    stopped = student_view(job, "s2")
    assert stopped.state == "stopped" and stopped.final
    assert "the lab's job was cancelled" in stopped.details[0]


def test_revoked_and_random_tokens_are_a_plain_not_found(done: tuple[Workbench, PhasedJob]) -> None:
    wb, job = done
    client = TestClient(create_app(wb), raise_server_exceptions=False)
    old = _path(job.item("ben").link)
    assert client.get(old).status_code == 200
    new = job.revoke_link("ben")
    assert new != old and _path(new) != old
    for path in (old, old + ".json"):
        r = client.get(path)
        assert (r.status_code, r.text, r.headers["content-type"]) == (
            404, "not found", "text/plain; charset=utf-8")
        assert r.headers["x-robots-tag"] == "noindex, nofollow"
    assert client.get(_path(new)).status_code == 200

    rng = random.Random(22)
    alphabet = string.ascii_letters + string.digits + "-_"
    shapes = [
        lambda: "".join(rng.choice(alphabet) for _ in range(32)),          # a token's shape
        lambda: "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))),
        lambda: "".join(chr(rng.randint(33, 0x2FFF)) for _ in range(rng.randint(1, 40))),
        lambda: rng.choice(["..", "%2e%2e", "' OR 1=1 --", "%00", "null", "a" * 5000,
                            "<script>", "..%2f..%2fetc%2fpasswd", " ", "%20"]),
    ]
    paths = [f"/s/{_quote(shapes[i % len(shapes)]())}{'.json' if i % 3 == 0 else ''}"
             for i in range(10_000)]
    seen = asyncio.run(_statuses(create_app(wb), paths))
    assert sum(seen.values()) == 10_000 and not [p for p, s in seen if s >= 500]
    assert Counter(s for _, s in seen.elements()) == Counter({404: 10_000}), seen.most_common(5)


async def _statuses(app: object, paths: list[str]) -> Counter[tuple[str, int]]:
    """Every path through the app in one event loop (10,000 requests in seconds)."""
    import httpx

    out: Counter[tuple[str, int]] = Counter()
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for p in paths:
            out[(p[:60], (await c.get(p)).status_code)] += 1
    return out


def _quote(token: str) -> str:
    from urllib.parse import quote

    return quote(token, safe="")


def test_items_from_before_links_get_one_when_the_store_opens(
        done: tuple[Workbench, PhasedJob]) -> None:
    wb, job = done
    wb.store.conn.execute("UPDATE phased_items SET link=NULL WHERE job_id=? AND item_id='ben'",
                          (job.id,))
    fresh = Store(wb.store.root)  # a new process opening an old store
    token = {r.item_id: r.link for r in Items(fresh).all(job.id)}["ben"]
    assert token and TOKEN_RE.fullmatch(token) and find(fresh, token) == (job.id, "ben")
