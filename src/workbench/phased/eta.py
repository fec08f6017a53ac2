"""Estimated waits from rates measured in earlier phases, kept in the store.

Each finished phase updates a running average in `store.stats`, per model and device
(so a second job on this machine starts from what the first one measured):

- STT: audio seconds transcribed per wall-clock second;
- evaluation: seconds per evaluation, and completion tokens per evaluation;
- both: the cost of a phase switch (load + unload), measured from the phase timeline.

An item's ETA is the time until its batch's evaluation phase ends: what is left of the
phase running now, then every batch ahead of it, then its own — each as switch cost +
work / rate. Every ETA says what it rests on (`basis`): "this job's batch 2", "measured
on this machine on 2025-06-01", or "default guess" (the DEFAULTS below: CPU numbers for
the embedded models, used until a phase on this machine measured them).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from workbench.phased.items import Item, JobState
from workbench.store import Store

#: Used until a phase on this machine measured the real number (the "default guess"):
#: the embedded models on a 2-core CPU (bench/phased.py, RECIPES): Whisper tiny.en ~8×
#: real time in a child process that starts in ~1 s; Gemma 3 270M starts in ~25 s and
#: takes ~1 s per evaluation (less for the one-token logprob judgement).
DEFAULTS = {"stt_audio_per_s": 8.0, "stt_switch_s": 2.0, "llm_s_per_item": 1.0,
            "llm_switch_s": 25.0}
DEFAULT_AUDIO_S = 30.0
#: running average: a new phase counts this much (one odd phase moves the ETA, not owns it)
WEIGHT_NEW = 0.5
#: ... and more when the old value came from another job (this job's machine state wins)
WEIGHT_NEW_FIRST_IN_JOB = 0.7


class Rates(BaseModel):
    stt_audio_per_s: float
    stt_switch_s: float
    llm_s_per_item: float
    llm_switch_s: float
    measured: list[str]
    #: newest measurement time (epoch s), and this job's newest measured batch (0-based)
    measured_at: float | None = None
    this_job_batch: int | None = None

    @property
    def basis(self) -> str:
        """What the ETA rests on, in words."""
        if not self.measured:
            return "default guess"
        day = time.strftime("%Y-%m-%d", time.localtime(self.measured_at or time.time()))
        if len(self.measured) < len(DEFAULTS):
            return f"partly measured on this machine on {day}, partly a default guess"
        if self.this_job_batch is not None:
            return f"this job's batch {self.this_job_batch + 1}"
        return f"measured on this machine on {day}"


def _key(name: str, model_key: str) -> str:
    return f"phased.rate.{name}.{model_key}"


def record_rate(store: Store, name: str, model_key: str, value: float, *,
                job_id: str | None = None, batch: int | None = None) -> float:
    """Fold one measurement into the running average; returns the new average."""
    if value <= 0:
        return value
    k = _key(name, model_key)
    old = store.get_stat(k)
    if not old:
        avg = value
    else:
        w = WEIGHT_NEW if old.get("job_id") == job_id else WEIGHT_NEW_FIRST_IN_JOB
        avg = (1 - w) * float(old["value"]) + w * value
    store.set_stat(k, {"value": avg, "n": (old or {}).get("n", 0) + 1, "last": value,
                       "at": time.time(), "job_id": job_id, "batch": batch})
    return avg


def load_rates(store: Store, stt_key: str, llm_key: str, job_id: str | None = None) -> Rates:
    vals: dict[str, Any] = {}
    measured: list[str] = []
    ats: list[float] = []
    mine: list[int] = []
    for name, default in DEFAULTS.items():
        got = store.get_stat(_key(name, stt_key if name.startswith("stt") else llm_key))
        if got:
            vals[name] = float(got["value"])
            measured.append(name)
            ats.append(float(got.get("at") or 0))
            if job_id is not None and got.get("job_id") == job_id and got.get("batch") is not None:
                mine.append(int(got["batch"]))
        else:
            vals[name] = default
    return Rates(**vals, measured=measured, measured_at=max(ats) if ats else None,
                 this_job_batch=max(mine) if mine and len(mine) == len(measured) else None)


def _audio(items: list[Item], fallback: float) -> float:
    return sum(i.audio_s if i.audio_s is not None else fallback for i in items)


def estimate(items: list[Item], job: JobState, rates: Rates,
             now: float | None = None) -> dict[str, dict[str, Any]]:
    """For every unfinished item: predicted batch, position in it, and seconds to its result.

    The phase running now counts whole (switch + every item it handles, done ones too)
    minus the time it has run, so finishing items do not make the ETA jump.
    """
    now = time.time() if now is None else now
    known = [i.audio_s for i in items if i.audio_s is not None]
    fallback = sum(known) / len(known) if known else DEFAULT_AUDIO_S
    by_batch: dict[int, list[Item]] = {}
    for i in sorted(items, key=lambda x: x.seq):
        if i.batch is not None:
            by_batch.setdefault(i.batch, []).append(i)
    queued = [i for i in items if i.state == "queued"]
    plan: list[tuple[int, list[Item]]] = sorted(by_batch.items())
    for k in range(0, len(queued), job.batch_size):
        plan.append((job.next_batch + k // job.batch_size, queued[k:k + job.batch_size]))

    out: dict[str, dict[str, Any]] = {}
    t = 0.0
    for b, batch in plan:
        waiting = [i for i in batch if not i.finished]
        if not waiting:
            continue
        live = job.phase_batch == b and job.phase_started is not None
        start = job.phase_started or now
        elapsed = max(0.0, now - start) if live else 0.0
        if live and job.phase == "llm":
            stt = 0.0
        else:
            in_stt = [i for i in batch if i.state in ("queued", "assigned", "transcribing")
                      or (live and (i.stt_finished or 0) >= start)]
            stt = rates.stt_switch_s + _audio(in_stt, fallback) / rates.stt_audio_per_s \
                if in_stt else 0.0
            if live and job.phase == "stt":
                stt = max(0.0, stt - elapsed)
                elapsed = 0.0
        in_llm = [i for i in batch if not i.finished
                  or (live and job.phase == "llm" and (i.eval_finished or 0) >= start)]
        llm = rates.llm_switch_s + len(in_llm) * rates.llm_s_per_item if in_llm else 0.0
        if live and job.phase == "llm":
            llm = max(0.0, llm - elapsed)
        t += stt + llm
        order = [x.item_id for x in batch]
        for it in waiting:
            out[it.item_id] = {"batch": b, "position_in_batch": order.index(it.item_id) + 1,
                               "eta_s": round(t, 1)}
    return out
