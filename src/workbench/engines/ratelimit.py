"""An asyncio token bucket: at most `rpm` requests a minute per model, waits interruptible.

Hosted APIs (Gemini, OpenAI-compatible gateways) refuse requests beyond a per-model rate
with 429. Waiting before sending is cheaper than being refused and retrying, so every call
takes a token first. The wait races a stop event: on cancel, every waiter leaves at once
instead of draining the queue one interval at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class Stopped(Exception):
    """The caller's stop event fired while waiting: nothing was sent."""


async def sleep_or_stop(seconds: float, stop: asyncio.Event | None) -> None:
    """Sleep `seconds`, or raise Stopped as soon as `stop` is set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    if stop.is_set():
        raise Stopped()
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    except TimeoutError:
        return
    raise Stopped()


class RateLimiter:
    """Token bucket refilled at `rpm / 60` tokens a second, holding at most `burst` tokens.

    `burst=1` spaces requests evenly (the safest reading of a per-minute quota);
    a larger burst lets a quiet model catch up. Waiters are served first come, first served.
    """

    def __init__(self, rpm: float, burst: float = 1.0) -> None:
        if rpm <= 0:
            raise ValueError(f"rpm must be > 0, got {rpm}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rpm = float(rpm)
        self.burst = float(burst)
        self.interval = 60.0 / self.rpm
        self._tokens = self.burst
        self._last = time.monotonic()
        self._lock: asyncio.Lock | None = None
        self.granted = 0
        #: monotonic times of the latest grants (to report the rate actually achieved)
        self.recent: deque[float] = deque(maxlen=1000)

    def __repr__(self) -> str:
        return f"RateLimiter(rpm={self.rpm:g}, burst={self.burst:g})"

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) / self.interval)
        self._last = now

    async def acquire(self, stop: asyncio.Event | None = None) -> float:
        """Take one token; returns how long we waited (seconds)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        start = time.monotonic()
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1:
                    self._tokens -= 1
                    self.granted += 1
                    self.recent.append(time.monotonic())
                    return time.monotonic() - start
                await sleep_or_stop((1 - self._tokens) * self.interval, stop)

    def penalize(self) -> None:
        """The server said 429 despite our pacing: empty the bucket so the next call waits."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)
