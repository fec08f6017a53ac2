"""`wb.grid.submit(media=[...], prompts=[...], models=[...], judge=...)` → a GridJob.

Everything is checked before anything is queued: media files exist and have a type the
models can take (an audio track when a text-only model needs a transcript), prompts are
non-empty, model specs parse and their parameters are valid, the Gemini key is in the
environment when Gemini is used. Problems are listed together, each with its entry and
reason; nothing is queued unless all is well. Media are then stored content-addressed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from workbench.engines.gemini_client import api_key_from_env
from workbench.errors import InvalidInput
from workbench.grid import tables
from workbench.grid.inputs import (
    MediaInput,
    as_list,
    cells,
    check_media,
    media_entries,
    prompt_entries,
    warnings_for,
)
from workbench.grid.report import write_report
from workbench.grid.results import comparisons, results_frame, score_table, summaries_frame
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
from workbench.runtime.jobs import Bench, Job, job_labels
from workbench.store.media import store_media


class GridWarning(UserWarning):
    """A grid input that is legal but probably not meant (kept in `job.warnings`)."""


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

    def summaries(self) -> pd.DataFrame:
        """One row per cell: the judge's overall summary, its best model and score."""
        return summaries_frame(self.comparisons())

    @property
    def warnings(self) -> list[str]:
        """What the submission warned about (duplicate prompts, a judge that competes)."""
        return list(self.info.metrics.get("warnings", []))

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

    def submit(self, media: Sequence[MediaInput] | MediaInput = (),
               prompts: Sequence[str] | dict[str, str] | str = (),
               models: Sequence[str | dict[str, Any] | ModelSpec] | str | dict[str, Any] | ModelSpec = (),
               judge: str | dict[str, Any] | ModelSpec | None = None, *,
               pairs: Sequence[tuple[Any, Any]] | None = None, mode: str = "realtime",
               name: str | None = None, tags: str | list[str] | None = None,
               **settings: Any) -> GridJob:
        """Queue a comparison grid; returns at once (a worker runs it).

        - `media`: paths, or dicts {"path", "mime_type", "name"} (one path alone is one media).
        - `prompts`: texts (one string is one prompt; each is labelled by its first words),
          or {label: text}.
        - `pairs`: explicit (media, prompt) cells instead of every media × every prompt;
          each side is an index, a media path/name or a prompt label/text.
        - `models`: at most `max_models` (default 4) of "gemini-2.5-flash", "vllm:/path",
          "openai:NAME@URL" or dicts (see `ModelSpec`); `judge` likewise (None: no
          evaluation). Local (vLLM) models take turns on the device (phase lock).
        - `mode`: "realtime" or "batch" (Gemini Batch API, half the price, slower).
        - `settings`: see `GridSettings` (max_in_flight, max_cells_in_flight, default_rpm,
          judge_retries, max_models, local_isolation, system, gemini={base_url, ...}, ...).

        Suspicious but legal inputs (the same prompt twice, a judge that also competes)
        raise a `GridWarning` and are kept in `job.warnings`.
        """
        labels = job_labels(name, tags)  # the dashboard's label for the job
        problems: list[tuple[str | None, str, str]] = []
        if mode not in ("realtime", "batch"):
            problems.append(("mode", "", f"{mode!r} is not 'realtime' or 'batch'"))
        try:
            grid_settings = GridSettings(**settings)
        except ValidationError as e:
            grid_settings = GridSettings()
            problems.append(("settings", "", _short(e)))
        model_specs, judge_spec, model_issues = model_problems(
            as_list(models), judge, grid_settings.max_models)
        problems += model_issues
        all_models = model_specs + ([judge_spec] if judge_spec else [])
        media_items, media_issues = media_entries(as_list(media), pairs)
        problems += media_issues
        prompt_items, prompt_issues = prompt_entries(prompts, pairs)
        problems += prompt_issues
        cell_list, cell_issues = cells(media_items, prompt_items, pairs)
        problems += cell_issues
        needs_media = any(m.sees_media for m in all_models)
        needs_audio = any(m.text_only for m in all_models)
        for item in media_items:
            problems += check_media(item, needs_media, needs_audio)
        if any(m.provider == "gemini" for m in all_models) and not api_key_from_env():
            problems.append(("environment", "", "Gemini models need GEMINI_API_KEY or"
                             " GOOGLE_API_KEY set (keys are read from the environment only)"))
        if mode == "batch" and not any(m.provider == "gemini" for m in all_models):
            problems.append(("mode", "", "mode='batch' uses the Gemini Batch API: no Gemini"
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
                               for i, (mi, pi) in enumerate(cell_list)],
                        models=model_specs, judge=judge_spec, mode=mode,  # type: ignore[arg-type]
                        settings=grid_settings)
        notes = warnings_for(prompt_items, model_specs, judge_spec)
        job_id = self.wb.store.create_job("grid", spec.model_dump(mode="json"),
                                          total=len(cell_list), **labels)
        if notes:
            self.wb.store.update(job_id, metrics={"warnings": notes})
            for note in notes:
                self.wb.store.add_event(job_id, "warning", {"message": note})
                warnings.warn(GridWarning(note), stacklevel=2)
        return GridJob(self.wb, job_id)
