"""`make demo`'s ranking against the role's bare title vs two writers' job descriptions.

The descriptions (data/roles.csv: adverts of 56-76 words; data/roles_short.csv: notes of
21-32 words, another writer) were both written from the titles alone. For each source the
weights are chosen as `make demo` chooses them (generator's set, A and B) and every set is
scored, so the table shows how much of the held-out ρ comes from reading the role as a
description, and how much it depends on who wrote it. One worker, one pooled MiniLM
engine, one `/v1/embeddings` job per source.

Run under `flock /tmp/wb-heavy.lock`: `python bench/rank.py`.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench._common import REPO, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main() -> None:
    from workbench import Workbench, demo_rank
    from workbench.engines import pool

    data = REPO / "data"
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-rank-"))
    titles = tmp / "no_descriptions.csv"
    titles.write_text("role,description\n")
    os.environ.setdefault("WORKBENCH_ROOT", str(tmp / "wb"))
    sources = {"bare title": titles, "roles.csv (adverts, writer 1)": data / "roles.csv",
               "roles_short.csv (notes, writer 2)": data / "roles_short.csv"}
    wb = Workbench()
    wb.start_worker()
    jobs: list = []
    rows = []
    try:
        embed = demo_rank.job_embedder(wb, jobs)
        for label, path in sources.items():
            t0 = time.monotonic()
            out = demo_rank.rank(embed, data / "candidates.csv", roles_csv=path)
            sets = out["sets"]
            rows.append([label, f"{out['w']:.1f} / {out['v']:.2f}",
                         *(f"{s['rho']:.3f}" for s in sets.values()),
                         f"{min(s['rho'] for k, s in sets.items() if not s['chose']):.3f}",
                         f"{time.monotonic() - t0:.0f}"])
    finally:
        wb.stop_workers()
        pool.release()
    table("make demo's ranking: role as title vs as job description (Spearman ρ)",
          ["role read as", "w / v", *sets.keys(), "lowest held-out", "s"], rows)


if __name__ == "__main__":
    main()
