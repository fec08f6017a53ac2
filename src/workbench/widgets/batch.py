"""Batch inference in widgets: a form that submits, and the live panel of a batch job.

`BatchForm(wb, df)` — pick a JSONL file (or use the DataFrame given in code), the model,
chat or plain completion requests, sampling parameters and how many token alternatives
to keep (logprobs, for scores read from probabilities), press Submit; the job's panel
appears below it. `BatchJobPanel` —
requests/s, tokens/s, ETA and the newest answers, growing while the job runs.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import ipywidgets as w
import pandas as pd

from workbench.batch.results import flatten
from workbench.config import default_model
from workbench.errors import WorkbenchError
from workbench.store import JobRow
from workbench.widgets import format as fmt
from workbench.widgets.form import SubmitForm
from workbench.widgets.panel import JobPanel
from workbench.widgets.preview import short

if TYPE_CHECKING:
    from workbench.batch.api import BatchAPI, BatchJob
    from workbench.runtime.jobs import Job

FILE = "JSONL file"


class HasBatch(Protocol):
    """What the form needs of a workbench: `wb.batch` (a `Workbench` is one)."""

    @property
    def batch(self) -> BatchAPI: ...
FRAME = "DataFrame"


def _tile(label: str, value: str, css: str = "") -> str:
    return (f"<div class='wb-tile {css}' style='display:inline-block;min-width:110px;"
            f"margin:2px 14px 2px 0;vertical-align:top'><div style='color:{fmt.MUTED};"
            f"font-size:11px'>{html.escape(label)}</div><div style='font-size:17px;"
            f"font-weight:600;color:{fmt.TEXT};overflow-wrap:anywhere'>{html.escape(value)}"
            f"</div></div>")


class BatchJobPanel(JobPanel):
    """A batch job live: speed tiles, model and window, and the newest answers."""

    preview_rows = 10

    def sections(self) -> list[w.Widget]:
        self.speed = w.HTML()
        self.speed.add_class("wb-batch-speed")
        return [self.speed]

    def update(self, row: JobRow) -> None:
        sp = self.view.speed  # the row's numbers: one pace, shown twice, never two
        tiles = [
            _tile("requests / s", fmt.rate(sp.units_per_s, "req") or "—", "wb-tile-rate"),
            _tile("tokens / s", fmt.rate(sp.tokens_per_s, "tok") or "—", "wb-tile-tokens"),
            _tile("ETA", fmt.duration(sp.eta_s) if sp.eta_s is not None and row.done < row.total
                  else "—", "wb-tile-eta"),
            _tile("done", fmt.counts(row)),
            _tile("model", short(row.spec.get("model", "?"), 40)),
            _tile("in flight at most", f"{row.spec.get('window', '?')}"),
        ]
        self.speed.value = "<div>" + "".join(tiles) + "</div>"

    def preview_frame(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        rows = []
        for r in records:
            f = flatten(r)
            rows.append({"custom_id": f["custom_id"], "answer": short(f["content"] or "", 100),
                         "finish": f["finish_reason"] or "",
                         "tokens": f["completion_tokens"] if f["completion_tokens"] is not None
                         else "", "error": short(f["error"] or "", 60)})
        return pd.DataFrame(rows)


class BatchForm(SubmitForm):
    """Submit a batch job from a JSONL file or a DataFrame, then watch it below the form.

    Sampling parameters apply to the DataFrame route (they are written into each request
    body); a JSONL file carries its own in every line, so those fields are disabled for it.
    """

    def __init__(self, wb: HasBatch, df: pd.DataFrame | None = None, *,
                 folder: str | os.PathLike[str] = ".", prompt: str = "", system: str = "",
                 model: str | None = None, window: int = 256, max_tokens: int = 256,
                 temperature: float = 0.0, panel_interval: float | None = 1.0,
                 name: str | None = None, endpoint: str = "chat", logprobs: int = 0) -> None:
        self.wb = wb
        self.df = df
        self.folder = Path(folder)
        self.panel_interval = panel_interval
        self.job: BatchJob | None = None
        self.panel: BatchJobPanel | None = None
        style = {"description_width": "110px"}

        def wide() -> w.Layout:  # one Layout per widget: hiding one must not hide another
            return w.Layout(width="640px", max_width="100%")

        self.source = w.ToggleButtons(options=[FILE, FRAME] if df is not None else [FILE],
                                      value=FRAME if df is not None else FILE,
                                      description="Input", style=style)
        self.path = w.Combobox(options=self.jsonl_files(), placeholder="path/to/requests.jsonl",
                               description="JSONL file", ensure_option=False, layout=wide(),
                               style=style)
        columns = [str(c) for c in df.columns] if df is not None else []
        self.prompt = w.Textarea(value=prompt or (" ".join(f"{{{c}}}" for c in columns[:1])),
                                 description="Prompt", layout=w.Layout(width="640px",
                                                                       max_width="100%",
                                                                       height="60px"),
                                 placeholder="a format string over the columns, e.g. {profile}",
                                 style=style)
        self.system = w.Textarea(value=system, description="System", style=style,
                                 layout=w.Layout(width="640px", max_width="100%",
                                                 height="40px"))
        self.endpoint = w.ToggleButtons(options=[("Chat", "chat"), ("Completion", "completions")],
                                        value=endpoint, description="Endpoint", style=style,
                                        tooltips=["a chat request (the model's chat template)",
                                                  "the prompt as plain text to continue (base "
                                                  "models)"])
        self.logprobs = w.BoundedIntText(value=logprobs, min=0, max=20, style=style,
                                         description="Logprobs",
                                         tooltip="alternatives kept per token (0: none); "
                                                 "job.expected_scores(...) reads them back")
        self.id_column = w.Dropdown(options=[("(row number)", "")] + [(c, c) for c in columns],
                                    value="", description="Id column", style=style)
        self.model = w.Text(value=model or default_model(), description="Model", layout=wide(),
                            style=style)
        self.model.add_class("wb-model")
        self.name = w.Text(value=name or "", description="Name", layout=wide(), style=style,
                           placeholder="optional: a label for the dashboard")
        self.max_tokens = w.BoundedIntText(value=max_tokens, min=1, max=32768,
                                           description="Max tokens", style=style)
        self.temperature = w.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05,
                                         description="Temperature", style=style)
        self.top_p = w.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05,
                                   description="Top p", style=style)
        self.window = w.BoundedIntText(value=window, min=1, max=50_000, style=style,
                                       description="Window",
                                       tooltip="at most this many requests in flight")
        self.submit_button = w.Button(description="Submit", icon="paper-plane",
                                      button_style="primary")
        self.submit_button.add_class("wb-submit")
        self.submit_button.on_click(lambda _b: self.submit())
        self.message = w.HTML()
        self.job_box = w.VBox()
        self.frame_box = w.VBox([self.endpoint, self.prompt, self.system, self.id_column])
        self.widget = w.VBox([
            w.HTML("<b>New batch job</b>"), self.source, self.path, self.frame_box, self.model,
            self.name,
            w.HBox([self.max_tokens, self.window, self.logprobs],
                   layout=w.Layout(flex_flow="row wrap")),
            w.HBox([self.temperature, self.top_p], layout=w.Layout(flex_flow="row wrap")),
            self.submit_button, self.message, self.job_box])
        self.widget.add_class("wb-batch-form")
        self.enable_snapshot()
        self.source.observe(lambda _c: self._sync(), "value")
        self.endpoint.observe(lambda _c: self._sync(), "value")
        self._sync()

    def jsonl_files(self, limit: int = 200) -> list[str]:
        """JSONL files under the form's folder (not hidden ones, not job folders)."""
        found: list[str] = []
        if self.folder.is_dir():
            for p in sorted(self.folder.rglob("*.jsonl")):
                rel = p.relative_to(self.folder)
                if any(part.startswith(".") or part == "jobs" for part in rel.parts[:-1]):
                    continue
                found.append(str(p))
                if len(found) >= limit:
                    break
        return found

    def _sync(self) -> None:
        """Show the DataFrame fields for a DataFrame, the path for a file."""
        frame = self.source.value == FRAME
        self.path.layout.display = "none" if frame else None
        self.frame_box.layout.display = None if frame else "none"
        self.system.layout.display = None if self.endpoint.value == "chat" else "none"
        for s in (self.max_tokens, self.temperature, self.top_p, self.logprobs):
            s.disabled = not frame

    def sampling(self) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": int(self.max_tokens.value),
                                  "temperature": float(self.temperature.value)}
        if self.top_p.value < 1.0:
            params["top_p"] = float(self.top_p.value)
        k = int(self.logprobs.value)
        if k and self.endpoint.value == "chat":
            params.update(logprobs=True, top_logprobs=k)
        elif k:
            params["logprobs"] = k
        return params

    def submit(self) -> Job | None:
        """Validate and queue; on bad input say why and queue nothing."""
        try:
            if self.source.value == FRAME:
                if self.df is None:
                    raise ValueError("no DataFrame was given to this form: pass one, "
                                     "BatchForm(wb, df), or choose a JSONL file")
                chat = self.endpoint.value == "chat"
                path: str | Path = self.wb.batch.from_dataframe(
                    self.df, self.prompt.value, endpoint=self.endpoint.value,
                    system=(self.system.value or None) if chat else None,
                    id_column=self.id_column.value or None, **self.sampling())
            else:
                path = self.path.value.strip()
                if not path:
                    raise ValueError("choose a JSONL file first")
            job = self.wb.batch.submit(path, model=self.model.value.strip() or None,
                                       window=int(self.window.value),
                                       name=self.name.value.strip() or None)
        except (WorkbenchError, KeyError, ValueError) as e:
            self.show_error(e.args[0] if isinstance(e, KeyError) and e.args else e)
            return None
        self.show_job(job, BatchJobPanel, f"{job.info.total:,} requests")
        return job
