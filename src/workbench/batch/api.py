"""`wb.batch`: build, validate, submit (and split) OpenAI Batch JSONL jobs."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.batch.expiry import expire_waiting, window_seconds
from workbench.batch.format import (
    CHAT_URL,
    COMPLETIONS_URL,
    ChatSampling,
    CompletionBody,
    Report,
    validate_file,
)
from workbench.batch.results import expected_scores, read_dir
from workbench.errors import QueueFull
from workbench.models import engine_spec
from workbench.runtime.jobs import Bench, Job, job_labels
from workbench.store import disk


class BatchJob(Job):
    """A batch job: `results()` is a DataFrame in input order, usable while it runs."""

    def results(self) -> pd.DataFrame:
        return read_dir(self.dir)

    def expected_scores(self, labels: Mapping[str, float], *, question: str | None = None,
                        step: int | None = 0) -> pd.DataFrame:
        """A probability-weighted score per request from its `logprobs` (G-Eval).

        `labels` maps answer tokens to values: {"1": 1, ..., "5": 5} for a rating, or
        {"yes": 1, "no": 0} for P(yes). The requests must have asked for alternatives
        (`logprobs: 20` for completions, `logprobs: true, top_logprobs: 20` for chat).
        `question` keeps the requests of one prompt of a dict (`<id>:<question>`);
        `step` is the generated token to read (None: the first one where a label appears).
        Columns: custom_id, id, score, mass (how much probability the labels held: a low
        mass means the model did not answer in those terms), top (the likeliest label).
        """
        return expected_scores(self.dir, labels, question=question, step=step)


class JobGroup:
    """The parts of one large input, submitted as several jobs; merged back in input order."""

    def __init__(self, wb: Bench, job_ids: list[str], group_id: str) -> None:
        self.wb, self.ids, self.group_id = wb, job_ids, group_id

    @property
    def jobs(self) -> list[BatchJob]:
        return [BatchJob(self.wb, i) for i in self.ids]

    def __repr__(self) -> str:
        return f"<JobGroup {self.group_id}: {len(self.ids)} jobs, {self.progress:.0f}%>"

    @property
    def total(self) -> int:
        return sum(j.info.total for j in self.jobs)

    @property
    def progress(self) -> float:
        rows = [j.info for j in self.jobs]
        total = sum(r.total for r in rows)
        return 100.0 * sum(r.done for r in rows) / total if total else 0.0

    @property
    def statuses(self) -> list[str]:
        return [j.status for j in self.jobs]

    def wait(self, timeout: float | None = None, progress: bool = True) -> JobGroup:
        deadline = None if timeout is None else time.monotonic() + timeout
        for j in self.jobs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            j.wait(timeout=left, progress=progress)
        return self

    def cancel(self) -> JobGroup:
        for j in self.jobs:
            if j.status not in ("completed", "failed", "cancelled", "expired"):
                j.cancel()
        return self

    def results(self) -> pd.DataFrame:
        """All parts, concatenated in the original input order."""
        frames = [j.results() for j in self.jobs]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class BatchAPI:
    def __init__(self, wb: Bench) -> None:
        self.wb = wb

    # -- building input ------------------------------------------------------------------
    def from_dataframe(self, df: pd.DataFrame, prompt: str | Mapping[str, str], *,
                       system: str | None = None, id_column: str | None = None,
                       path: str | os.PathLike[str] | None = None, model: str | None = None,
                       endpoint: str = "chat", **sampling: Any) -> Path:
        """Write one request per row; `prompt` is a format string over the columns.

        A dict of prompts {name: template} asks every row several questions: one request
        each, with custom_id `<id>:<name>` (`BatchJob.expected_scores(..., question=name)`
        reads them back). `endpoint="completions"` writes plain completion requests
        (`/v1/completions`, no chat template): what a base model continues best, e.g. a
        few-shot prompt scored from `logprobs`. `sampling` takes OpenAI body fields
        (max_tokens, temperature, response_format, logprobs, top_logprobs, ...).
        """
        if endpoint not in ("chat", "completions"):
            raise ValueError(f"endpoint is 'chat' or 'completions', not {endpoint!r}")
        prompts: dict[str | None, str] = (dict(prompt) if isinstance(prompt, Mapping)
                                          else {None: prompt})
        if not prompts:
            raise ValueError("prompt is an empty dict: give at least one template")
        bad = [n for n in prompts if n is not None and (not str(n) or ":" in str(n))]
        if bad:
            raise ValueError(f"prompt names must be non-empty and without ':' (got {bad})")
        if endpoint == "chat":
            ChatSampling.model_validate(sampling)  # refuse unknown/invalid fields before writing
        else:
            if system:
                raise ValueError("a completion request has no system message: put that text "
                                 "at the start of the prompt")
            CompletionBody.model_validate({"prompt": "-", **sampling})
        for name, template in prompts.items():
            missing = [c for c in _template_fields(template) if c not in df.columns]
            if missing:
                what = "prompt" if name is None else f"prompt {name!r}"
                raise KeyError(f"{what} uses columns {missing} that the DataFrame lacks "
                               f"(columns: {list(df.columns)})")
        if id_column is not None and not df[id_column].is_unique:
            dup = df[id_column][df[id_column].duplicated()].iloc[0]
            raise ValueError(f"id_column {id_column!r} is not unique (e.g. {dup!r})")
        dest = Path(path) if path else self.wb.root / "inputs" / f"df-{time.time_ns():x}.jsonl"
        dest.parent.mkdir(parents=True, exist_ok=True)
        url = CHAT_URL if endpoint == "chat" else COMPLETIONS_URL
        with open(dest, "w", encoding="utf-8") as f:
            for i, row in enumerate(df.to_dict(orient="records")):
                base = str(row[id_column]) if id_column else f"row-{i}"
                for name, template in prompts.items():
                    text = template.format(**row)
                    body: dict[str, Any]
                    if endpoint == "chat":
                        messages = ([{"role": "system", "content": system}] if system else [])
                        messages.append({"role": "user", "content": text})
                        body = {"messages": messages, **sampling}
                    else:
                        body = {"prompt": text, **sampling}
                    if model:
                        body["model"] = model
                    cid = base if name is None else f"{base}:{name}"
                    f.write(json.dumps({"custom_id": cid, "method": "POST", "url": url,
                                        "body": body}, ensure_ascii=False) + "\n")
        return dest

    def embed(self, data: Any, column: str | None = None, *, model: str | None = None,
              dimensions: int | None = None, timeout: float | None = None,
              **submit: Any) -> Any:
        """Vectors of a table's texts, one row per input row, in input order (a numpy
        array; `df["vec"] = list(arr)` makes it a column). Runs as a batch job of
        `/v1/embeddings` lines on `model` (default: the embedded all-MiniLM-L6-v2);
        `submit` takes `submit()`'s options (window, engine, name, ...)."""
        from workbench.batch.embed_table import embed

        return embed(self, data, column, model=model, dimensions=dimensions,
                     timeout=timeout, **submit)[0]

    def validate(self, path: str | os.PathLike[str]) -> Report:
        """Check a file without queuing it. Raises InvalidInput listing every problem."""
        return validate_file(path, max_requests=self.wb.store.limits.max_requests_per_job)

    # -- submitting ----------------------------------------------------------------------
    def submit(self, source: str | os.PathLike[str] | pd.DataFrame, model: str | None = None, *,
               window: int = 5000, mode: str = "window", engine: dict[str, Any] | None = None,
               group_id: str | None = None, prompt: str | None = None,
               models: dict[str, str | dict[str, Any]] | None = None,
               completion_window: str | float | None = None,
               name: str | None = None, tags: str | list[str] | None = None,
               media_dir: str | os.PathLike[str] | list[Any] | None = None,
               **df_options: Any) -> BatchJob:
        """Validate the whole input, then queue it as one job (atomically, within limits).

        `model` is a vLLM model name or folder (default: $WORKBENCH_MODEL, else the
        embedded demo model); every line runs on it. `engine` overrides engine arguments
        (dtype, max_model_len, gpu_memory_utilization, tensor_parallel_size,
        kv_cache_memory_bytes, ...), or `{"provider": "openai", "base_url": ...}` sends the
        requests to an OpenAI server. `models={name: folder_or_id_or_engine_dict, ...}`
        instead serves several models under names: each line runs on the one its
        `body.model` names (the first one for lines that name none; an unknown name is
        that line's `model_not_found` error), one model loaded at a time.
        `completion_window` ("24h", "90s", or seconds; default none) is OpenAI's deadline:
        what has not run by then is reported as `batch_expired` and the job is `expired`.
        `name`/`tags` label the job on the dashboard and in `wb.jobs(name=, tag=)`.
        """
        if mode not in ("window", "chunk"):
            raise ValueError("mode is 'window' (continuous top-up) or 'chunk' (seed design)")
        window_s = window_seconds(completion_window)
        labels = job_labels(name, tags)
        if isinstance(source, pd.DataFrame):
            if prompt is None:
                raise ValueError("submitting a DataFrame needs prompt=... (a format string)")
            source = self.from_dataframe(source, prompt, **df_options)
        store = self.wb.store
        eng = engine_spec(model, engine)  # refuses bad engine settings before staging
        if eng["provider"] == "ray":  # a misspelt replica or vLLM setting, refused now
            from workbench.engines.ray_data import check_spec

            check_spec(eng)
        with disk.refused_when_full(store.root):
            staged = store.staging_dir()
            try:
                report = validate_file(source, staged / "input.jsonl",
                                       max_requests=store.limits.max_requests_per_job)
            except BaseException:
                shutil.rmtree(staged, ignore_errors=True)
                raise
        if models:
            served = {str(name): _engine_of(m, engine) for name, m in models.items()}
            first = next(iter(served))
            spec = {"model": first, "engine": served[first], "models": served}
        else:
            eng = engine_spec(model, engine)
            spec = {"model": eng.pop("model_name", eng.get("model")), "engine": eng}
        spec.update(embed_default(report, spec, model))
        spec.update(audio_folders(report, store.root, media_dir))
        spec.update(window=int(window), mode=mode, source=str(source))
        if report.notes:
            spec["notes"] = report.note_text()
        if window_s is not None:
            spec["completion_window_s"] = window_s
        with disk.refused_when_full(store.root):
            job_id = store.create_job("batch", spec, total=report.total, staged=staged,
                                      group_id=group_id, job_id=None, window_s=window_s,
                                      **labels)
        return BatchJob(self.wb, job_id)

    def expire_overdue(self) -> list[str]:
        """Batches still waiting past their completion window → `expired` (ids returned).

        The worker does this when it claims one; front doors call it before they show the
        queue, so an overdue batch reads `expired` even while the worker is busy.
        """
        return expire_waiting(self.wb.store)

    def submit_large(self, source: str | os.PathLike[str] | pd.DataFrame, model: str | None = None,
                     *, per_job: int | None = None, poll_s: float = 2.0,
                     on_wait: Callable[[str], None] | None = None, prompt: str | None = None,
                     **options: Any) -> JobGroup:
        """Split a big input into jobs of `per_job` requests; wait for queue space.

        The whole input is validated first (nothing is queued if any line is bad). Each
        part is then submitted; when a queue limit is full the call waits, telling
        `on_wait` (default: print) why, instead of failing.
        """
        if isinstance(source, pd.DataFrame):
            if prompt is None:
                raise ValueError("submitting a DataFrame needs prompt=... (a format string)")
            df_keys = ("system", "id_column", "max_tokens", "temperature", "top_p", "seed",
                       "stop", "response_format")
            source = self.from_dataframe(source, prompt,
                                         **{k: options.pop(k) for k in df_keys if k in options})
        store = self.wb.store
        per_job = per_job or store.limits.max_requests_per_job
        validate_file(source)  # whole file first, with no per-job limit
        group_id = f"group_{time.time_ns():x}"
        parts_dir = store.root / "staging" / group_id
        try:
            with disk.refused_when_full(store.root):
                parts = _split(Path(source), parts_dir, per_job)
        except BaseException:
            shutil.rmtree(parts_dir, ignore_errors=True)
            raise
        say = on_wait or (lambda msg: print(msg, flush=True))
        ids: list[str] = []
        name = options.pop("name", None)
        try:
            for i, part in enumerate(parts):
                label = f"{name} (part {i + 1}/{len(parts)})" if name and len(parts) > 1 else name
                while True:
                    try:
                        ids.append(self.submit(part, model, group_id=group_id, name=label,
                                               **options).id)
                        break
                    except QueueFull as e:
                        if e.limit == "max_requests_per_job":
                            raise
                        say(f"part {i + 1}/{len(parts)} waiting for queue space: {e}")
                        time.sleep(poll_s)
        finally:
            shutil.rmtree(parts_dir, ignore_errors=True)
        return JobGroup(self.wb, ids, group_id)

    def job(self, job_id: str) -> BatchJob:
        return BatchJob(self.wb, job_id)

    def group(self, group_id: str) -> JobGroup:
        return JobGroup(self.wb, [r.id for r in self.wb.store.list_jobs(group_id=group_id)], group_id)


def _engine_of(model: str | dict[str, Any], engine: dict[str, Any] | None) -> dict[str, Any]:
    """A served model's engine spec: a folder/id (with the shared `engine` arguments) or a
    dict of its own engine arguments (`{"model": ..., "max_model_len": ...}`)."""
    if isinstance(model, dict):
        own = {**(engine or {}), **model}
        eng = engine_spec(own.pop("model", None), own)
    else:
        eng = engine_spec(model, engine)
    eng.pop("model_name", None)
    return eng


def audio_folders(report: Report, root: Path, media_dir: Any) -> dict[str, Any]:
    """Where `/v1/audio/...` lines may read files: `media_dir` (one or a list) and the
    store's media folder, resolved now (engines/whisper_batch.py checks every path)."""
    from workbench.batch.audio_format import AUDIO_URLS
    from workbench.store.media import media_dir as store_media

    if not any(report.urls.get(u) for u in AUDIO_URLS):
        return {}
    given = [] if media_dir is None else media_dir if isinstance(media_dir, list) else [media_dir]
    return {"media_dirs": [str(Path(d).expanduser().resolve()) for d in given]
            + [str(store_media(root).resolve())]}


def embed_default(report: Report, spec: dict[str, Any], model: str | None) -> dict[str, Any]:
    """`/v1/embeddings` lines naming no model run on the embedded all-MiniLM-L6-v2 unless
    the job named its model (`model=` / an embedding model among `models=`)."""
    from workbench.batch.embed_format import EMBEDDINGS_URL
    from workbench.config import EMBEDDED_EMBEDDER, default_model
    from workbench.models import model_kind

    provider = spec["engine"].get("provider")
    if not report.urls.get(EMBEDDINGS_URL) or provider not in ("vllm", "ray"):
        return {}
    if spec.get("models"):
        own = [n for n, e in spec["models"].items() if model_kind(str(e.get("model", n))) == "embed"]
        if own:
            return {"embed_model": own[0]}
        eng = engine_spec(EMBEDDED_EMBEDDER)
        eng.pop("model_name", None)
        return {"embed_model": EMBEDDED_EMBEDDER,
                "models": {**spec["models"], EMBEDDED_EMBEDDER: eng}}
    if model is not None or spec["model"] != default_model():  # the job named its model
        return {}
    eng = {**spec["engine"], "model": EMBEDDED_EMBEDDER}  # same provider and settings
    return {"embed_model": EMBEDDED_EMBEDDER, "embed_engine": eng}


def _template_fields(template: str) -> list[str]:
    import string

    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _split(src: Path, out_dir: Path, per_job: int) -> list[Path]:
    """Stream `src` into files of at most `per_job` non-blank lines."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parts: list[Path] = []
    fh = None
    n = 0
    with open(src, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            if fh is None or n == per_job:
                if fh is not None:
                    fh.close()
                parts.append(out_dir / f"part-{len(parts):04d}.jsonl")
                fh = open(parts[-1], "wb")
                n = 0
            fh.write(raw if raw.endswith(b"\n") else raw + b"\n")
            n += 1
    if fh is not None:
        fh.close()
    return parts
