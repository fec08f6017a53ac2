"""Write data/candidates.csv: synthetic candidate profiles for the batch demo.

Deterministic (a seeded `random.Random`, no hashing of strings), so the committed CSVs are
exactly what `python scripts/make_candidates.py` writes. The people are invented. Each
profile has a hidden fit level: strong candidates list most of the applied role's core
skills and already hold that title; weak ones come from another field. That gives the
demo's scoring prompt something real to separate. The level is written to a second file,
`candidates_fit.csv` (id, fit = weak | medium | strong), next to the profiles and never
inside them, so the model cannot see it; `make demo` reads it to report how well its
scores follow it (Spearman ρ).

    python scripts/make_candidates.py [--rows 200] [--seed 7] [--out data/candidates.csv]
                                      [--fit-out data/candidates_fit.csv]
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

ROLES: dict[str, list[str]] = {
    "Data Engineer": ["Python", "SQL", "Airflow", "Spark", "Kafka", "dbt", "Snowflake"],
    "Backend Engineer": ["Python", "Go", "PostgreSQL", "REST APIs", "Docker", "Redis", "gRPC"],
    "Frontend Engineer": ["TypeScript", "React", "CSS", "Next.js", "accessibility", "Jest"],
    "Machine Learning Engineer": ["Python", "PyTorch", "scikit-learn", "MLOps", "vLLM",
                                  "feature stores", "model evaluation"],
    "DevOps Engineer": ["Kubernetes", "Terraform", "AWS", "CI/CD", "Prometheus", "Linux",
                        "Ansible"],
    "Data Analyst": ["SQL", "Excel", "Tableau", "Looker", "statistics", "A/B testing",
                     "Python"],
    "Product Designer": ["Figma", "user research", "prototyping", "design systems",
                         "usability testing", "accessibility"],
    "QA Engineer": ["test automation", "Selenium", "Playwright", "pytest", "API testing",
                    "Jira", "performance testing"],
}

OTHER_SKILLS = ["customer support", "bookkeeping", "sales", "copywriting", "event planning",
                "photography", "retail operations", "teaching", "logistics", "recruiting",
                "social media", "project coordination", "Java", "C#", "PHP", "WordPress"]

OTHER_TITLES = ["Customer Support Lead", "Sales Associate", "Teacher", "Office Manager",
                "Marketing Coordinator", "Warehouse Supervisor", "Accountant",
                "Junior Web Developer", "IT Support Technician", "Recruiter"]

RELATED_TITLES: dict[str, list[str]] = {
    "Data Engineer": ["BI Developer", "Backend Engineer", "Data Analyst"],
    "Backend Engineer": ["Full-Stack Developer", "Data Engineer", "Software Engineer"],
    "Frontend Engineer": ["Full-Stack Developer", "UI Developer", "Web Designer"],
    "Machine Learning Engineer": ["Data Scientist", "Research Engineer", "Data Engineer"],
    "DevOps Engineer": ["Site Reliability Engineer", "Systems Administrator",
                        "Backend Engineer"],
    "Data Analyst": ["Business Analyst", "Marketing Analyst", "Financial Analyst"],
    "Product Designer": ["UX Designer", "Graphic Designer", "UI Developer"],
    "QA Engineer": ["Test Analyst", "Support Engineer", "Software Engineer"],
}

DOMAINS = ["fintech", "e-commerce", "healthcare", "logistics", "online education", "gaming",
           "insurance", "travel", "media", "public sector", "energy", "retail banking"]

ACHIEVEMENTS = {
    "strong": ["led a team of {n} and shipped {thing} used by {users} people",
               "cut {metric} by {pct}% by redesigning {thing}",
               "owned {thing} end to end, from design to on-call",
               "mentored {n} juniors and set the team's review standards"],
    "medium": ["contributed to {thing} in a team of {n}",
               "maintained {thing} and fixed its slowest parts",
               "moved {thing} to a newer stack with a senior colleague",
               "took a course in {skill} and used it on a side project"],
    "weak": ["is switching careers after a bootcamp in {skill}",
             "organised {thing} for a team of {n}",
             "handled {users} customer requests a month",
             "built a personal website and wants a first job in tech"],
}

THINGS = ["the billing pipeline", "a reporting dashboard", "the checkout service",
          "an internal search tool", "the onboarding flow", "a recommendation model",
          "the release process", "the data warehouse", "a mobile sign-up form",
          "the monitoring stack"]
METRICS = ["latency", "cloud cost", "time to release", "error rates", "manual work"]

FIRST = ["Ada", "Bilal", "Chen", "Dara", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
         "Kemi", "Luca", "Maya", "Nikhil", "Olga", "Pablo", "Quinn", "Rosa", "Samir", "Tara",
         "Umar", "Vera", "Wei", "Ximena", "Yusuf", "Zoe", "Amara", "Bruno", "Carmen", "Dmitri",
         "Esra", "Felix", "Gita", "Hamza", "Ivy", "Jae", "Kofi", "Lena", "Mateo", "Noor"]
LAST = ["Okafor", "Schmidt", "Tanaka", "Haddad", "Novak", "Silva", "Kowalski", "Nguyen",
        "Moreau", "Rossi", "Larsen", "Patel", "Fischer", "Costa", "Kim", "Bauer", "Ali",
        "Jensen", "Garcia", "Ivanova", "Mensah", "Dubois", "Sato", "Romero", "Khan", "Weber",
        "Lindqvist", "Ochieng", "Popescu", "Yilmaz"]

COLUMNS = ["id", "name", "role", "current_title", "years", "skills", "summary"]
FIT_COLUMNS = ["id", "fit"]


def candidate(i: int, rng: random.Random) -> dict[str, str | int]:
    role = rng.choice(list(ROLES))
    core = ROLES[role]
    level = rng.choices(["strong", "medium", "weak"], weights=[3, 4, 3])[0]
    n_core = {"strong": rng.randint(4, 5), "medium": rng.randint(2, 3), "weak": rng.randint(0, 1)}[level]
    skills = rng.sample(core, n_core) + rng.sample(OTHER_SKILLS, 5 - n_core)
    rng.shuffle(skills)
    years = {"strong": rng.randint(5, 15), "medium": rng.randint(2, 6), "weak": rng.randint(0, 3)}[level]
    title = {"strong": role, "medium": rng.choice(RELATED_TITLES[role]),
             "weak": rng.choice(OTHER_TITLES)}[level]
    achievement = rng.choice(ACHIEVEMENTS[level]).format(
        n=rng.randint(2, 8), thing=rng.choice(THINGS), users=f"{rng.randint(2, 90) * 1000:,}",
        metric=rng.choice(METRICS), pct=rng.randint(15, 60), skill=rng.choice(core))
    summary = (f"{title} with {years} year{'s' if years != 1 else ''} in "
               f"{rng.choice(DOMAINS)}; {achievement}.")
    return {"id": f"cand-{i:04d}", "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            "role": role, "current_title": title, "years": years,
            "skills": ", ".join(skills), "summary": summary, "fit": level}


def make(rows: int, seed: int) -> list[dict[str, str | int]]:
    rng = random.Random(seed)
    return [candidate(i, rng) for i in range(1, rows + 1)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "candidates.csv")
    p.add_argument("--fit-out", type=Path, default=None,
                   help="the hidden fit levels (default: candidates_fit.csv next to --out)")
    a = p.parse_args()
    fit_out = a.fit_out or a.out.with_name(a.out.stem + "_fit.csv")
    rows = make(a.rows, a.seed)
    for path, columns in ((a.out, COLUMNS), (fit_out, FIT_COLUMNS)):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    print(f"wrote {a.rows} candidates to {a.out} and their hidden fit levels to {fit_out}")


if __name__ == "__main__":
    main()
