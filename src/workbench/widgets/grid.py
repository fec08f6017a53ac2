"""Comparison grids in widgets: choose media × prompts × models, run, read the cards.

`GridForm` — pick media files, write prompts, list models and a judge; the button says
what will run ("Run 5 × 3 = 15 comparisons"). `GridJobPanel` — the seed's progress line
("Running batch analysis... ████░░ 45% — Processing combinations: 7/15 done"), a models ×
prompts heatmap of the judge's mean scores, and one card per finished comparison.
"""

from __future__ import annotations

import html
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import ipywidgets as w
import pandas as pd

from workbench.errors import WorkbenchError
from workbench.grid.api import GridJob, GridWarning
from workbench.grid.spec import parse_model
from workbench.media import MEDIA_PREFIXES, guess_mime_type
from workbench.store import JobRow
from workbench.widgets import format as fmt
from workbench.widgets.form import SubmitForm
from workbench.widgets.panel import JobPanel
from workbench.widgets.preview import short

if TYPE_CHECKING:
    from workbench.grid.api import GridAPI


class HasGrid(Protocol):
    """What the form needs of a workbench: `wb.grid` (a `Workbench` is one)."""

    @property
    def grid(self) -> GridAPI: ...


def text_bar(percent: float, width: int = 12) -> str:
    """`45` -> `█████░░░░░░░` (the seed's progress line, in characters)."""
    filled = max(0, min(width, round(width * percent / 100)))
    return "█" * filled + "░" * (width - filled)


def score_color(score: float | None, top: float = 10.0) -> str:
    """Red (1) → yellow → green (10); grey when there is no score yet."""
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return "var(--jp-layout-color3, #e0e0e0)"
    t = max(0.0, min(1.0, (score - 1) / (top - 1)))
    hue = 120 * t  # 0 = red, 60 = yellow, 120 = green
    return f"hsl({hue:.0f}, 70%, 72%)"


def heatmap_html(scores: pd.DataFrame) -> str:
    """Models (rows) × prompts (columns) mean scores as a coloured HTML table."""
    if scores.empty:
        return "<i>no scores yet</i>"
    head = "".join(f"<th style='padding:3px 10px;text-align:center'>{html.escape(str(c))}</th>"
                   for c in scores.columns)
    body = []
    for model, row in scores.iterrows():
        cells = []
        for c in scores.columns:
            v = row[c]
            known = v is not None and not (isinstance(v, float) and math.isnan(v))
            text = f"{v:.1f}" if known else "—"
            weight = "font-weight:600;" if c == "all" else ""
            cells.append(f"<td style='background:{score_color(v if known else None)};"
                         f"color:{'#1b1b1b' if known else fmt.TEXT};{weight}text-align:center;"
                         f"padding:3px 10px'>{text}</td>")
        body.append(f"<tr><th style='text-align:left;padding:3px 10px'>"
                    f"{html.escape(str(model))}</th>{''.join(cells)}</tr>")
    return (f"<table class='wb-heatmap' style='border-collapse:collapse;font-size:13px'>"
            f"<caption style='caption-side:top;text-align:left;color:{fmt.MUTED};font-size:12px'>"
            f"mean judge score (1–10): models × prompts</caption>"
            f"<tr><th></th>{head}</tr>{''.join(body)}</table>")


def _phrases(v: Any) -> str:
    items = v if isinstance(v, list) else ([v] if v else [])
    return "; ".join(short(str(x), 60) for x in items)


def card_html(comp: dict[str, Any]) -> str:
    """One comparison: media, prompt, the judge's summary, a mini-card per model."""
    ev = comp.get("evaluation") or {}
    models = []
    for label, res in (comp.get("results") or {}).items():
        e = ev.get(label) or {}
        score = e.get("score")
        pill = (f"<span style='background:{score_color(score)};color:#1b1b1b;border-radius:8px;"
                f"padding:1px 8px;font-weight:600'>{score}</span>" if score is not None
                else "<span style='color:{fmt.MUTED}'>not scored</span>")
        if res.get("status") == "error":
            body = f"<div style='color:{fmt.ERROR}'>error: {html.escape(short(res.get('error'), 160))}</div>"
        else:
            body = f"<div>{html.escape(short(res.get('response') or '', 260))}</div>"
        detail = ""
        if e:
            detail = (f"<div style='color:{fmt.MUTED}'><i>{html.escape(short(e.get('reasoning'), 200))}"
                      f"</i></div><div style='color:{fmt.SUCCESS}'>+ {html.escape(_phrases(e.get('strengths')))}"
                      f"</div><div style='color:{fmt.WARN}'>− {html.escape(_phrases(e.get('weaknesses')))}"
                      f"</div>")
        models.append(f"<div class='wb-model-card' style='flex:1 1 220px;border:1px solid {fmt.BORDER};"
                      f"border-radius:6px;padding:6px 8px;margin:3px'>"
                      f"<div><b>{html.escape(label)}</b> {pill}</div>{body}{detail}</div>")
    status = comp.get("status", "")
    color = {"ok": fmt.SUCCESS, "failed": fmt.ERROR}.get(status, fmt.MUTED)
    summary = comp.get("overall_summary") or ""
    return (f"<div class='wb-card wb-card-{html.escape(status)}' style='border-left:4px solid "
            f"{color};padding:6px 10px;margin:8px 0;background:{fmt.SURFACE};color:{fmt.TEXT};font-size:12px'>"
            f"<div style='font-size:13px'><b>{html.escape(comp.get('media', ''))}</b> × "
            f"<b>{html.escape(comp.get('prompt_name') or comp.get('prompt_id', ''))}</b> "
            f"<span style='color:{fmt.MUTED}'>{html.escape(short(comp.get('prompt'), 120))}</span></div>"
            f"<div style='margin:3px 0'>{html.escape(short(summary, 400))}</div>"
            f"<div style='display:flex;flex-wrap:wrap'>{''.join(models)}</div></div>")


class GridJobPanel(JobPanel):
    """A grid job live: the seed's progress line, the score heatmap, result cards."""

    #: how many finished comparisons get a card (the newest; `job.comparisons()` has all)
    max_cards = 12

    def sections(self) -> list[w.Widget]:
        self.grid_job = GridJob(self.wb, self.job.id)
        self.line = w.HTML()
        self.line.add_class("wb-grid-line")
        self.heatmap = w.HTML()
        self.heatmap.add_class("wb-grid-heatmap")
        return [self.line, self.heatmap]

    def update(self, row: JobRow) -> None:
        verb = "Running batch analysis..." if row.status.value in ("in_progress", "finalizing") \
            else f"{row.status.value.replace('_', ' ').capitalize()}:"
        self.line.value = (f"<pre style='margin:2px 0'>{html.escape(verb)} "
                           f"{text_bar(row.progress)} {row.progress:.0f}% — "
                           f"{html.escape(row.message)}</pre>")

    def results_changed(self, row: JobRow) -> None:
        data = self.grid_job.comparisons()
        self.heatmap.value = heatmap_html(self.grid_job.scores())
        done = [c for c in data["comparisons"] if c["status"] != "pending"]
        shown = done[-self.max_cards:]
        t = data["totals"]
        caption = f"{t['completed_combinations']} of {t['combinations']} comparisons done"
        if t["failed_combinations"]:
            caption += f", {t['failed_combinations']} failed"
        if len(done) > len(shown):
            caption += f" (newest {len(shown)} shown)"
        self.preview.value = (f"<div style='color:{fmt.MUTED};font-size:12px'>{html.escape(caption)}</div>"
                              + "".join(card_html(c) for c in reversed(shown)))


class GridForm(SubmitForm):
    """Choose media, prompts, models (and a judge), then run the grid; its panel shows below.

    Extra keyword arguments go to `wb.grid.submit` unchanged (rate limits, Gemini client
    settings, `max_cells_in_flight`, ...).
    """

    def __init__(self, wb: HasGrid, *, folder: str | os.PathLike[str] = ".",
                 media: Sequence[str | os.PathLike[str]] = (), prompts: Sequence[str] = (),
                 models: Sequence[str | dict[str, Any]] = (),
                 judge: str | dict[str, Any] | None = None,
                 panel_interval: float | None = 1.0, **settings: Any) -> None:
        self.wb = wb
        self.folder = Path(folder)
        self.settings = settings
        self.panel_interval = panel_interval
        self.job: GridJob | None = None
        self.panel: GridJobPanel | None = None
        style = {"description_width": "80px"}
        files = self.media_files()
        chosen = [str(Path(m)) for m in media]
        files += [m for m in chosen if m not in files]
        self.media = w.SelectMultiple(options=files, value=tuple(chosen), rows=min(8, max(3, len(files))),
                                      description="Media", style=style,
                                      layout=w.Layout(width="640px"))
        self.prompts = w.Textarea(value="\n".join(prompts), description="Prompts", style=style,
                                  placeholder="one prompt per line",
                                  layout=w.Layout(width="640px", height="90px"))
        #: tag shown -> the model as given (a dict keeps its params; the tag is its label)
        self.specs: dict[str, str | dict[str, Any]] = {}
        self.models = w.TagsInput(value=[self._tag(m) for m in models], allow_duplicates=False)
        self.judge = w.Text(value=self._tag(judge) if judge else "", description="Judge",
                            style=style,
                            placeholder="model that scores the answers (empty: no judge)",
                            layout=w.Layout(width="640px"))
        self.run_button = w.Button(button_style="primary", icon="play",
                                   layout=w.Layout(width="300px"))
        self.run_button.add_class("wb-grid-run")
        self.run_button.on_click(lambda _b: self.submit())
        self.message = w.HTML()
        self.job_box = w.VBox()
        self.widget = w.VBox([
            w.HTML("<b>New comparison grid</b>"), self.media, self.prompts,
            w.HBox([w.Label("Models", layout=w.Layout(width="84px")), self.models]),
            self.judge, self.run_button, self.message, self.job_box])
        self.widget.add_class("wb-grid-form")
        self.enable_snapshot()
        for control in (self.media, self.prompts, self.models):
            control.observe(lambda _c: self._label(), "value")
        self._label()

    def _tag(self, model: str | dict[str, Any]) -> str:
        if isinstance(model, str):
            return model
        tag = parse_model(model).label
        self.specs[tag] = model
        return tag

    def media_files(self, limit: int = 500) -> list[str]:
        """Files under the form's folder a model can take (video, audio, image, text)."""
        out: list[str] = []
        if self.folder.is_dir():
            for p in sorted(self.folder.rglob("*")):
                rel = p.relative_to(self.folder)
                if not p.is_file() or any(x.startswith(".") for x in rel.parts):
                    continue
                if (guess_mime_type(p) or "").startswith(MEDIA_PREFIXES):
                    out.append(str(p))
                    if len(out) >= limit:
                        break
        return out

    def prompt_list(self) -> list[str]:
        return [p.strip() for p in self.prompts.value.splitlines() if p.strip()]

    @property
    def combinations(self) -> int:
        return len(self.media.value) * len(self.prompt_list())

    def _label(self) -> None:
        m, p = len(self.media.value), len(self.prompt_list())
        self.run_button.description = f"Run {m} × {p} = {m * p} comparisons"
        self.run_button.disabled = m * p == 0 or not self.models.value

    def submit(self) -> GridJob | None:
        """Validate and queue the grid; on bad input list the reasons and queue nothing.

        The grid's warnings (e.g. a judge that is also a competitor) are said in the form's
        message, under the submitted line, rather than as red stderr below the cell."""
        try:
            judge = self.judge.value.strip()
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always", GridWarning)
                job = self.wb.grid.submit(
                    media=list(self.media.value), prompts=self.prompt_list(),
                    models=[self.specs.get(t, t) for t in self.models.value],
                    judge=self.specs.get(judge, judge) or None, **self.settings)
        except (WorkbenchError, ValueError) as e:
            self.show_error(e)
            return None
        self.show_job(job, GridJobPanel, f"{job.info.total} comparisons")
        notes = [str(x.message) for x in said if issubclass(x.category, GridWarning)]
        for x in said:
            if not issubclass(x.category, GridWarning):  # not ours: leave it where it was going
                warnings.warn_explicit(x.message, x.category, x.filename, x.lineno)
        if notes:
            self.message.value += "".join(
                f"<div class='wb-form-note' style='color:{fmt.MUTED}'>note: {html.escape(n)}</div>"
                for n in notes)
        return job
