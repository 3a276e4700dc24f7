"""dbconf's queue pools: typed pool exhaustion, leak tracking without events, and the
``pool.pre_ping`` bypass window.

:class:`QueuePool` is SQLAlchemy's ``QueuePool`` (same name, options and behaviour) whose
checkout timeout raises :class:`~dbconf.errors.PoolExhaustedError`; the builder uses it
wherever SQLAlchemy would use a ``QueuePool`` (and :class:`AsyncQueuePool` wherever it would
use an ``AsyncAdaptedQueuePool``, and for SQLite files with aiosqlite, which SQLAlchemy before
2.0.38 does not pool). :mod:`dbconf.pooling.leaks` tells it its database name and leak tracker.

**Pre-ping window** (``pool.pre_ping: 1s``, HikariCP's ``aliveBypassWindowMs``): the engine
keeps SQLAlchemy's own ``pool_pre_ping=True``, so a failed ping is handled exactly as
SQLAlchemy does it (the connection is invalidated and replaced, the caller sees nothing). A
pooled connection checked in less than the window ago is handed out marked ``fresh`` — the
flag SQLAlchemy sets on a newly opened connection to skip its ping — so it goes out without
the round trip. The cost is one ``time.monotonic()`` per checkin and per checkout. A
connection killed within the window is not noticed at checkout: its first statement raises a
:class:`~dbconf.errors.DisconnectError` (which ``run_in_transaction`` retries).
"""

from __future__ import annotations

import time
from time import perf_counter
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import pool as sa_pool
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.pool import ConnectionPoolEntry

from dbconf.config import DatabaseConfig
from dbconf.errors import PoolExhaustedError

if TYPE_CHECKING:
    from dbconf.pooling.leaks import LeakTracker
    from dbconf.pooling.pool_metrics import PoolStats

__all__ = ["AsyncQueuePool", "QueuePool", "pool_class_kwargs", "pre_ping_window"]

_NEVER = float("-inf")


def pre_ping_window(cfg: DatabaseConfig) -> float | None:
    """``pool.pre_ping`` as a bypass window in seconds, or None (``true``/``false``/unset)."""
    value = cfg.pool.pre_ping
    return None if value is None or isinstance(value, bool) else float(value)


class QueuePool(sa_pool.QueuePool):
    """SQLAlchemy's QueuePool whose checkout timeout raises :class:`PoolExhaustedError`.

    With leak detection it tells the tracker of each checkout and checkin itself: pool
    ``checkout``/``checkin`` listeners would cost an event dispatch each and, without
    pre-ping, move every checkout onto SQLAlchemy's slower listener path.
    """

    _dbconf_database = "?"
    _dbconf_tracker: LeakTracker | None = None
    _dbconf_window: float | None = None  # pool.pre_ping as a duration (seconds)
    _dbconf_metrics: PoolStats | None = None  # dbconf.pooling.pool_metrics, when measured

    def _do_get(self) -> ConnectionPoolEntry:
        stats = self._dbconf_metrics
        if stats is not None:
            start = perf_counter()
        try:
            record = super()._do_get()
        except PoolExhaustedError:
            raise  # from a nested _do_get (SQLAlchemy retries by recursion)
        except sa_exc.TimeoutError as e:
            if stats is not None:
                stats.timeouts += 1  # rare; pool_metrics reads it at collection time
            tracker = self._dbconf_tracker
            holders = None if tracker is None else [h.describe() for h in tracker.holders()]
            raise PoolExhaustedError(
                self._dbconf_database, self.size(), self._max_overflow, self._timeout, holders
            ) from e
        if stats is not None:
            now = perf_counter()
            stats.wait.append(now - start)
            record._dbconf_out = now  # type: ignore[attr-defined]
        if self._dbconf_tracker is not None:
            self._dbconf_tracker.checked_out(record)
        window = self._dbconf_window
        if (
            window is not None
            and time.monotonic() - getattr(record, "_dbconf_idle", _NEVER) < window
        ):
            record.fresh = True  # type: ignore[attr-defined]  # used within the window: no ping
        return record

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if self._dbconf_tracker is not None:
            self._dbconf_tracker.checked_in(record)
        stats = self._dbconf_metrics
        if stats is not None and hasattr(record, "_dbconf_out"):  # out since metrics were on
            stats.use.append(perf_counter() - record._dbconf_out)
        if self._dbconf_window is not None:
            record._dbconf_idle = time.monotonic()  # type: ignore[attr-defined]
        super()._do_return_conn(record)

    def recreate(self) -> QueuePool:
        pool = super().recreate()
        assert isinstance(pool, QueuePool)
        pool._dbconf_database = self._dbconf_database
        pool._dbconf_tracker = self._dbconf_tracker
        pool._dbconf_window = self._dbconf_window
        pool._dbconf_metrics = self._dbconf_metrics
        return pool


class AsyncQueuePool(QueuePool, sa_pool.AsyncAdaptedQueuePool):
    """SQLAlchemy's ``AsyncAdaptedQueuePool`` (its asyncio queue, same options) with
    :class:`QueuePool`'s behaviour: :class:`PoolExhaustedError` on checkout timeout, checkouts
    told to the tracker without event dispatch. The async engine's default queue pool."""


def pool_class_kwargs(cfg: DatabaseConfig, *, use_async: bool = False) -> dict[str, Any]:
    """``{"poolclass": QueuePool}`` where SQLAlchemy would use its QueuePool (with
    ``use_async``: ``AsyncQueuePool`` where it would use ``AsyncAdaptedQueuePool``, and for
    ``pool.class: queue``, which an async engine cannot take as SQLAlchemy's QueuePool), else
    ``{}``."""
    ours, theirs = (
        (AsyncQueuePool, sa_pool.AsyncAdaptedQueuePool)
        if use_async
        else (QueuePool, sa_pool.QueuePool)
    )
    if cfg.pool.class_ == "queue":
        return {"poolclass": ours}
    url = cfg.async_url if use_async else cfg.sqlalchemy_url
    if cfg.pool.class_ is None and not cfg.is_sqlite_memory and url is not None:
        if use_async and cfg.backend == "sqlite":  # a file: SQLAlchemy 2.0 < 2.0.38 NullPool
            return {"poolclass": ours}  # pooled like the sync side, on 2.0 and 2.1 alike
        dialect = url.get_dialect()
        if issubclass(dialect, DefaultDialect) and dialect.get_pool_class(url) is theirs:
            return {"poolclass": ours}
    return {}
