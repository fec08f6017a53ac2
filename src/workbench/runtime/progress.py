"""One pace per job: a smoothed rate, tokens/s and an ETA, published in `job.metrics`.

Why one module: the dashboard row, a panel's speed tiles and a phased panel's table used
to compute their own speeds (a viewer-side meter, a per-run average, a per-item model)
and contradicted each other. Now the runner's `JobContext` owns a `Pace`, feeds it the
job's counters at every flush, and publishes what it says; every widget reads those
numbers (`eta_now` turns the published ETA into "now" between two flushes).

How the rate is smoothed, and why:

- **Exponentially weighted in time** (`Ewma`): units and seconds both decay with time
  constant `tau_s`, so the rate is `Σ units / Σ seconds` over the recent past — steady
  for a steady job, following a change within about `tau_s`.
- **Load-time gap excluded**: time is measured from the first burst of completions on
  (`begin()` restarts it once a model is loaded; `loading()` does that for you): what came
  before (a model load, a queue wait) is not the job's pace.
- **Bursts**: continuous batching finishes many requests in the same step, then none for
  a while, and a flush may see one burst in two looks. Each burst's units count over the
  time from its start to the next burst's start; the wait since the last completion
  counts only when it is longer than twice the usual gap (a stall slows the rate down, a
  normal pause between bursts does not), and the ETA counts down in between.
- **No jumps**: a new ETA never differs from the previous one (counted down) by more than
  a factor of two; a real change gets through in a few refreshes.

`loading()` is the model-load step made visible: while the engine loads, a ticker thread
re-says "loading <model> (12 s)" every second, then says what comes next.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class _Store(Protocol):
    def close(self) -> None: ...


class JobContext(Protocol):
    """What `loading()` needs of a runner's context (`runtime.context.JobContext`, which
    imports this module: a Protocol keeps the import one-way)."""

    completed: int
    failed: int
    metrics: dict[str, Any]
    pace: Pace

    @property
    def store(self) -> _Store: ...

    def progress(self, message: str | None = None, **metrics: Any) -> None: ...

#: completions closer together than this belong to one burst (one warm-up, one gap)
BURST_S = 0.25
#: an ETA never moves by more than this factor between two snapshots
MAX_ETA_STEP = 2.0
#: the metrics a Pace publishes; a runner that publishes one of these itself wins
PACE_KEYS = frozenset({"units_per_s", "requests_per_s", "tokens_per_s", "eta_s", "eta_at",
                       "elapsed_s"})


class Ewma:
    """Units per second of a growing counter, weighted exponentially in time.

    The counter is seen only now and then (at flushes), so one burst of completions may
    arrive split over two looks. Increases that follow one another within `merge_s` after
    a much longer pause are one burst; the rate is then the units of each burst over the
    time from its start to the next burst's start, which is exact for periodic bursts
    and for a steady stream alike, and does not see the pause before the first burst.
    """

    def __init__(self, tau_s: float = 30.0, merge_s: float = 1.0) -> None:
        if tau_s <= 0:
            raise ValueError(f"tau_s must be > 0 seconds, got {tau_s}")
        self.tau_s = tau_s
        self.merge_s = merge_s
        self.reset()

    def reset(self, value: float | None = None, now: float | None = None) -> None:
        """Start afresh: time before the next increase does not count."""
        self.units = 0.0  # decayed units of the finished bursts
        self.seconds = 0.0  # decayed seconds from each finished burst's start to the next's
        self.value = value
        self.at = now  # the last increase (or the reset)
        self.burst_start: float | None = None
        self.burst_units = 0.0
        self.burst_gap = 0.0  # the pause before the current burst
        self.gap_mean: float | None = None  # usual time between burst starts
        self.gap_max = 0.0  # the longest recent one (decays)

    @property
    def known(self) -> bool:
        return self.seconds > 0 and self.units > 0

    def observe(self, value: float, now: float) -> None:
        """The counter stands at `value` at time `now` (monotonic seconds)."""
        if self.value is None or self.at is None:
            self.value, self.at = value, now
            return
        dv = value - self.value
        if dv < 0:  # a counter that went back (a recount): start afresh from here
            self.reset(value, now)
            return
        if dv == 0:
            return
        gap = now - self.at
        same_burst = (self.burst_start is not None and gap <= self.merge_s
                      and now - self.burst_start < self.merge_s and gap < self.burst_gap / 4)
        if same_burst:
            self.burst_units += dv
        else:
            if self.burst_start is not None:
                span = now - self.burst_start
                decay = math.exp(-span / self.tau_s)
                self.units = self.units * decay + self.burst_units
                self.seconds = self.seconds * decay + span
                self.gap_mean = span if self.gap_mean is None else 0.7 * self.gap_mean + 0.3 * span
                self.gap_max = max(span, self.gap_max * decay)
            self.burst_start, self.burst_units, self.burst_gap = now, dv, gap
        self.value, self.at = value, now

    def stall_s(self, now: float) -> float:
        """How much longer than usual the counter has not moved (0 while it keeps pace)."""
        if self.at is None or not self.known:
            return 0.0
        return max(0.0, now - self.at - 2.0 * max(self.gap_max, self.merge_s))

    def rate(self, now: float) -> float | None:
        """Units/s, or None until a burst after the first one has started."""
        if not self.known:
            return None
        return self.units / (self.seconds + self.stall_s(now))

    def since_last_s(self, now: float) -> float:
        """Time since the last increase, up to one usual gap (what the ETA counts down)."""
        if self.at is None or self.gap_mean is None:
            return 0.0
        return min(max(0.0, now - self.at), self.gap_mean)


class Pace:
    """Rate, tokens/s and ETA of one run of a job, from its counters.

    `observe(done, tokens=..., now=...)` at every counter update; `metrics(now)` for
    the numbers to publish. `done`/`total` are the job's units (requests, cells,
    recordings); `tokens` a cumulative count of generated tokens, when there are any.
    """

    def __init__(self, total: int, done: int = 0, *, tau_s: float = 30.0,
                 unit_key: str = "units_per_s",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.unit_key = unit_key
        self.clock = clock
        self.units = Ewma(tau_s)
        self.tokens = Ewma(tau_s)
        self.done = done
        self.tokens_total = 0
        self.begin(done)

    def begin(self, done: int | None = None, now: float | None = None) -> None:
        """The work starts now (after the model load): earlier time does not count."""
        now = self.clock() if now is None else now
        if done is not None:
            self.done = done
        self.started = now
        self.start_done = self.done
        self.start_tokens = self.tokens_total
        self.units.reset(self.done, now)
        self.tokens.reset(self.tokens_total, now)
        self._eta: tuple[float, float] | None = None  # (eta_s, at) of the last snapshot

    def observe(self, done: int, *, tokens: int | None = None, total: int | None = None,
                now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if total is not None:
            self.total = total
        self.done = done
        self.units.observe(done, now)
        if tokens is not None:
            self.tokens_total = tokens
            self.tokens.observe(tokens, now)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds until done: remaining / smoothed rate, counted down between bursts."""
        now = self.clock() if now is None else now
        remaining = max(self.total - self.done, 0)
        if remaining == 0:
            self._eta = None
            return 0.0
        rate = self.units.rate(now)
        if not rate:
            return None
        raw = max(remaining / rate - self.units.since_last_s(now), 0.0)
        if self._eta is not None:
            prev = self._eta[0] - (now - self._eta[1])
            if prev > 1.0:  # near the end a ratio means nothing; seconds are seconds
                raw = min(max(raw, prev / MAX_ETA_STEP), prev * MAX_ETA_STEP)
        self._eta = (raw, now)
        return raw

    def metrics(self, now: float | None = None) -> dict[str, Any]:
        """What the runner publishes: smoothed rates while running, run averages at the end.

        `eta_at` is the wall-clock time the ETA was computed at, so a viewer can count it
        down between two publications (`eta_now`).
        """
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 0.0)
        finished = self.done >= self.total > 0
        if finished or not self.units.known:
            # the job's own averages (also what a finished job keeps)
            rate = (self.done - self.start_done) / elapsed if elapsed > 0 and finished else None
            tok = ((self.tokens_total - self.start_tokens) / elapsed
                   if elapsed > 0 and finished and self.tokens_total else None)
        else:
            rate = self.units.rate(now)
            tok = self.tokens.rate(now) if self.tokens_total else None
        eta = 0.0 if finished else self.eta(now)
        out: dict[str, Any] = {self.unit_key: _round(rate, 3), "eta_s": _round(eta, 1),
                               "eta_at": round(time.time(), 3), "elapsed_s": round(elapsed, 1)}
        if self.unit_key != "units_per_s":
            out["units_per_s"] = out[self.unit_key]
        if self.tokens_total or tok is not None:
            out["tokens_per_s"] = _round(tok, 1)
        return out


def _round(v: float | None, nd: int) -> float | None:
    return None if v is None else round(v, nd)


def eta_now(metrics: dict[str, Any], now: float | None = None) -> float | None:
    """A published ETA as of `now` (wall clock): counted down since it was computed."""
    eta = metrics.get("eta_s")
    if not isinstance(eta, int | float) or isinstance(eta, bool) or not math.isfinite(eta):
        return None
    at = metrics.get("eta_at")
    if isinstance(at, int | float):
        eta -= max(0.0, (time.time() if now is None else now) - at)
    return max(float(eta), 0.0)


# -- the loading step -------------------------------------------------------------------


class Ticker:
    """Re-say `message (N s)` every `interval` seconds from a thread until `stop()`."""

    def __init__(self, say: Callable[[str], None], message: str, *, interval: float = 1.0,
                 on_exit: Callable[[], None] | None = None) -> None:
        self.say = say
        self.message = message
        self.interval = interval
        self.on_exit = on_exit
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="workbench-ticker", daemon=True)

    def text(self) -> str:
        return f"{self.message} ({time.monotonic() - self.t0:.0f} s)"

    def start(self) -> Ticker:
        self.say(self.text())
        self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.say(self.text())
        finally:
            if self.on_exit is not None:
                self.on_exit()

    def stop(self) -> float:
        """Stop ticking; returns the seconds the step took."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        return time.monotonic() - self.t0


@contextmanager
def loading(ctx: JobContext, message: str, then: str = "running",
            step: AbstractContextManager[T] | None = None) -> Iterator[T | None]:
    """The model-load step, visible: "loading <model> (12 s)" while the body (or `step`'s
    `__enter__`, e.g. a phase that loads its model) runs; then `then` is said and the
    job's pace starts counting (the load is not the job's speed).

        with loading(ctx, f"loading {model}"):
            engine = pool.acquire(spec)

        with loading(ctx, "batch 2: loading the evaluation model",
                     then="batch 2: evaluating 10 transcripts", step=phase) as engine:
            ...  # the phase's work, after its model loaded
    """
    ticker = Ticker(lambda text: ctx.progress(text, step="loading"), message,
                    on_exit=ctx.store.close).start()
    entered = False
    try:
        value = step.__enter__() if step is not None else None
        entered = step is not None
    except BaseException:
        ticker.stop()
        raise
    if step is None:
        try:
            yield None
        finally:
            _loaded(ctx, ticker, then)
        return
    _loaded(ctx, ticker, then)
    try:
        yield value
    except BaseException as e:
        if entered and not step.__exit__(type(e), e, e.__traceback__):
            raise
    else:
        step.__exit__(None, None, None)


def _loaded(ctx: JobContext, ticker: Ticker, then: str) -> None:
    seconds = ticker.stop()
    ctx.metrics.pop("step", None)
    ctx.pace.begin(ctx.completed + ctx.failed)
    ctx.progress(then, load_s=round(seconds, 1))
