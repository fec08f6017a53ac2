"""`wb.grid.submit(media=[...], prompts=[...], models=[...], judge=...)` → a GridJob.

Everything is checked before anything is queued: media files exist and have a type the
models can take (an audio track when a text-only model needs a transcript), prompts are
non-empty, model specs parse and their parameters are valid, the Gemini key is in the
environment when Gemini is used. Problems are listed together, each with its entry and
reason; nothing is queued unless all is well. Media are then stored content-addressed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from workbench.engines.gemini_client import api_key_from_env
from workbench.errors import InvalidInput
from workbench.grid import tables
from workbench.grid.report import write_report
from workbench.grid.results import comparisons, results_frame, score_table
from workbench.grid.spec import (
    CellRef,
    GridSettings,
    GridSpec,
    MediaRef,
    ModelSpec,
    PromptRef,
    _short,
    model_problems,
    parse_model,
)
from workbench.media import MEDIA_PREFIXES, guess_mime_type
from workbench.runtime.jobs import Bench, Job, job_labels
from workbench.store.media import store_media

MediaInput = str | os.PathLike[str] | dict[str, Any]


class GridJob(Job):
    """A grid job: results as a DataFrame, a score table, the seed's JSON, an HTML report."""

    def results(self) -> pd.DataFrame:
        """One row per cell × model: score, reasoning, latency, tokens, error."""
        return results_frame(self.wb.store, self.info)

    def scores(self) -> pd.DataFrame:
        """Mean judge score, models × prompts (and 'all')."""
        return score_table(self.results())

    def comparisons(self) -> dict[str, Any]:
        """The seed's structure: {"comparisons": [...], "totals": {...}, ...}."""
        return comparisons(self.wb.store, self.info)

    def calls(self) -> pd.DataFrame:
        """Every model and judge call recorded so far (one row each)."""
        tables.ensure(self.wb.store)
        return pd.DataFrame([r.record() for r in tables.calls(self.wb.store, self.id)],
                            columns=tables.COLUMNS)

    def report(self, path: str | os.PathLike[str] = "grid.html") -> Path:
        """Write the cards (media, prompt, summary, one card per model) as one HTML file."""
        return write_report(self.comparisons(), self.scores(), path)


class GridAPI:
    def __init__(self, wb: Bench) -> None:
        self.wb = wb

    def job(self, job_id: str) -> GridJob:
        self.wb.store.get(job_id)
        return GridJob(self.wb, job_id)

    def suggested_models(self, **local_engine: Any) -> tuple[list[ModelSpec], ModelSpec]:
        """(models, judge) for a first grid: Gemini when a key is set, else local models.

        Without GEMINI_API_KEY/GOOGLE_API_KEY the local default model ($WORKBENCH_MODEL, else
        the embedded one) answers twice (greedy and sampled) from the media's transcript
        and judges; `local_engine` overrides its engine arguments (e.g. max_model_len).
        """
        if api_key_from_env():
            return ([parse_model("gemini-2.5-flash"), parse_model("gemini-2.5-flash-lite")],
                    parse_model("gemini-2.5-pro"))
        from workbench.config import default_model

        name = default_model()
        local = {"provider": "vllm", "name": name, "engine": dict(local_engine)}
        return ([ModelSpec(**local, label="local-greedy",
                           params={"temperature": 0.0, "max_tokens": 128}),
                 ModelSpec(**local, label="local-sampled",
                           params={"temperature": 0.8, "seed": 0, "max_tokens": 128})],
                ModelSpec(**local, label="local-judge",
                          params={"temperature": 0.0, "max_tokens": 1024}))

    def submit(self, media: Sequence[MediaInput] = (), prompts: Sequence[str] | dict[str, str] = (),
               models: Sequence[str | dict[str, Any] | ModelSpec] = (),
               judge: str | dict[str, Any] | ModelSpec | None = None, *,
               pairs: Sequence[tuple[Any, Any]] | None = None, mode: str = "realtime",
               name: str | None = None, tags: str | list[str] | None = None,
               **settings: Any) -> GridJob:
        """Queue a comparison grid; returns at once (a worker runs it).

        - `media`: paths, or dicts {"path", "mime_type", "name"}.
        - `prompts`: texts, or {name: text}.
        - `pairs`: explicit (media, prompt) cells instead of every media × every prompt;
          each side is an index, a media path/name or a prompt name/text.
        - `models`: up to any number of "gemini-2.5-flash", "vllm:/path", "openai:NAME@URL"
          or dicts (see `ModelSpec`); `judge` likewise (None: no evaluation).
        - `mode`: "realtime" or "batch" (Gemini Batch API, half the price, slower).
        - `settings`: see `GridSettings` (max_in_flight, max_cells_in_flight, default_rpm,
          judge_retries, system, gemini={base_url, api_version, retry, ...}, stt_model, ...).
        """
        labels = job_labels(name, tags)  # the dashboard's label for the job
        problems: list[tuple[int, str, str]] = []
        if mode not in ("realtime", "batch"):
            problems.append((0, "mode", f"{mode!r} is not 'realtime' or 'batch'"))
        try:
            grid_settings = GridSettings(**settings)
        except ValidationError as e:
            grid_settings = GridSettings()
            problems.append((0, "settings", _short(e)))
        model_specs, judge_spec, model_issues = model_problems(list(models), judge)
        problems += model_issues
        all_models = model_specs + ([judge_spec] if judge_spec else [])
        media_items, media_issues = _media_entries(list(media), pairs)
        problems += media_issues
        prompt_items, prompt_issues = _prompt_entries(prompts, pairs)
        problems += prompt_issues
        cells, cell_issues = _cells(media_items, prompt_items, pairs)
        problems += cell_issues
        needs_media = any(m.sees_media for m in all_models)
        needs_audio = any(m.text_only for m in all_models)
        for i, item in enumerate(media_items):
            problems += _check_media(i + 1, item, needs_media, needs_audio)
        if any(m.provider == "gemini" for m in all_models) and not api_key_from_env():
            problems.append((0, "environment", "Gemini models need GEMINI_API_KEY or"
                             " GOOGLE_API_KEY set (keys are read from the environment only)"))
        if mode == "batch" and not any(m.provider == "gemini" for m in all_models):
            problems.append((0, "mode", "mode='batch' uses the Gemini Batch API: no Gemini"
                             " model in this grid"))
        if problems:
            raise InvalidInput(problems, source="grid")

        refs = []
        for i, item in enumerate(media_items):
            digest, stored = store_media(self.wb.root, item["path"])
            refs.append(MediaRef(id=f"m{i}", name=item["name"], path=str(stored), sha256=digest,
                                 mime_type=item["mime_type"],
                                 size_bytes=Path(item["path"]).stat().st_size))
        prompt_refs = [PromptRef(id=f"p{i}", name=name, text=text)
                       for i, (name, text) in enumerate(prompt_items)]
        spec = GridSpec(media=refs, prompts=prompt_refs,
                        cells=[CellRef(id=f"c{i}", media=f"m{mi}", prompt=f"p{pi}")
                               for i, (mi, pi) in enumerate(cells)],
                        models=model_specs, judge=judge_spec, mode=mode,  # type: ignore[arg-type]
                        settings=grid_settings)
        job_id = self.wb.store.create_job("grid", spec.model_dump(mode="json"), total=len(cells),
                                          **labels)
        return GridJob(self.wb, job_id)


def _media_entries(media: list[MediaInput], pairs: Sequence[tuple[Any, Any]] | None
                   ) -> tuple[list[dict[str, Any]], list[tuple[int, str, str]]]:
    items: list[dict[str, Any]] = []
    problems: list[tuple[int, str, str]] = []
    raw: list[Any] = list(media)
    if pairs:
        known = {str(Path(x if not isinstance(x, dict) else x.get("path", ""))) for x in raw}
        for m, _ in pairs:
            if not isinstance(m, int) and str(Path(m if not isinstance(m, dict) else
                                                   m.get("path", ""))) not in known:
                raw.append(m)
                known.add(str(Path(m if not isinstance(m, dict) else m.get("path", ""))))
    for i, x in enumerate(raw):
        if isinstance(x, dict):
            if "path" not in x:
                problems.append((i + 1, "media", f"entry {x!r} has no 'path'"))
                continue
            extra = set(x) - {"path", "mime_type", "name"}
            if extra:
                problems.append((i + 1, "media", f"unknown keys {sorted(extra)}"))
            p = Path(x["path"]).expanduser()
            items.append({"path": p, "name": x.get("name") or p.name,
                          "mime_type": x.get("mime_type") or guess_mime_type(p)})
        elif isinstance(x, str | os.PathLike):
            p = Path(x).expanduser()
            items.append({"path": p, "name": p.name, "mime_type": guess_mime_type(p)})
        else:
            problems.append((i + 1, "media", f"{x!r} is not a path or a dict"))
    if not raw:
        problems.append((0, "media", "no media given"))
    names = [it["name"] for it in items]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append((names.index(n) + 1, "media", f"two media are named {n!r}: give one a"
                         " distinct 'name'"))
    return items, problems


def _prompt_entries(prompts: Sequence[str] | dict[str, str],
                    pairs: Sequence[tuple[Any, Any]] | None
                    ) -> tuple[list[tuple[str, str]], list[tuple[int, str, str]]]:
    problems: list[tuple[int, str, str]] = []
    items = (list(prompts.items()) if isinstance(prompts, dict)
             else [(f"prompt {i + 1}", p) for i, p in enumerate(prompts)])
    if pairs:
        known = {n for n, _ in items} | {t for _, t in items}
        for _, p in pairs:
            if isinstance(p, str) and p not in known:
                items.append((f"prompt {len(items) + 1}", p))
                known.add(p)
    for i, (name, text) in enumerate(items):
        if not isinstance(text, str) or not text.strip():
            problems.append((i + 1, "prompts", f"prompt {name!r} is empty or not text"))
    if not items:
        problems.append((0, "prompts", "no prompts given"))
    return items, problems


def _cells(media: list[dict[str, Any]], prompts: list[tuple[str, str]],
           pairs: Sequence[tuple[Any, Any]] | None
           ) -> tuple[list[tuple[int, int]], list[tuple[int, str, str]]]:
    if not pairs:
        return [(mi, pi) for mi in range(len(media)) for pi in range(len(prompts))], []
    problems: list[tuple[int, str, str]] = []
    cells: list[tuple[int, int]] = []
    for i, (m, p) in enumerate(pairs):
        mi = m if isinstance(m, int) else next(
            (j for j, it in enumerate(media)
             if str(it["path"]) == str(Path(m if not isinstance(m, dict) else m["path"]).expanduser())
             or it["name"] == m), None)
        pi = p if isinstance(p, int) else next(
            (j for j, (n, t) in enumerate(prompts) if p in (n, t)), None)
        if mi is None or not 0 <= mi < len(media):
            problems.append((i + 1, "pairs", f"media {m!r} is not one of the media"))
            continue
        if pi is None or not 0 <= pi < len(prompts):
            problems.append((i + 1, "pairs", f"prompt {p!r} is not one of the prompts"))
            continue
        if (mi, pi) in cells:
            problems.append((i + 1, "pairs", f"({m!r}, {p!r}) appears twice"))
            continue
        cells.append((mi, pi))
    return cells, problems


def _check_media(line: int, item: dict[str, Any], needs_media: bool,
                 needs_audio: bool) -> list[tuple[int, str, str]]:
    p: Path = item["path"]
    if not p.is_file():
        return [(line, "media", f"{p}: no such file")]
    problems = []
    if p.stat().st_size == 0:
        problems.append((line, "media", f"{p}: empty file"))
    mime = item["mime_type"]
    if needs_media and mime is None:
        problems.append((line, "media", f"{p}: unknown media type; pass"
                         " {'path': ..., 'mime_type': 'video/mp4'}"))
    elif needs_media and not (mime.startswith(MEDIA_PREFIXES) or mime == "application/pdf"):
        problems.append((line, "media", f"{p}: {mime} is not a video, audio, image, text or"
                         " PDF type that multimodal models take"))
    if needs_audio and not problems:
        from workbench.engines.whisper import MediaError, probe_audio

        try:
            probe_audio(p)
        except MediaError as e:
            problems.append((line, "media", f"text-only models need a transcript: {e}"))
    return problems
