"""Connection-pool metrics, kept cheap: the runtime core behind
:mod:`dbconf.integrations.opentelemetry` and :mod:`dbconf.integrations.prometheus` (this module
imports neither OpenTelemetry nor prometheus_client).

What a checkout costs with metrics on (dbconf's :class:`~dbconf.pooling.pools.QueuePool` and
``AsyncQueuePool`` call :class:`PoolStats` themselves, no pool event): two
``time.perf_counter()`` calls around the pool's ``_do_get`` and one at checkin, and two
``deque.append`` of a float. Everything else is read or recorded **at collection time**:

- ``count`` (state ``used``/``idle``): the pool's own ``checkedout()``/``checkedin()``;
- ``max`` (``size + max_overflow``), ``idle.max`` (``size``: a QueuePool keeps no more idle),
  ``idle.min`` (0: SQLAlchemy opens connections on demand and keeps no minimum);
- ``pending_requests``: the threads (or asyncio tasks) waiting in the pool's queue now;
- ``timeouts``: a counter bumped only on the (rare) checkout timeout;
- the ``create_time``/``wait_time``/``use_time`` durations: buffered (bounded, the oldest are
  dropped past :data:`BUFFER` when nobody collects) and handed to the exporters' histograms
  when they collect (:func:`flush`): an OpenTelemetry SDK ``histogram.record`` costs 8-18 µs,
  which on the hot path would be 12-15 % of a PostgreSQL scope.

Where the pool name and the exporters come from: a :class:`~dbconf.runtime.registry.Registry` whose
profile sets ``metrics:`` (or an exporter's ``instrument(registry)``) calls :func:`attach`
with its profile name and its sinks for each database config (and replica config) it holds;
:func:`dbconf.runtime.builder.build_engine` calls :func:`install`, which looks the config up
(weakly, by identity) and names the pool ``<profile>.<database>`` (``<profile>.<db>.replicas[0]``).
Configs never attached get no instrumentation at all. Exporter modules are loaded by name
when a profile enables them (``metrics: {opentelemetry: true}``), the one place this runtime
layer reaches an integration, and only through :data:`EXPORTERS`.

Only dbconf's queue pools are measured (the default of every server database, sync and
async, and of SQLite files); ``pool.class`` null, static or singleton pools report their
``max`` only when they have one, and no counts.

After ``os.fork()`` every :class:`PoolStats` starts again from zero in the child (its pools
are new and empty, see :mod:`dbconf.pooling.forking`); Prometheus multiprocess files are per
process.
"""

from __future__ import annotations

import importlib
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import pool as sa_pool

from dbconf.errors import ConfigError, Problem
from dbconf.pooling.forking import call_in_forked_child

__all__ = [
    "BUFFER",
    "EXPORTERS",
    "MetricsSink",
    "PoolSnapshot",
    "PoolStats",
    "attach",
    "flush",
    "install",
    "instrument",
    "load_exporter",
    "pools",
]

BUFFER = 10_000  # durations kept per pool and kind between two collections
EXPORTERS = {
    "opentelemetry": ("dbconf.integrations.opentelemetry", "otel"),
    "prometheus": ("dbconf.integrations.prometheus", "prometheus"),
}


@dataclass(frozen=True)
class PoolSnapshot:
    """One pool's gauges at collection time (None: the pool class keeps no such count)."""

    name: str
    used: int | None
    idle: int | None
    max: int | None
    idle_max: int | None
    idle_min: int | None
    pending: int | None
    timeouts: int


class MetricsSink(Protocol):
    """An exporter's end: gets each flushed batch of durations (seconds) of ``pool``."""

    def record(
        self,
        pool: PoolStats,
        create: Sequence[float],
        wait: Sequence[float],
        use: Sequence[float],
    ) -> None: ...


class PoolStats:
    """The counters and buffered durations of one engine's pool (its successive pools after
    ``dispose()``: read through the engine, weakly held)."""

    __slots__ = ("__weakref__", "_engine", "create", "name", "sinks", "timeouts", "use", "wait")

    def __init__(self, name: str, engine: sa.Engine, sinks: tuple[MetricsSink, ...]) -> None:
        self.name = name
        self._engine = weakref.ref(engine)
        self.sinks = sinks
        self.timeouts = 0
        self.create: deque[float] = deque(maxlen=BUFFER)
        self.wait: deque[float] = deque(maxlen=BUFFER)
        self.use: deque[float] = deque(maxlen=BUFFER)

    @property
    def alive(self) -> bool:
        return self._engine() is not None

    def reset(self) -> None:
        """Forget everything (a forked child: its pools are new)."""
        self.timeouts = 0
        self.create.clear()
        self.wait.clear()
        self.use.clear()

    def snapshot(self) -> PoolSnapshot | None:
        """The gauges now, read from the engine's current pool; None once the engine is gone."""
        engine = self._engine()
        if engine is None:
            return None
        pool = engine.pool
        if not isinstance(pool, sa_pool.QueuePool):
            return PoolSnapshot(self.name, None, None, None, None, None, None, self.timeouts)
        size, overflow = pool.size(), pool._max_overflow
        return PoolSnapshot(
            self.name,
            used=pool.checkedout(),
            idle=pool.checkedin(),
            max=size + overflow if overflow >= 0 else None,
            idle_max=size,
            idle_min=0,
            pending=_waiting(pool),
            timeouts=self.timeouts,
        )

    def flush(self) -> None:
        """Hand the durations buffered since the last flush to every sink."""
        create, wait, use = _drain(self.create), _drain(self.wait), _drain(self.use)
        if create or wait or use:
            for sink in self.sinks:
                sink.record(self, create, wait, use)


def _drain(buffer: deque[float]) -> list[float]:
    out: list[float] = []
    pop = buffer.popleft
    try:
        while True:
            out.append(pop())
    except IndexError:  # empty: appends racing with this loop are kept for the next flush
        return out


def _waiting(pool: sa_pool.QueuePool) -> int:
    """How many checkouts wait in the pool's queue now: the waiters of SQLAlchemy's
    ``Queue.not_empty`` condition (threads), or the pending getters of the asyncio queue of
    ``AsyncAdaptedQueue`` (tasks); 0 when the queue keeps no such list."""
    queue: Any = pool._pool
    condition = getattr(queue, "not_empty", None)
    if condition is not None:
        return len(getattr(condition, "_waiters", ()))
    inner = queue.__dict__.get("_queue")  # AsyncAdaptedQueue creates it on first use
    getters = getattr(inner, "_getters", ())
    return sum(1 for future in getters if not future.done())


# --- which configs are measured, under which name, by which sinks ----------------------

_lock = threading.Lock()
_scopes: dict[int, tuple[weakref.ref[Any], str, tuple[MetricsSink, ...]]] = {}
_pools: weakref.WeakSet[PoolStats] = weakref.WeakSet()
_strong: dict[int, PoolStats] = {}  # id(engine) → stats, dropped with the engine
_hooked = False


def attach(configs: Iterable[Any], profile: str, sinks: Sequence[MetricsSink]) -> None:
    """Measure the engines later built from each config (a database's or a replica's) as pool
    ``<profile>.<name given to the builder>`` and hand their durations to ``sinks`` (added to
    any already attached: OpenTelemetry and Prometheus may both export one pool)."""
    with _lock:
        for cfg in configs:
            key = id(cfg)
            old = _scopes.get(key)
            current: tuple[MetricsSink, ...] = ()
            if old is not None and old[0]() is cfg:
                current = old[2]
            merged = current + tuple(s for s in sinks if s not in current)
            ref = weakref.ref(cfg, _forget(key))
            _scopes[key] = (ref, profile, merged)


def _forget(key: int) -> Callable[[Any], None]:
    def forget(_ref: Any) -> None:
        _scopes.pop(key, None)

    return forget


def _scope(cfg: Any) -> tuple[str, tuple[MetricsSink, ...]] | None:
    entry = _scopes.get(id(cfg))
    if entry is None or entry[0]() is not cfg:
        return None
    return entry[1], entry[2]


def install(engine: sa.Engine, name: str, cfg: Any) -> PoolStats | None:
    """Instrument ``engine`` (a sync engine, or an async engine's ``sync_engine``) when its
    config was attached; returns its :class:`PoolStats`, else None (nothing installed)."""
    scope = _scope(cfg)
    if scope is None:
        return None
    profile, sinks = scope
    stats = PoolStats(f"{profile}.{name}", engine, sinks)
    pool = engine.pool
    if hasattr(pool, "_dbconf_metrics"):  # dbconf's QueuePool: it calls the stats itself
        pool._dbconf_metrics = stats
    _time_connects(engine.dialect, stats)
    global _hooked
    with _lock:
        if not _hooked:
            call_in_forked_child(_after_fork)
            _hooked = True
        _pools.add(stats)
        _strong[id(engine)] = stats
        weakref.finalize(engine, _strong.pop, id(engine), None)
    return stats


def _time_connects(dialect: sa.Dialect, stats: PoolStats) -> None:
    """Time each new DBAPI connection (``create_time``) by wrapping this engine's own dialect
    instance's ``connect``, which the pool's creator looks up on every call."""
    original = dialect.connect
    clock = time.perf_counter
    append = stats.create.append

    def connect(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        conn = original(*args, **kwargs)
        append(clock() - start)
        return conn

    dialect.connect = connect  # type: ignore[method-assign]


def pools() -> list[PoolStats]:
    """Every measured pool whose engine is alive."""
    return [stats for stats in list(_pools) if stats.alive]


def flush() -> None:
    """Hand every pool's buffered durations to its sinks (exporters call it as they collect)."""
    for stats in pools():
        stats.flush()


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    for stats in list(_pools):
        stats.reset()


def load_exporter(kind: str, origin: str = "", path: str = "") -> Any:
    """The exporter module of ``metrics: {<kind>: true}`` (``origin``/``path``: where that
    was written); a missing package is a :class:`ConfigError` naming the extra to install."""
    module, extra = EXPORTERS[kind]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        problem = f"needs the {extra} extra: pip install 'dbconf[{extra}]' ({e.name} is missing)"
        raise ConfigError([Problem(origin, path or f"metrics.{kind}", problem)]) from None


def instrument(databases: Iterable[Any], profile: str, sinks: Sequence[MetricsSink]) -> None:
    """:func:`attach` the configs of ``databases`` (:class:`~dbconf.runtime.database.Database`
    objects) and of their replicas; engines already built (sync, and the async engines of
    live event loops) are instrumented now. Replica engines already built are not: call this
    before the first use."""
    dbs = list(databases)
    configs: list[Any] = []
    for db in dbs:
        configs.append(db.config)
        configs.extend(getattr(db.config, "replica_configs", ()))
    attach(configs, profile, sinks)
    for db in dbs:
        built = [db.engine] if db.engine_built else []
        built += [engine.sync_engine for engine in getattr(db, "_async_engines", ())]
        for engine in built:
            stats = _strong.get(id(engine))
            if stats is None:
                install(engine, db.name, db.config)
            else:
                stats.sinks += tuple(s for s in sinks if s not in stats.sinks)
