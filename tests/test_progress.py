"""The one pace every widget shows (`runtime.progress`), on recorded completion timelines.

The timelines are synthetic and deterministic (no clock, no threads): a load gap then a
steady rate, continuous-batching bursts, a slowdown, a stall. Each is replayed the way a
runner sees it: completions at their times, a snapshot at every refresh (twice a second).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest

from workbench.runtime.progress import Ewma, Pace, eta_now

REFRESH_S = 0.5


def replay(completions: Iterable[float], total: int, *, until: float | None = None,
           begin_at: float = 0.0) -> list[tuple[float, int, float | None, float | None]]:
    """(time, done, eta_s, rate) at every refresh, for completions at the given times."""
    times = sorted(completions)
    assert len(times) == total
    now = [begin_at]
    pace = Pace(total, clock=lambda: now[0])
    out = []
    i, t = 0, begin_at
    end = until if until is not None else times[-1] + REFRESH_S
    while t <= end + 1e-9:
        while i < total and times[i] <= t:
            i += 1
        now[0] = t
        pace.observe(i)
        m = pace.metrics()
        out.append((t, i, m["eta_s"], m["units_per_s"]))
        t = round(t + REFRESH_S, 6)
    return out


def replay_on_records(completions: Iterable[float], total: int, due_s: float = 0.5,
                      beat_s: float = 1.0) -> list[tuple[float, int, float | None, float | None]]:
    """As a worker sees it: a look when a result arrives and `due_s` have passed since the
    last one, and one at every heartbeat (`beat_s`, starting at an odd phase)."""
    times = sorted(completions)
    looks = sorted({t for t in times} | {0.37 + k * beat_s
                                         for k in range(int(times[-1] / beat_s) + 2)})
    now = [0.0]
    pace = Pace(total, clock=lambda: now[0])
    out, last, i = [], -due_s, 0
    for t in looks:
        is_result = i < total and times[i] == t
        while i < total and times[i] <= t:
            i += 1
        if is_result and t - last < due_s and i < total:
            continue
        last = now[0] = t
        pace.observe(i)
        m = pace.metrics()
        out.append((t, i, m["eta_s"], m["units_per_s"]))
        if i == total:
            break
    return out


def true_finish(completions: list[float]) -> float:
    return max(completions)


def at_fraction(trace: list[tuple[float, int, float | None, float | None]], total: int,
                fraction: float) -> tuple[float, int, float | None, float | None]:
    return next(x for x in trace if x[1] >= fraction * total)


def max_jump(trace: list[tuple[float, int, float | None, float | None]], floor_s: float = 5.0) -> float:
    """Largest ratio between two consecutive ETAs (both known and above `floor_s`)."""
    worst = 1.0
    for (_, _, a, _), (_, _, b, _) in zip(trace, trace[1:], strict=False):
        if a is not None and b is not None and a > floor_s and b > floor_s:
            worst = max(worst, a / b, b / a)
    return worst


def steady(n: int, rate: float, start: float = 0.0) -> list[float]:
    return [start + (k + 1) / rate for k in range(n)]


def test_steady_job_eta_at_20_percent_and_no_jumps() -> None:
    c = steady(1000, rate=2.0)  # 500 s of work
    for trace in (replay(c, 1000), replay_on_records(c, 1000)):
        t, done, eta, rate = at_fraction(trace, 1000, 0.2)
        remaining = true_finish(c) - t
        assert eta is not None and abs(eta - remaining) <= 0.25 * remaining, (t, eta, remaining)
        assert rate == pytest.approx(2.0, rel=0.05)
        assert max_jump(trace) <= 2.0


def test_load_gap_before_the_first_completion_is_not_the_pace() -> None:
    # 40 s of model load inside the measured time, then a steady 1 request/s
    c = steady(300, rate=1.0, start=40.0)
    trace = replay(c, 300)
    assert all(eta is None for tt, _, eta, _ in trace if tt < 40.0)  # no guess from nothing
    t, done, eta, rate = at_fraction(trace, 300, 0.2)
    remaining = true_finish(c) - t
    assert eta is not None and abs(eta - remaining) <= 0.25 * remaining, (t, eta, remaining)
    assert rate == pytest.approx(1.0, rel=0.1)
    assert max_jump(trace) <= 2.0


def test_bursts_of_continuous_batching() -> None:
    # 32 requests finish together every 8 s (a window of 32, equal lengths), after a 20 s load
    c = [20.0 + 8.0 * (k // 32 + 1) + 0.001 * (k % 32) for k in range(640)]  # 160 s of work
    for trace in (replay(c, 640), replay_on_records(c, 640)):
        t, done, eta, rate = at_fraction(trace, 640, 0.2)
        remaining = true_finish(c) - t
        assert eta is not None and abs(eta - remaining) <= 0.25 * remaining, (t, eta, remaining)
        assert rate == pytest.approx(4.0, rel=0.05)
        assert max_jump(trace) <= 2.0
    trace = replay(c, 640)
    # between two bursts the rate holds and the ETA counts down rather than jumping
    mid = [x for x in trace if 20 + 8 * 6 < x[0] < 20 + 8 * 7]
    assert len({x[3] for x in mid}) == 1
    etas = [x[2] for x in mid]
    assert all(a >= b for a, b in zip(etas, etas[1:], strict=False))


def test_slowdown_is_followed_without_jumps() -> None:
    c = steady(200, rate=4.0) + steady(200, rate=1.0, start=50.0)  # 4/s for 50 s, then 1/s
    trace = replay(c, 400)
    assert max_jump(trace) <= 2.0
    t, done, eta, rate = next(x for x in trace if x[0] >= 150.0)  # 100 s into the slow part
    remaining = true_finish(c) - t
    assert rate == pytest.approx(1.0, rel=0.2)
    assert abs(eta - remaining) <= 0.25 * remaining, (t, eta, remaining)


def test_a_stall_slows_the_rate_down() -> None:
    c = steady(100, rate=2.0)  # done at 50 s ... then nothing
    pace_now = [0.0]
    pace = Pace(200, clock=lambda: pace_now[0])
    for k, tc in enumerate(c, start=1):
        pace_now[0] = tc
        pace.observe(k)
    before = pace.metrics()["units_per_s"]
    pace_now[0] = c[-1] + 60.0  # a minute without a completion
    pace.observe(100)
    after = pace.metrics()["units_per_s"]
    assert before == pytest.approx(2.0, rel=0.05)
    assert after < before / 2


def test_finished_job_keeps_its_average_and_eta_zero() -> None:
    now = [0.0]
    pace = Pace(10, clock=lambda: now[0])
    now[0] = 5.0
    pace.observe(10, tokens=400)
    m = pace.metrics()
    assert m["eta_s"] == 0.0 and m["units_per_s"] == 2.0 and m["tokens_per_s"] == 80.0
    assert m["elapsed_s"] == 5.0


def test_tokens_rate_and_unit_alias() -> None:
    now = [0.0]
    pace = Pace(1000, clock=lambda: now[0], unit_key="requests_per_s")
    for k in range(1, 101):
        now[0] = k * 0.5
        pace.observe(k, tokens=30 * k)
    m = pace.metrics()
    assert m["requests_per_s"] == m["units_per_s"] == pytest.approx(2.0, rel=0.02)
    assert m["tokens_per_s"] == pytest.approx(60.0, rel=0.02)


def test_begin_drops_what_came_before() -> None:
    now = [0.0]
    pace = Pace(100, done=40, clock=lambda: now[0])  # a resumed job: 40 already done
    now[0] = 30.0  # loading
    pace.begin()
    for k in range(1, 41):
        now[0] = 30.0 + k
        pace.observe(40 + k)
    m = pace.metrics()
    assert m["units_per_s"] == pytest.approx(1.0, rel=0.05)
    assert m["eta_s"] == pytest.approx(20.0, rel=0.25)
    assert m["elapsed_s"] == 40.0


def test_counter_going_back_restarts_the_estimate() -> None:
    e = Ewma(10.0)
    for k, t in enumerate([0, 1, 2, 3, 4]):
        e.observe(k * 10, t)
    assert e.rate(4) == pytest.approx(10.0)
    e.observe(5, 5)  # a recount put it back
    assert e.rate(5) is None
    with pytest.raises(ValueError, match="tau_s"):
        Ewma(0)


def test_eta_now_counts_down_between_publications() -> None:
    assert eta_now({"eta_s": 30.0, "eta_at": 1000.0}, now=1010.0) == 20.0
    assert eta_now({"eta_s": 5.0, "eta_at": 1000.0}, now=1010.0) == 0.0
    assert eta_now({"eta_s": None}) is None and eta_now({}) is None
    assert eta_now({"eta_s": math.inf}) is None
