"""Leak detection, long-transaction warnings, pool status and typed pool exhaustion.

With ``leak_detection:`` set, every checkout records who holds the pooled connection (since
when, which thread, up to 16 ``(code, instruction)`` pairs of the caller's stack with
library frames skipped (SQLAlchemy, dbconf, contextlib, methods of Session subclasses: see
:func:`dbconf.pooling.leak_records.is_library_frame`); resolved to file:line only when shown).
dbconf's :class:`QueuePool` reports its checkouts and checkins itself; other pools through pool
events. ONE lazily started daemon thread per process scans every tracked engine (weak
references) a few times per threshold and logs a WARNING on ``dbconf.leaks``, once per
checkout past ``threshold`` and once per transaction past ``long_transaction`` (timed by
wrapping the engine's own dialect, :func:`dbconf.pooling.leak_records.watch_transactions`).

Async engines (:func:`dbconf.runtime.builder.build_async_engine` installs all this on their
``sync_engine``): :class:`AsyncQueuePool` is the twin of :class:`QueuePool`, and an
:class:`AsyncLeakTracker` records the asyncio task's name with the thread and walks from
SQLAlchemy's greenlet into the suspended frames of the awaiting coroutines, so the holder is
``task 'name' (thread 'MainThread')`` at the application's file:line (asyncio's own frames
are library frames too).

Process-wide state exists only once an engine with ``leak_detection`` is built (importing
dbconf creates none): the monitor (one thread, a weak set of trackers), whose reset in a
forked child runs from dbconf's single ``os.register_at_fork`` hook
(:func:`dbconf.pooling.forking.call_in_forked_child`). Each engine's tracker hangs on the engine.

Cost per checkout (``python -m bench``, case 4): no event dispatch on a QueuePool; a stack
walk that tells library frames by a per-tracker ``{id(code): (code, skipped)}`` cache and keeps
code objects unresolved; one reused :class:`~dbconf.pooling.leak_records.Checkout` per pooled
connection; each transaction hook stores one ``time.monotonic()`` (or None).

:class:`~dbconf.pooling.pools.QueuePool` (re-exported here) reports its checkouts and checkins to
the tracker itself; :func:`install` names it and gives it its tracker and its pre-ping window.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from types import CodeType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import pool as sa_pool
from sqlalchemy.pool import ConnectionPoolEntry

from dbconf.config import DatabaseConfig, LeakDetectionConfig
from dbconf.pooling.forking import call_in_forked_child
from dbconf.pooling.leak_monitor import Monitor
from dbconf.pooling.leak_records import (
    MAX_FRAMES,
    Checkout,
    ConnectionHolder,
    PoolStatus,
    format_stack,
    is_library_frame,
    watch_transactions,
    where,
)
from dbconf.pooling.pools import AsyncQueuePool, QueuePool, pool_class_kwargs, pre_ping_window

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


__all__ = [
    "AsyncLeakTracker",
    "AsyncQueuePool",
    "ConnectionHolder",
    "LeakTracker",
    "PoolStatus",
    "QueuePool",
    "install",
    "pool_class_kwargs",
    "pool_status",
]

log = logging.getLogger("dbconf.leaks")

_TRACKER = "_dbconf_leak_tracker"  # the engine: its LeakTracker
_SKIP_CACHE = 4096  # code objects remembered per tracker as library frames or not


class LeakTracker:
    """The checkouts of one engine, and the thresholds to warn at."""

    def __init__(self, database: str, config: LeakDetectionConfig, monitor: Monitor) -> None:
        self.database = database
        self.threshold = config.threshold
        self.long_transaction = config.long_transaction
        self.checkouts: dict[int, Checkout] = {}
        self.monitor = monitor
        self._skip: dict[int, tuple[CodeType, bool]] = {}  # id(code) -> code, library frame?

    def checked_out(self, record: Any) -> None:
        """``record`` (a pool entry) was handed out: note when, by whom, from where."""
        try:
            entry: Checkout = record._dbconf_leak
        except AttributeError:  # the entry's first checkout; the Checkout is reused after
            entry = record._dbconf_leak = Checkout()
        raw: list[Any] = []
        self._walk(sys._getframe(1), raw, 0)
        entry.raw = raw
        entry._stack = None
        entry.thread = threading.current_thread()
        entry.tx_since = None
        entry.since = time.monotonic()
        self.checkouts[id(record)] = entry
        if self.monitor.thread is None:
            self.monitor.start()

    def _walk(self, f: Any, raw: list[Any], kept: int) -> int:
        """Append the ``(code, lasti)`` of ``f`` and its callers to ``raw``, library frames
        skipped, until MAX_FRAMES are kept; returns how many are kept."""
        append = raw.append
        skip = self._skip
        while f is not None:
            code = f.f_code
            known = skip.get(id(code))  # by id: equal code objects can differ in module
            if known is not None and known[0] is code:
                skipped = known[1]
            else:
                if len(skip) >= _SKIP_CACHE:  # code made at run time (exec) must not pile up
                    skip.clear()
                skipped = is_library_frame(f)
                skip[id(code)] = (code, skipped)  # holding the code keeps its id unique
            if not skipped:
                append(code)
                append(f.f_lasti)
                kept += 1
                if kept >= MAX_FRAMES:
                    break
            f = f.f_back
        return kept

    def checked_in(self, record: Any) -> None:
        entry = self.checkouts.pop(id(record), None)
        if entry is not None:
            entry.since = entry.tx_since = None

    # pool events, for pools other than dbconf's QueuePool (which calls the two above)
    def on_checkout(self, _dbapi: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        self.checked_out(record)

    def on_checkin(self, _dbapi: Any, record: ConnectionPoolEntry) -> None:
        self.checked_in(record)

    def holders(self) -> tuple[ConnectionHolder, ...]:
        now = time.monotonic()
        found = []
        for e in self.checkouts.copy().values():
            since, tx = e.since, e.tx_since
            if since is not None:
                found.append((since, tx, e))
        found.sort(key=lambda item: item[0])
        return tuple(
            ConnectionHolder(
                thread=e.thread_name,
                acquired_at=where(e.stack),
                age=now - since,
                transaction_age=None if tx is None else now - tx,
                stack=e.stack,
                task=e.task,
            )
            for since, tx, e in found
        )

    def interval(self) -> float:
        limits = [x for x in (self.threshold, self.long_transaction) if x is not None]
        return min(limits) / 4 if limits else 1.0

    def scan(self, now: float) -> None:
        threshold, long_tx = self.threshold, self.long_transaction
        for entry in list(self.checkouts.copy().values()):
            since, tx = entry.since, entry.tx_since
            if since is None:
                continue
            if threshold is not None and entry.warned != since and now - since >= threshold:
                entry.warned = since
                self._warn("a connection has been checked out", now - since, entry, since)
            if (
                long_tx is not None
                and tx is not None
                and entry.tx_warned != tx
                and now - tx >= long_tx
            ):
                entry.tx_warned = tx
                self._warn("a transaction has been open", now - tx, entry, since)

    def _warn(self, what: str, age: float, entry: Checkout, since: float) -> None:
        stack, thread, task = entry.stack, entry.thread_name, entry.task
        if entry.since != since:  # checked in (and maybe out again) meanwhile: not a leak
            return
        limit = "threshold" if what.startswith("a connection") else "long_transaction"
        holder = f"thread {thread!r}" if task is None else f"task {task!r} (thread {thread!r})"
        log.warning(
            "database %r: %s for %.1fs (leak_detection.%s %gs) by %s, acquired at %s; "
            "close the session (use a with block) or commit sooner. Acquired at "
            "(most recent call last):\n%s",
            self.database,
            what,
            age,
            limit,
            getattr(self, limit),
            holder,
            where(stack),
            format_stack(stack),
            extra={
                "dbconf_database": self.database,
                "dbconf_age": age,
                "dbconf_acquired_at": where(stack),
                "dbconf_task": task,
            },
        )


class AsyncLeakTracker(LeakTracker):
    """The tracker of an async engine's ``sync_engine``: the holder is the asyncio task (and
    its thread), and the stack is the application's coroutines.

    SQLAlchemy checks connections out inside the greenlet it runs each awaited operation in;
    that greenlet's frames end at SQLAlchemy's ``greenlet_spawn``. The awaiting coroutines
    are the suspended frames of its parent greenlet (``gr_frame``), walked on from there.
    """

    def __init__(self, database: str, config: LeakDetectionConfig, monitor: Monitor) -> None:
        super().__init__(database, config, monitor)
        # async engines need greenlet (sqlalchemy[asyncio]); it ships no type hints
        from greenlet import getcurrent  # type: ignore[import-untyped,unused-ignore]

        self._getcurrent = getcurrent

    def checked_out(self, record: Any) -> None:
        try:
            entry: Checkout = record._dbconf_leak
        except AttributeError:
            entry = record._dbconf_leak = Checkout()
        raw: list[Any] = []
        kept = self._walk(sys._getframe(1), raw, 0)
        g = self._getcurrent().parent
        while g is not None and kept < MAX_FRAMES:
            kept = self._walk(g.gr_frame, raw, kept)
            g = g.parent
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no running loop: a sync call on the sync_engine
            task = None
        entry.raw = raw
        entry._stack = None
        entry.thread = threading.current_thread()
        entry.task = None if task is None else task.get_name()
        entry.tx_since = None
        entry.since = time.monotonic()
        self.checkouts[id(record)] = entry
        if self.monitor.thread is None:
            self.monitor.start()


_monitor: Monitor | None = None  # created by the first install() with leak_detection


def _get_monitor() -> Monitor:
    global _monitor
    if _monitor is None:
        _monitor = Monitor()
        call_in_forked_child(_monitor.after_fork)
    return _monitor


def install(engine: sa.Engine, name: str, cfg: DatabaseConfig) -> None:
    """Name the pool for its errors; with ``leak_detection`` set, track checkouts."""
    pool = engine.pool
    tracker = None
    if cfg.leak_detection is not None:
        monitor = _get_monitor()
        kind = AsyncLeakTracker if engine.dialect.is_async else LeakTracker
        tracker = kind(name, cfg.leak_detection, monitor)
        if not isinstance(pool, QueuePool):  # dbconf's QueuePool calls the tracker itself
            event.listen(engine, "checkout", tracker.on_checkout)
            event.listen(engine, "checkin", tracker.on_checkin)
        event.listen(engine, "detach", tracker.on_checkin)  # never returns to the pool
        if tracker.long_transaction is not None:
            watch_transactions(engine.dialect)
        setattr(engine, _TRACKER, tracker)
        monitor.add(tracker)
    if isinstance(pool, QueuePool):
        pool._dbconf_database = name
        pool._dbconf_tracker = tracker
        pool._dbconf_window = pre_ping_window(cfg)  # else pre_ping on: pings every checkout


def pool_status(name: str, engine: sa.Engine | AsyncEngine) -> PoolStatus:
    """The pool counts of ``engine`` (an async engine's are those of its ``sync_engine``)
    and, with leak detection on, who holds connections."""
    engine = getattr(engine, "sync_engine", engine)
    pool = engine.pool
    tracker: LeakTracker | None = getattr(engine, _TRACKER, None)
    holders = tracker.holders() if tracker is not None else ()
    queue = pool if isinstance(pool, sa_pool.QueuePool) else None
    return PoolStatus(
        database=name,
        pool=type(pool).__name__,
        size=queue.size() if queue else None,
        checked_out=queue.checkedout() if queue else (len(holders) if tracker else None),
        overflow=max(queue.overflow(), 0) if queue else None,
        idle=queue.checkedin() if queue else None,
        timeout=queue.timeout() if queue else None,
        tracking=tracker is not None,
        holders=holders,
    )
