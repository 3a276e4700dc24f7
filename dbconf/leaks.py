"""Leak detection, long-transaction warnings, pool status and typed pool exhaustion.

With ``leak_detection:`` set, pool ``checkout``/``checkin`` events record who holds each
pooled connection (since when, which thread, up to 16 ``(code, instruction)`` pairs of the
caller's stack with SQLAlchemy/dbconf/contextlib frames skipped; resolved to file:line only
when shown). ONE lazily started daemon thread per process scans every tracked engine (weak
references) a few times per threshold and logs a WARNING on ``dbconf.leaks``, once per
checkout past ``threshold`` and once per transaction past ``long_transaction``.

:class:`QueuePool` is SQLAlchemy's ``QueuePool`` (same name, options and behaviour) whose
checkout timeout raises :class:`~dbconf.errors.PoolExhaustedError`; the builder uses it
wherever SQLAlchemy would use a ``QueuePool``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy import pool as sa_pool
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.pool import ConnectionPoolEntry

from dbconf.config import DatabaseConfig, LeakDetectionConfig
from dbconf.errors import PoolExhaustedError

__all__ = [
    "ConnectionHolder",
    "LeakTracker",
    "PoolStatus",
    "QueuePool",
    "install",
    "pool_class_kwargs",
    "pool_status",
]

log = logging.getLogger("dbconf.leaks")

Frame = tuple[str, int, str]
_MAX_FRAMES = 16
_SKIP = (
    str(Path(sa.__file__).parent) + os.sep,
    str(Path(__file__).parent) + os.sep,
    contextlib.__file__,
    "<sqlalchemy ",  # SQLAlchemy's generated wrappers
)
_KEY = "dbconf.leaks.checkout"
_TRACKERS: weakref.WeakKeyDictionary[sa.Engine, LeakTracker] = weakref.WeakKeyDictionary()


def _capture() -> list[tuple[CodeType, int]]:
    """Up to 16 ``(code, last instruction)`` of the caller's code, innermost first.

    Nothing is resolved here (not even line numbers): :func:`_resolve` does it when needed.
    """
    frames: list[tuple[CodeType, int]] = []
    append = frames.append
    f: Any = sys._getframe(1)
    skip = _SKIP
    while f is not None:
        code = f.f_code
        if not code.co_filename.startswith(skip):
            append((code, f.f_lasti))
            if len(frames) >= _MAX_FRAMES:
                break
        f = f.f_back
    return frames


def _lineno(code: CodeType, lasti: int) -> int:
    for start, end, line in code.co_lines():
        if start <= lasti < end and line is not None:
            return line
    return code.co_firstlineno


def _resolve(raw: list[tuple[CodeType, int]]) -> tuple[Frame, ...]:
    return tuple((code.co_filename, _lineno(code, lasti), code.co_name) for code, lasti in raw)


def _where(stack: tuple[Frame, ...]) -> str:
    return f"{stack[0][0]}:{stack[0][1]}" if stack else "<unknown>"


def _format_stack(stack: tuple[Frame, ...]) -> str:
    return "\n".join(
        f'  File "{filename}", line {lineno}, in {name}'
        for filename, lineno, name in reversed(stack)
    )


class _Checkout:
    """One checkout in progress (mutable; read by the monitor without a lock)."""

    __slots__ = ("_stack", "raw", "since", "thread", "tx_since", "tx_warned", "warned")

    def __init__(self, since: float, thread: str, raw: list[tuple[CodeType, int]]) -> None:
        self.since = since
        self.thread = thread
        self.raw = raw
        self._stack: tuple[Frame, ...] | None = None
        self.warned = False
        self.tx_since: float | None = None
        self.tx_warned = False

    @property
    def stack(self) -> tuple[Frame, ...]:
        if self._stack is None:
            self._stack = _resolve(self.raw)
        return self._stack


@dataclass(frozen=True)
class ConnectionHolder:
    """Who holds a checked-out connection: thread, where it was acquired, for how long."""

    thread: str
    acquired_at: str
    age: float
    transaction_age: float | None
    stack: tuple[Frame, ...]

    def describe(self) -> str:
        tx = self.transaction_age
        tx_text = "" if tx is None else f", in a transaction for {tx:.1f}s"
        return f"thread {self.thread!r} at {self.acquired_at} for {self.age:.1f}s{tx_text}"


@dataclass(frozen=True)
class PoolStatus:
    """A snapshot of a database's pool; counts are None for pools that do not keep them.

    ``holders`` lists the current checkouts (oldest first) only when ``leak_detection`` is
    set for the database; without it nothing is recorded and ``holders`` is empty.
    """

    database: str
    pool: str
    size: int | None
    checked_out: int | None
    overflow: int | None
    idle: int | None
    timeout: float | None
    tracking: bool
    holders: tuple[ConnectionHolder, ...]


def _entry(conn: Any) -> _Checkout | None:
    try:
        entry: _Checkout | None = conn.info.get(_KEY)
    except Exception:  # first-connect adapters and raw DBAPI connections keep no pool info
        return None
    return entry


class LeakTracker:
    """The checkouts of one engine, and the thresholds to warn at."""

    def __init__(self, database: str, config: LeakDetectionConfig) -> None:
        self.database = database
        self.threshold = config.threshold
        self.long_transaction = config.long_transaction
        self.checkouts: dict[int, _Checkout] = {}

    def on_checkout(self, _dbapi: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        entry = _Checkout(time.monotonic(), threading.current_thread().name, _capture())
        self.checkouts[id(record)] = entry
        record.info[_KEY] = entry
        if _monitor.thread is None:
            _monitor.start()

    def on_checkin(self, _dbapi: Any, record: ConnectionPoolEntry) -> None:
        self.checkouts.pop(id(record), None)
        record.info.pop(_KEY, None)

    def on_begin(self, conn: Any) -> None:
        """``conn``: a pool-proxied connection or a Connection (both share the record's info)."""
        entry = _entry(conn)
        if entry is not None:
            entry.tx_since = time.monotonic()
            entry.tx_warned = False

    def on_end(self, conn: Any) -> None:
        entry = _entry(conn)
        if entry is not None:
            entry.tx_since = None

    def holders(self) -> tuple[ConnectionHolder, ...]:
        now = time.monotonic()
        entries = sorted(self.checkouts.copy().values(), key=lambda e: e.since)
        return tuple(
            ConnectionHolder(
                thread=e.thread,
                acquired_at=_where(e.stack),
                age=now - e.since,
                transaction_age=None if (tx := e.tx_since) is None else now - tx,
                stack=e.stack,
            )
            for e in entries
        )

    def interval(self) -> float:
        limits = [x for x in (self.threshold, self.long_transaction) if x is not None]
        return min(limits) / 4 if limits else 1.0

    def scan(self, now: float) -> None:
        threshold, long_tx = self.threshold, self.long_transaction
        for entry in list(self.checkouts.copy().values()):
            if threshold is not None and not entry.warned and now - entry.since >= threshold:
                entry.warned = True
                self._warn("a connection has been checked out", now - entry.since, entry)
            tx = entry.tx_since
            if (
                long_tx is not None
                and tx is not None
                and now - tx >= long_tx
                and not entry.tx_warned
            ):
                entry.tx_warned = True
                self._warn("a transaction has been open", now - tx, entry)

    def _warn(self, what: str, age: float, entry: _Checkout) -> None:
        limit = "threshold" if what.startswith("a connection") else "long_transaction"
        log.warning(
            "database %r: %s for %.1fs (leak_detection.%s %gs) by thread %r, acquired at %s; "
            "close the session (use a with block) or commit sooner. Acquired at "
            "(most recent call last):\n%s",
            self.database,
            what,
            age,
            limit,
            getattr(self, limit),
            entry.thread,
            _where(entry.stack),
            _format_stack(entry.stack),
            extra={
                "dbconf_database": self.database,
                "dbconf_age": age,
                "dbconf_acquired_at": _where(entry.stack),
            },
        )


class _Monitor:
    """The one daemon thread of the process that scans every live tracker."""

    def __init__(self) -> None:
        self.trackers: weakref.WeakSet[LeakTracker] = weakref.WeakSet()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.wake = threading.Event()

    def add(self, tracker: LeakTracker) -> None:
        self.trackers.add(tracker)
        self.wake.set()  # a shorter threshold may need a shorter interval

    def start(self) -> None:
        with self.lock:
            if self.thread is None:
                thread = threading.Thread(target=self._run, name="dbconf-leak-monitor", daemon=True)
                thread.start()
                self.thread = thread

    def _run(self) -> None:
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
            self.wake.wait(min(max(interval, 0.01), 1.0))
            self.wake.clear()

    def after_fork(self) -> None:
        self.thread = None  # threads do not survive fork(); the next checkout starts one
        self.lock = threading.Lock()
        for tracker in list(self.trackers):
            tracker.checkouts.clear()  # the parent's checkouts; the child gets a fresh pool


_monitor = _Monitor()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_monitor.after_fork)


class QueuePool(sa_pool.QueuePool):
    """SQLAlchemy's QueuePool whose checkout timeout raises :class:`PoolExhaustedError`."""

    _dbconf_database = "?"
    _dbconf_tracker: LeakTracker | None = None

    def _do_get(self) -> ConnectionPoolEntry:
        try:
            return super()._do_get()
        except PoolExhaustedError:
            raise  # from a nested _do_get (SQLAlchemy retries by recursion)
        except sa_exc.TimeoutError as e:
            tracker = self._dbconf_tracker
            holders = None if tracker is None else [h.describe() for h in tracker.holders()]
            raise PoolExhaustedError(
                self._dbconf_database, self.size(), self._max_overflow, self._timeout, holders
            ) from e

    def recreate(self) -> QueuePool:
        pool = super().recreate()
        assert isinstance(pool, QueuePool)
        pool._dbconf_database = self._dbconf_database
        pool._dbconf_tracker = self._dbconf_tracker
        return pool


def pool_class_kwargs(cfg: DatabaseConfig) -> dict[str, Any]:
    """``{"poolclass": QueuePool}`` where SQLAlchemy would use its QueuePool, else ``{}``."""
    if cfg.pool.class_ == "queue":
        return {"poolclass": QueuePool}
    if cfg.pool.class_ is None and not cfg.is_sqlite_memory:
        url = cfg.sqlalchemy_url
        dialect = url.get_dialect()
        if issubclass(dialect, DefaultDialect) and dialect.get_pool_class(url) is sa_pool.QueuePool:
            return {"poolclass": QueuePool}
    return {}


def _watch_transactions(dialect: sa.Dialect, tracker: LeakTracker) -> None:
    """Wrap this engine's dialect ``do_begin``/``do_commit``/``do_rollback`` (and two-phase).

    Not engine ``begin``/``commit`` events: any engine-level event listener switches every
    statement of the engine onto SQLAlchemy's slower event path (measured: +12% per scope on
    PostgreSQL); the dialect instance belongs to this engine alone, and the pool's
    reset-on-return rollback goes through ``do_rollback`` too.
    """

    def wrap(method: str, mark: Callable[[Any], None]) -> None:
        original = getattr(dialect, method)

        def wrapper(conn: Any, *args: Any, **kwargs: Any) -> Any:
            mark(conn)
            return original(conn, *args, **kwargs)

        setattr(dialect, method, wrapper)

    wrap("do_begin", tracker.on_begin)
    wrap("do_begin_twophase", tracker.on_begin)
    for method in ("do_commit", "do_rollback", "do_commit_twophase", "do_rollback_twophase"):
        wrap(method, tracker.on_end)


def install(engine: sa.Engine, name: str, cfg: DatabaseConfig) -> None:
    """Name the pool for its errors; with ``leak_detection`` set, track checkouts."""
    pool = engine.pool
    tracker = None
    if cfg.leak_detection is not None:
        tracker = LeakTracker(name, cfg.leak_detection)
        event.listen(engine, "checkout", tracker.on_checkout)
        event.listen(engine, "checkin", tracker.on_checkin)
        event.listen(engine, "detach", tracker.on_checkin)
        if tracker.long_transaction is not None:
            _watch_transactions(engine.dialect, tracker)
        _TRACKERS[engine] = tracker
        _monitor.add(tracker)
    if isinstance(pool, QueuePool):
        pool._dbconf_database = name
        pool._dbconf_tracker = tracker


def pool_status(name: str, engine: sa.Engine) -> PoolStatus:
    """The pool counts of ``engine`` and, with leak detection on, who holds connections."""
    pool = engine.pool
    tracker = _TRACKERS.get(engine)
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
