"""The one daemon thread per process that scans every tracked engine for leaks and long
transactions (see :mod:`dbconf.pooling.leaks`, which creates it on the first ``install()`` with
``leak_detection`` and resets it in forked children)."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any, Protocol

__all__ = ["Monitor", "Scanned"]

log = logging.getLogger("dbconf.leaks")


class Scanned(Protocol):
    """What the monitor needs of a tracker (:class:`dbconf.pooling.leaks.LeakTracker`)."""

    database: str
    checkouts: dict[int, Any]

    def interval(self) -> float: ...

    def scan(self, now: float) -> None: ...


class Monitor:
    """The one daemon thread of the process that scans every live tracker."""

    def __init__(self) -> None:
        self.trackers: weakref.WeakSet[Scanned] = weakref.WeakSet()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.pid = os.getpid()

    def add(self, tracker: Scanned) -> None:
        self.trackers.add(tracker)
        self.wake.set()  # a shorter threshold may need a shorter interval

    def start(self) -> None:
        with self.lock:
            if self.thread is None:
                thread = threading.Thread(target=self._run, name="dbconf-leak-monitor", daemon=True)
                thread.start()
                self.thread = thread

    def _run(self) -> None:
        wake = self.wake
        while True:
            trackers = list(self.trackers)
            interval = min((t.interval() for t in trackers), default=1.0)
            now = time.monotonic()
            for tracker in trackers:
                try:
                    tracker.scan(now)
                except Exception:  # never let the monitor die
                    log.exception("leak monitor: scanning %r failed", tracker.database)
            del trackers
            wake.wait(min(max(interval, 0.01), 1.0))
            wake.clear()

    def after_fork(self) -> None:
        """In a forked child (threads do not survive fork): fresh lock and event, no thread
        (the next checkout starts one), none of the parent's checkouts. A no-op in the
        process that created the monitor (the hook can be called without a fork)."""
        if os.getpid() == self.pid:
            return
        self.pid = os.getpid()
        self.thread = None
        self.lock = threading.Lock()
        self.wake = threading.Event()
        for tracker in list(self.trackers):
            tracker.checkouts.clear()  # the parent's checkouts; the child gets a fresh pool
