"""Pause, don't burn: a circuit breaker for a backend that stopped answering.

Without it every request spends its own retries against a dead server (50 requests to a
closed port: 250 retries in 72 s; 50,000 at concurrency 16: ~15 h of retrying). With it,
`threshold` consecutive transient failures that say "the backend is gone" (no answer,
timeouts, 5xx; not 429, which is the server answering) *open* the breaker: the engine
stops dispatching, requests in flight come back to its queue instead of becoming error
lines, and one cheap probe (GET /models) is sent with backoff up to `probe_every_s`.
When a probe answers the breaker closes and dispatch resumes with the queued requests.
If the backend stays away longer than `deadline_s` the engine gives up with
`BackendUnreachable` and the job becomes `interrupted` (resumable), not `completed`.

Thread-safe: request threads record outcomes, the dispatching thread probes. Engine-
agnostic: the Ray backend can open it on replica deaths (`failures.classify`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from workbench.engines.failures import Failure


def clock_time(wall: float) -> str:
    """HH:MM:SS in local time (the job message's "since 12:03:10")."""
    return time.strftime("%H:%M:%S", time.localtime(wall))


class CircuitBreaker:
    def __init__(self, threshold: int = 5, probe_every_s: float = 10.0, deadline_s: float = 900.0,
                 first_probe_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = max(1, threshold)
        self.probe_every_s = probe_every_s
        self.deadline_s = deadline_s
        self.first_probe_s = min(first_probe_s, probe_every_s)
        self.clock = clock
        self._lock = threading.Lock()
        self.consecutive = 0
        #: monotonic and wall-clock start of the current outage (None: closed)
        self.opened_at: float | None = None
        self.since_wall: float | None = None
        self.last: Failure | None = None
        self.next_probe_at = 0.0
        self._probe_delay = self.first_probe_s
        #: counters over the breaker's life: outages, probes, seconds spent paused
        self.outages = 0
        self.probes = 0
        self.paused_s = 0.0

    # -- outcomes of real requests (any thread) --------------------------------------
    def success(self) -> None:
        """The backend answered (success or a final error: it is there)."""
        with self._lock:
            self.consecutive = 0

    def failure(self, failure: Failure) -> bool:
        """Record a failure; True when the breaker is open afterwards."""
        with self._lock:
            if not failure.stops_backend:
                return self.opened_at is not None
            self.last = failure
            self.consecutive += 1
            if self.opened_at is None and self.consecutive >= self.threshold:
                self._open(failure)
            return self.opened_at is not None

    def _open(self, failure: Failure) -> None:
        self.opened_at = self.clock()
        self.since_wall = time.time()
        self.outages += 1
        self._probe_delay = self.first_probe_s
        wait = self._probe_delay
        if failure.retry_after_s is not None:
            wait = max(wait, min(failure.retry_after_s, self.probe_every_s * 6))
        self.next_probe_at = self.opened_at + wait

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    # -- probing (the dispatching thread) --------------------------------------------
    def probe_due(self) -> bool:
        return self.opened_at is not None and self.clock() >= self.next_probe_at

    def seconds_to_probe(self) -> float:
        return max(0.0, self.next_probe_at - self.clock()) if self.opened_at is not None else 0.0

    def probed(self, answered: bool) -> float | None:
        """The probe's outcome. Returns the outage's length when this probe closed it."""
        with self._lock:
            self.probes += 1
            if self.opened_at is None:
                return None
            now = self.clock()
            if answered:
                length = now - self.opened_at
                self.paused_s += length
                self.opened_at = self.since_wall = None
                self.consecutive = 0
                return length
            self._probe_delay = min(self.probe_every_s, self._probe_delay * 2)
            self.next_probe_at = now + self._probe_delay
            return None

    def expired(self) -> bool:
        """Open for longer than the deadline: give up (the job becomes interrupted)."""
        return self.opened_at is not None and self.clock() - self.opened_at > self.deadline_s

    def outage_s(self) -> float:
        return self.clock() - self.opened_at if self.opened_at is not None else 0.0

    def message(self, waiting: int | None = None) -> str:
        """"server unreachable since 12:03:10, retrying every 10 s" (+ what failed)."""
        if self.since_wall is None:
            return "server reachable"
        what = f" ({self.last.described()})" if self.last is not None else ""
        queued = f"; {waiting} requests to re-send" if waiting else ""
        return (f"server unreachable since {clock_time(self.since_wall)}, retrying every"
                f" {self.probe_every_s:g} s{what}{queued}")

    def stats(self) -> dict[str, float | int]:
        return {"outages": self.outages, "probes": self.probes,
                "paused_s": round(self.paused_s + self.outage_s(), 1)}
