"""Watching a job from a test while it runs: sampled messages, one line per custom_id."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any


def ids_per_line(job: Any) -> Counter[str]:
    """custom_ids over output.jsonl then errors.jsonl (read in that order, see below)."""
    seen: Counter[str] = Counter()
    for p in (job.output_path, job.errors_path):
        if p.exists():
            seen.update(json.loads(x)["custom_id"] for x in p.read_text().splitlines() if x)
    return seen


class Sampler:
    """Samples a job's message (and checks one line per custom_id) while it runs."""

    def __init__(self, job: Any, every_s: float = 0.05) -> None:
        self.job, self.messages, self.dupes = job, [], 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._t.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            m = self.job.info.message
            if not self.messages or self.messages[-1] != m:
                self.messages.append(m)
            # output first, then errors: a line superseded between the two reads can only
            # look missing, never doubled — so any double is a real one
            if any(c > 1 for c in ids_per_line(self.job).values()):
                self.dupes += 1

    def stop(self) -> list[str]:
        self._stop.set()
        self._t.join()
        return self.messages
