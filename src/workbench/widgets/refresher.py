"""Background refresh of widgets from the store, and waits that let the user click.

The refresher is a daemon thread that only *reads* the store and sets widget traits:
ipywidgets sends trait changes over the kernel's thread-safe IOPub channel, so the
dashboard stays live while the cell that displayed it has long returned and the kernel
runs other cells. Commands (Cancel/Resume) come from button clicks on the kernel's main
thread, never from this thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from workbench.store import JobRow, Store
from workbench.store.status import FINISHED
from workbench.widgets.snapshot import Snapshot

log = logging.getLogger("workbench.widgets")

_LIVE: weakref.WeakSet[Refresher] = weakref.WeakSet()


class Refresher:
    """Call `tick()` every `interval` s on a daemon thread until `stop()`.

    `tick` returns True while something is still moving; once it returns False the
    refresher slows to `idle_interval` (finished jobs change only when someone resumes
    them). Exceptions in `tick` are logged and kept in `last_error`; they never kill the
    thread, because a dashboard must survive a busy database or a deleted job folder.
    """

    def __init__(self, tick: Callable[[], bool], *, interval: float = 1.0,
                 idle_interval: float | None = None, name: str = "workbench-refresher",
                 on_exit: Callable[[], None] | None = None) -> None:
        if interval <= 0:
            raise ValueError(f"refresh interval must be > 0 seconds, got {interval}")
        self.tick = tick
        self.interval = interval
        self.idle_interval = idle_interval if idle_interval is not None else interval * 5
        self.name = name
        self.on_exit = on_exit
        self.ticks = 0
        self.errors = 0
        self.last_error: BaseException | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Refresher:
        if not self.running:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
            _LIVE.add(self)
        return self

    def poke(self) -> None:
        """Refresh now rather than at the next tick (e.g. after a click changed a job)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        self._thread = None

    def _loop(self) -> None:
        busy = True
        try:
            while not self._stop.is_set():
                try:
                    busy = bool(self.tick())
                except Exception as e:  # keep the dashboard alive; show nothing stale as fresh
                    self.errors += 1
                    self.last_error = e
                    log.warning("%s: refresh failed: %s", self.name, e, exc_info=True)
                self.ticks += 1
                self._wake.wait(self.interval if busy else self.idle_interval)
                self._wake.clear()
        finally:
            if self.on_exit is not None:
                try:
                    self.on_exit()
                except Exception:
                    log.debug("%s: on_exit failed", self.name, exc_info=True)


class LiveWidget:
    """A widget kept fresh by a `Refresher` (dashboard, job panel): poke, close, display.

    Displayed in a notebook it leaves a static snapshot beside itself (`snapshot`), kept
    up to date by `refreshed()`, so a saved notebook still shows it without a kernel.
    """

    widget: Any
    refresher: Refresher | None = None
    snapshot: Snapshot | None = None
    #: other snapshots that show this widget (a submit form's, once it holds this panel)
    mirrors: list[Snapshot]

    def enable_snapshot(self, what: str, reattach: str) -> None:
        """Call once `widget` is built: adds the marker that hides the snapshot while live."""
        self.snapshot = Snapshot(self.snapshot_html, what=what, reattach=reattach)
        self.widget.children = (*self.widget.children, self.snapshot.marker)

    def snapshot_html(self) -> str:
        """The widget as static HTML (subclasses say what matters)."""
        return ""

    def summary(self) -> str:
        """One line of text for frontends that cannot show widgets."""
        return type(self).__name__

    def refreshed(self, *, changed: bool = False) -> None:
        """After a refresh: replace the saved snapshot (at once when a status changed)."""
        for snap in [self.snapshot, *getattr(self, "mirrors", [])]:
            if snap is None:
                continue
            try:
                snap.update(force=changed)
            except Exception:  # a snapshot must never break the live view
                log.debug("snapshot update failed", exc_info=True)

    def poke(self) -> None:
        """Refresh soon (after a click), not at the next tick."""
        if self.refresher is not None:
            self.refresher.poke()

    def close(self) -> None:
        """Stop the background refresh and remove the widgets from the page."""
        if self.refresher is not None:
            self.refresher.stop()
        for part in self.parts():
            part.close()
        self.widget.close()

    def parts(self) -> list[Any]:
        """Child views with their own `close()`."""
        return []

    def _ipython_display_(self) -> None:
        if self.snapshot is None:
            from IPython.display import display

            display(self.widget)
            return
        self.snapshot.display(self.widget, self.summary())

    def _repr_mimebundle_(self, **kw: Any) -> dict[str, Any] | None:
        return self.widget._repr_mimebundle_(**kw)  # type: ignore[no-any-return]


def stop_all() -> int:
    """Stop every live refresher of this process (e.g. before shutting a kernel down)."""
    live = list(_LIVE)
    for r in live:
        r.stop()
    return len(live)


def wait_until(done: Callable[[], bool], *, timeout: float | None = None,
               poll_s: float = 0.2) -> bool:
    """Block until `done()` is true; False on timeout.

    A cell blocked here cannot handle widget clicks: the kernel queues them until the
    cell returns. (jupyter-ui-poll used to work around that, but it calls
    `kernel.do_one_iteration()`, which ipykernel 7.4 no longer has; clicks stay queued.)
    In a notebook, use `await wait_until_async(...)` to keep the buttons working.
    """
    passed = _deadline(timeout)
    while not done():
        if passed():
            return False
        time.sleep(poll_s)
    return True


async def wait_until_async(done: Callable[[], bool], *, timeout: float | None = None,
                           poll_s: float = 0.2) -> bool:
    """`await` until `done()` is true; False on timeout. Widget clicks keep working.

    A notebook cell that awaits hands the kernel's event loop back between polls, and
    ipykernel (7.x) dispatches widget messages while an awaiting cell holds the shell,
    so a click on Cancel during the wait reaches its handler at once.
    """
    passed = _deadline(timeout)
    while not done():
        if passed():
            return False
        await asyncio.sleep(poll_s)
    return True


def _deadline(timeout: float | None) -> Callable[[], bool]:
    """A clock for `timeout` seconds from now: True once they have passed (never for None)."""
    at = None if timeout is None else time.monotonic() + timeout
    return lambda: at is not None and time.monotonic() > at


def wait_for_job(store: Store, job_id: str, timeout: float | None = None) -> JobRow:
    """Block until the job is finished; its final row. TimeoutError says where it still is."""
    if not wait_until(lambda: store.get(job_id).status in FINISHED, timeout=timeout):
        raise _still(store, job_id, timeout)
    return store.get(job_id)


async def wait_for_job_async(store: Store, job_id: str, timeout: float | None = None) -> JobRow:
    """`await` until the job is finished (clicks keep working); its final row."""
    if not await wait_until_async(lambda: store.get(job_id).status in FINISHED, timeout=timeout):
        raise _still(store, job_id, timeout)
    return store.get(job_id)


def _still(store: Store, job_id: str, timeout: float | None) -> TimeoutError:
    return TimeoutError(f"job {job_id} still {store.get(job_id).status.value} after {timeout} s")
