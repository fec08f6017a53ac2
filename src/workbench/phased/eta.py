"""Estimated waits from rates measured in earlier phases, kept in the store.

Each finished phase updates a running average in `store.stats`:

- STT: audio seconds transcribed per wall-clock second, per Whisper model and device;
- evaluation: completion tokens per second and tokens per evaluation, per LLM;
- both: the cost of a phase switch (load + unload), measured from the phase timeline.

An item's ETA is the time until its batch's evaluation phase ends: what is left of the
phase running now, then every batch ahead of it, then its own — each as switch cost +
work / rate. Before anything was measured, conservative defaults stand in and the
status says `eta_basis="default"`.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from workbench.phased.items import Item, JobState
from workbench.store import Store

#: Used until a phase on this machine measured the real number.
DEFAULTS = {"stt_audio_per_s": 5.0, "stt_switch_s": 5.0, "llm_tokens_per_s": 10.0,
            "llm_switch_s": 30.0, "llm_tokens_per_item": 150.0}
DEFAULT_AUDIO_S = 30.0
WEIGHT_NEW = 0.5  # running average: each new phase counts half


class Rates(BaseModel):
    stt_audio_per_s: float
    stt_switch_s: float
    llm_tokens_per_s: float
    llm_switch_s: float
    llm_tokens_per_item: float
    measured: list[str]

    @property
    def basis(self) -> str:
        if len(self.measured) == len(DEFAULTS):
            return "measured"
        return "partial" if self.measured else "default"


def _key(name: str, model_key: str) -> str:
    return f"phased.rate.{name}.{model_key}"


def record_rate(store: Store, name: str, model_key: str, value: float) -> float:
    """Fold one measurement into the running average; returns the new average."""
    if value <= 0:
        return value
    k = _key(name, model_key)
    old = store.get_stat(k)
    avg = value if not old else (1 - WEIGHT_NEW) * float(old["value"]) + WEIGHT_NEW * value
    store.set_stat(k, {"value": avg, "n": (old or {}).get("n", 0) + 1, "last": value,
                       "at": time.time()})
    return avg


def load_rates(store: Store, stt_key: str, llm_key: str) -> Rates:
    vals: dict[str, Any] = {}
    measured = []
    for name, default in DEFAULTS.items():
        got = store.get_stat(_key(name, stt_key if name.startswith("stt") else llm_key))
        if got:
            vals[name] = float(got["value"])
            measured.append(name)
        else:
            vals[name] = default
    return Rates(**vals, measured=measured)


def _audio(items: list[Item], fallback: float) -> float:
    return sum(i.audio_s if i.audio_s is not None else fallback for i in items)


def estimate(items: list[Item], job: JobState, rates: Rates,
             now: float | None = None) -> dict[str, dict[str, Any]]:
    """For every unfinished item: predicted batch, position in it, and seconds to its result."""
    now = time.time() if now is None else now
    known = [i.audio_s for i in items if i.audio_s is not None]
    fallback = sum(known) / len(known) if known else DEFAULT_AUDIO_S

    def stt_cost(batch: list[Item]) -> float:
        todo = [i for i in batch if i.state in ("queued", "assigned", "transcribing")]
        return rates.stt_switch_s + _audio(todo, fallback) / rates.stt_audio_per_s if todo else 0.0

    def llm_cost(batch: list[Item]) -> float:
        todo = [i for i in batch if not i.finished]
        return (rates.llm_switch_s + len(todo) * rates.llm_tokens_per_item / rates.llm_tokens_per_s
                if todo else 0.0)

    formed: dict[int, list[Item]] = {}
    members: dict[int, list[str]] = {}
    for i in sorted(items, key=lambda x: x.seq):
        if i.batch is not None:
            members.setdefault(i.batch, []).append(i.item_id)
            if not i.finished:
                formed.setdefault(i.batch, []).append(i)
    queued = [i for i in items if i.state == "queued"]
    next_b = job.next_batch
    plan: list[tuple[int, list[Item]]] = sorted(formed.items())
    for k in range(0, len(queued), job.batch_size):
        plan.append((next_b + k // job.batch_size, queued[k:k + job.batch_size]))

    out: dict[str, dict[str, Any]] = {}
    t = 0.0
    for b, batch in plan:
        stt, llm = stt_cost(batch), llm_cost(batch)
        if job.phase_batch == b and job.phase_started is not None:
            elapsed = now - job.phase_started
            if job.phase == "stt":
                stt = max(0.0, stt - elapsed)
            elif job.phase == "llm":
                stt, llm = 0.0, max(0.0, llm - elapsed)
        t += stt + llm
        order = members.get(b) or [x.item_id for x in batch]
        for it in batch:
            out[it.item_id] = {"batch": b, "position_in_batch": order.index(it.item_id) + 1,
                               "eta_s": round(t, 1)}
    return out
