"""Grid benchmark: workbench's overlapped cells vs the seed's one-cell-at-a-time order.

    python bench/grid.py [--media 5 --prompts 4 --models 4 --latency 0.4 --rpm 600]

Both runs go through the real google-genai SDK to the fake Gemini server from tests/
(127.0.0.1) with the same per-call latency, the same per-model rate limit enforced by
the server (token bucket → 429 when exceeded) and matched by the client's limiter, and
the same injected 503s. The only difference is the order: the seed runs a cell's models
in parallel, then its judge, then the next cell (`max_cells_in_flight=1`); workbench
overlaps cells, bounded by the rate limits and `max_in_flight`.

Reported: wall time (claim → completed), calls recorded vs expected ("lost" = expected
calls without a row, target 0), calls answered twice by the server (target 0), 429s the
server sent, retries. Ratio against the seed order run in the same process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import table, timed

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.fake_gemini import API_KEY, FakeGemini, engine_settings  # noqa: E402
from workbench import Workbench  # noqa: E402
from workbench.grid import tables  # noqa: E402
from workbench.grid.api import GridJob  # noqa: E402
from workbench.runtime.worker import Worker  # noqa: E402


def make_media(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"clip{i}.mp4"
        p.write_bytes(os.urandom(64 * 1024))
        out.append(p)
    return out


def run(tmp: Path, name: str, args: argparse.Namespace, media: list[Path],
        **settings: Any) -> dict[str, Any]:
    models = [f"gemini-m{i}" for i in range(args.models)]
    rate = args.rpm / 60.0
    limits = {m: (rate, 2.0) for m in [*models, "gemini-judge"]}
    with FakeGemini(latency_s=args.latency, rate_limits=limits) as fake:
        for i in range(args.inject_503):
            fake.inject("generate", 503, times=1, model=models[i % len(models)],
                        message="backend overloaded")
        wb = Workbench(tmp / name)
        job: GridJob = wb.grid.submit(
            media=media, prompts={f"q{i}": f"Question {i}: what happens in this clip?"
                                  for i in range(args.prompts)},
            models=models, judge="gemini-judge", default_rpm=args.rpm,
            max_in_flight=args.max_in_flight,
            gemini=engine_settings(fake.url, default_rpm=args.rpm, burst=1.0,
                                   retry={"max_attempts": 6, "initial_s": 0.2, "max_s": 2.0,
                                          "jitter_s": 0.1}),
            **settings)
        secs, _ = timed(lambda: Worker(wb.store).run_once())
        info = job.info
        rows = tables.calls(wb.store, job.id)
        expected = len(media) * args.prompts * (args.models + 1)
        ok_200 = [e for e in fake.requests("generate") if e["status"] == 200]
        answered = len(ok_200)
        return {"name": name, "status": info.status.value, "secs": secs,
                "wall": (info.finished_at or 0) - (info.started_at or 0), "rows": len(rows),
                "ok": sum(r.ok for r in rows), "lost": expected - len(rows),
                "dup": answered - sum(1 for r in rows if r.ok), "expected": expected,
                "429": sum(1 for e in fake.requests("generate") if e["status"] == 429),
                "503": sum(1 for e in fake.requests("generate") if e["status"] == 503),
                "retries": info.metrics.get("retries", 0),
                "uploads": len(fake.requests("upload.finalize")),
                "cells": f"{info.completed}/{info.total}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.4, help="seconds per generate call")
    ap.add_argument("--rpm", type=float, default=600, help="per-model rate limit (both sides)")
    ap.add_argument("--inject-503", type=int, default=4, help="503s to inject (retried)")
    ap.add_argument("--max-in-flight", type=int, default=64)
    args = ap.parse_args()
    os.environ["GEMINI_API_KEY"] = API_KEY
    with tempfile.TemporaryDirectory(prefix="wb-bench-grid-") as d:
        tmp = Path(d)
        media = make_media(tmp / "media", args.media)
        seed = run(tmp, "seed order (1 cell at a time)", args, media, max_cells_in_flight=1)
        ours = run(tmp, "workbench (cells overlap)", args, media)
    header = ["run", "status", "wall s", "cells", "calls recorded", "lost", "answered twice",
              "429 from server", "503 injected", "retries", "uploads", "speed-up"]
    rows = []
    for r in (seed, ours):
        rows.append([r["name"], r["status"], f"{r['wall']:.2f}", r["cells"],
                     f"{r['rows']}/{r['expected']} ({r['ok']} ok)", r["lost"], r["dup"],
                     r["429"], r["503"], r["retries"], r["uploads"],
                     f"{seed['wall'] / r['wall']:.2f}×"])
    table(f"Grid {args.media} media × {args.prompts} prompts × {args.models} models + judge;"
          f" {args.latency:.2f} s/call, {args.rpm:g} rpm per model", header, rows)
    good = ours["lost"] == 0 and ours["dup"] == 0 and seed["wall"] / ours["wall"] >= 3.0
    print("target (≥ 3× faster, 0 calls lost, 0 answered twice):", "met" if good else "NOT met")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
