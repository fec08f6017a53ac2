"""Names and tags for jobs: given at submit, stored in the jobs table, shown and filterable.

Also: a store made before names existed gains the columns on open (migration 2) and its
jobs read back with no name and no tags.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from workbench import Workbench
from workbench.runtime.jobs import job_labels
from workbench.store import Store
from workbench.store.schema import MIGRATIONS


def _frame(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"who": [f"c{i}" for i in range(n)], "q": [f"q{i}" for i in range(n)]})


def _text(widget: object) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", widget.value))  # type: ignore[attr-defined]


def test_batch_submit_stores_name_and_tags_and_jobs_filters(wb: Workbench) -> None:
    a = wb.batch.submit(_frame(), model="/models/m", prompt="{q}", name="nightly  scoring",
                        tags=["demo", "cv", "demo"])
    b = wb.batch.submit(_frame(), model="/models/m", prompt="{q}", tags="cv")
    c = wb.batch.submit(_frame(), model="/models/m", prompt="{q}")
    assert (a.name, a.tags) == ("nightly scoring", ["demo", "cv"])  # spaces folded, no dupes
    assert (b.name, b.tags) == (None, ["cv"]) and (c.name, c.tags) == (None, [])
    assert "'nightly scoring'" in repr(a)
    assert list(wb.jobs(tag="cv")["id"]) == [a.id, b.id]
    assert list(wb.jobs(name="nightly scoring")["id"]) == [a.id]
    assert wb.jobs(tag="nope").empty
    df = wb.jobs()
    assert list(df.columns[:3]) == ["id", "name", "tags"] and df["tags"].iloc[0] == ["demo", "cv"]


@pytest.mark.parametrize(("name", "tags", "message"), [
    ("", None, "name must be a non-empty string"),
    ("x" * 201, None, "at most 200"),
    (None, ["ok", ""], "each tag must be a non-empty string"),
    (None, [3], "each tag must be a non-empty string"),
    (None, ["t" * 65], "at most 64"),
])
def test_bad_labels_are_refused_before_anything_is_queued(wb: Workbench, name: str | None,
                                                          tags: list[object] | None,
                                                          message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wb.batch.submit(_frame(), model="/models/m", prompt="{q}", name=name, tags=tags)  # type: ignore[arg-type]
    assert wb.store.list_jobs() == []


def test_job_labels_accepts_one_tag_or_many() -> None:
    assert job_labels() == {"name": None, "tags": []}
    assert job_labels("a", "b") == {"name": "a", "tags": ["b"]}
    assert job_labels(None, (" x ", "y", "x")) == {"name": None, "tags": ["x", "y"]}


def test_grid_submit_takes_name_and_tags(wb: Workbench, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")  # submit only checks it is set
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"\x00\x01video-" * 100)
    job = wb.grid.submit(media=[clip], prompts=["Summarise"], models=["gemini-a"],
                         name="museum grid", tags=["grid-demo"])
    assert (job.name, job.tags) == ("museum grid", ["grid-demo"])
    with pytest.raises(ValueError, match="name must be"):
        wb.grid.submit(media=[clip], prompts=["Summarise"], models=["gemini-a"], name=" ")
    assert len(wb.jobs(kind="grid")) == 1


def test_dashboard_shows_names_and_filters_by_name_tag_and_text(wb: Workbench) -> None:
    a = wb.batch.submit(_frame(), model="/models/m", prompt="{q}", name="alpha run", tags=["x"])
    b = wb.batch.submit(_frame(), model="/models/m", prompt="{q}", name="beta run", tags=["y"])
    dash = wb.dashboard(interval=None)
    assert dash.job_ids == [b.id, a.id]
    title = _text(dash.view(a.id).title)
    assert "alpha run" in title and a.id in title and "x" in title.split(a.id)[1]
    assert "wb-tag" in dash.view(a.id).title.value
    dash.filter.value = "beta"  # typing in the filter box refreshes at once
    assert dash.job_ids == [b.id] and "filter “beta”" in dash.header.value
    dash.filter.value = "run x"  # every word must match (name, tags, id, kind)
    assert dash.job_ids == [a.id]
    dash.filter.value = ""
    assert dash.job_ids == [b.id, a.id]
    assert wb.dashboard(interval=None, tag="y").job_ids == [b.id]
    assert wb.dashboard(interval=None, name="alpha run").job_ids == [a.id]


def test_a_store_from_before_names_is_migrated(tmp_path: Path) -> None:
    root = tmp_path / "old"
    root.mkdir()
    db = sqlite3.connect(root / "workbench.db")
    for stmt in MIGRATIONS[0].split(";"):
        if stmt.strip():
            db.execute(stmt)
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO jobs (id, kind, status, spec, total, created_at, updated_at)"
               " VALUES ('batch_old', 'batch', 'completed', '{}', 3, 1, 1)")
    db.commit()
    db.close()
    store = Store(root)
    assert store.schema_version == len(MIGRATIONS)
    old = store.get("batch_old")
    assert (old.name, old.tags) == (None, [])
    new = store.create_job("batch", {}, total=1, name="fresh", tags=["t"])
    assert [r.id for r in store.list_jobs(tag="t")] == [new]
    raw = store.conn.execute("SELECT tags FROM jobs WHERE id=?", (new,)).fetchone()[0]
    assert json.loads(raw) == ["t"]
