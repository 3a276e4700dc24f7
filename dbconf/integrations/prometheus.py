"""Prometheus connection-pool metrics (needs the ``prometheus`` extra: ``pip install
'dbconf[prometheus]'``; importing :mod:`dbconf` never imports prometheus_client).

.. code-block:: python

    from dbconf.integrations.prometheus import instrument, metrics_app

    dbs = dbconf.load("production")
    instrument(dbs)                      # or metrics: {prometheus: true} in the profile
    app.mount("/metrics", metrics_app())  # FastAPI / Starlette / any ASGI app

The set of :mod:`dbconf.integrations.opentelemetry` under Prometheus names, each labelled
``db_client_connection_pool_name`` = ``<profile>.<database>``:
``db_client_connection_count`` (with ``db_client_connection_state`` = idle | used),
``db_client_connection_max``, ``…_idle_max``, ``…_idle_min``, ``…_pending_requests``
(gauges), ``db_client_connection_timeouts_total`` (counter) and the histograms
``db_client_connection_create_time_seconds``, ``…_wait_time_seconds``,
``…_use_time_seconds``.

**When the values are written.** A checkout never touches prometheus_client:
:func:`update` reads the pools and hands the buffered durations to the histograms. It runs at
every scrape of a registry the metrics are registered in (a collector registered ahead of
them), from :func:`metrics_app` on each request, and, in multiprocess mode, from a daemon
thread of each process every ``interval`` seconds (default 1 s), so that the workers that are
not scraped write their values too.

**Multiprocess mode** (gunicorn, ``uvicorn --workers``: prometheus_client's own mode, on when
``PROMETHEUS_MULTIPROC_DIR`` is set before prometheus_client is imported; each process writes
its own files). Gauge modes: every gauge uses ``livesum``: connections, capacity
(max, idle max/min) and waiting checkouts are summed over the *live* processes, the whole
service's view (the files of a dead worker are dropped by ``mark_process_dead``: call
``prometheus_client.multiprocess.mark_process_dead(worker.pid)`` from gunicorn's
``child_exit`` hook; uvicorn has no such hook, so restart with an empty directory). Counters
and histograms are summed over every process, dead ones included, as prometheus_client does.
Pass ``gauge_mode="liveall"`` to :func:`instrument` for one series per process (a ``pid``
label) instead. :func:`metrics_app` serves a :class:`~prometheus_client.multiprocess.
MultiProcessCollector` registry in that mode. After ``os.fork()`` the child starts from zero
(new pools, its own files: prometheus_client notices the new pid) and its flush thread is
started again.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.asgi import make_asgi_app
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from dbconf.pooling import pool_metrics
from dbconf.pooling.forking import call_in_forked_child
from dbconf.pooling.pool_metrics import PoolStats

__all__ = ["PrometheusSink", "instrument", "metrics_app", "multiprocess", "update"]

POOL = "db_client_connection_pool_name"
STATE = "db_client_connection_state"
GaugeMode = Literal["livesum", "liveall", "sum", "all", "max", "min", "livemax", "livemin"]
BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, float("inf"))

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def multiprocess() -> bool:
    """Whether prometheus_client runs in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _UpdateFirst:
    """Registered ahead of the metrics: a scrape of the registry updates them first."""

    def __init__(self, sink: PrometheusSink) -> None:
        self._sink = weakref.ref(sink)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        sink = self._sink()
        if sink is not None:
            sink.update()
        return []


class PrometheusSink:
    """The metrics of one prometheus_client registry for every pool it is handed."""

    def __init__(
        self, registry: CollectorRegistry | None = REGISTRY, gauge_mode: GaugeMode = "livesum"
    ):
        labels = (POOL,)
        p = "db_client_connection_"

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
            return Gauge(
                p + name, doc, (*labels, *extra), registry=None, multiprocess_mode=gauge_mode
            )

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(p + name, doc, labels, registry=None, unit="seconds", buckets=BUCKETS)

        self.count = gauge("count", "Connections of the pool in each state", (STATE,))
        self.max = gauge("max", "Most connections the pool may open")
        self.idle_max = gauge("idle_max", "Most idle connections the pool keeps")
        self.idle_min = gauge("idle_min", "Fewest idle connections the pool keeps")
        self.pending = gauge("pending_requests", "Checkouts waiting for a connection")
        self.timeouts = Counter(p + "timeouts", "Checkouts that timed out", labels, registry=None)
        self.create = histogram("create_time", "Time to create a new connection")
        self.wait = histogram("wait_time", "Time to obtain a connection from the pool")
        self.use = histogram("use_time", "Time between checkout and return of a connection")
        self._lock = threading.Lock()
        self._seen: weakref.WeakKeyDictionary[PoolStats, int] = weakref.WeakKeyDictionary()
        if registry is not None:
            registry.register(_UpdateFirst(self))
            for metric in self.metrics:
                registry.register(metric)

    @property
    def metrics(self) -> tuple[MetricWrapperBase, ...]:
        return (
            self.count, self.max, self.idle_max, self.idle_min, self.pending,
            self.timeouts, self.create, self.wait, self.use,
        )  # fmt: skip

    def update(self) -> None:
        """Read every pool of this sink now and write its values (and buffered durations)."""
        with self._lock:
            for stats in pool_metrics.pools():
                if self not in stats.sinks:
                    continue
                stats.flush()  # → self.record(...)
                snap = stats.snapshot()
                if snap is None:
                    continue
                name = snap.name
                if snap.used is not None and snap.idle is not None:
                    self.count.labels(name, "used").set(snap.used)
                    self.count.labels(name, "idle").set(snap.idle)
                for gauge, value in (
                    (self.max, snap.max),
                    (self.idle_max, snap.idle_max),
                    (self.idle_min, snap.idle_min),
                    (self.pending, snap.pending),
                ):
                    if value is not None:
                        gauge.labels(name).set(value)
                first = stats not in self._seen
                new = snap.timeouts - self._seen.get(stats, 0)
                if new > 0:
                    self.timeouts.labels(name).inc(new)
                elif first:
                    self.timeouts.labels(name)  # the series exists from the start, at 0
                self._seen[stats] = snap.timeouts

    def record(
        self,
        pool: PoolStats,
        create: Sequence[float],
        wait: Sequence[float],
        use: Sequence[float],
    ) -> None:
        for histogram, values in ((self.create, create), (self.wait, wait), (self.use, use)):
            if values:
                child = histogram.labels(pool.name)
                for value in values:
                    child.observe(value)

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._seen = weakref.WeakKeyDictionary()


_sinks: dict[int, PrometheusSink] = {}
_registries: list[Any] = []  # keeps the id() keys of _sinks unique
_lock = threading.Lock()
_flusher: threading.Thread | None = None
_interval = 1.0


def sink(
    registry: CollectorRegistry | None = REGISTRY, gauge_mode: GaugeMode = "livesum"
) -> PrometheusSink:
    """The one sink of ``registry`` (its metrics are registered there once)."""
    with _lock:
        found = _sinks.get(id(registry))
        if found is None:
            found = _sinks[id(registry)] = PrometheusSink(registry, gauge_mode)
            _registries.append(registry)
        return found


def update() -> None:
    """Write the current values of every pool to its Prometheus metrics (what a scrape, the
    ASGI app and the multiprocess flush thread do)."""
    for found in list(_sinks.values()):
        found.update()


def _flush_forever() -> None:
    while True:
        time.sleep(_interval)
        try:
            update()
        except Exception:  # noqa: S112 - never let the flush thread die; try next time
            continue


def _start_flusher() -> None:
    global _flusher
    if _flusher is None or not _flusher.is_alive():
        _flusher = threading.Thread(target=_flush_forever, name="dbconf-prometheus", daemon=True)
        _flusher.start()


def _after_fork() -> None:
    global _lock, _flusher
    _lock = threading.Lock()
    for found in _sinks.values():
        found.after_fork()
    _flusher = None
    if multiprocess():
        _start_flusher()


_hooked = False


def instrument(
    registry: Iterable[Any],
    *,
    prometheus_registry: CollectorRegistry | None = REGISTRY,
    gauge_mode: GaugeMode = "livesum",
    interval: float = 1.0,
) -> PrometheusSink:
    """Export the pool metrics of every database (and replica) of ``registry`` (a
    :class:`~dbconf.Registry`) into ``prometheus_registry`` (default: prometheus_client's
    ``REGISTRY``; None: registered nowhere, for multiprocess-only use). In multiprocess mode a
    daemon thread writes them every ``interval`` seconds. Engines already built are
    instrumented too (replica engines excepted: call it before first use)."""
    global _hooked, _interval
    found = sink(prometheus_registry, gauge_mode)
    profile = getattr(registry, "profile", "default")
    pool_metrics.instrument(registry, profile, [found])
    _interval = interval
    if not _hooked:
        call_in_forked_child(_after_fork)
        _hooked = True
    if multiprocess():
        _start_flusher()
    return found


def metrics_app(registry: CollectorRegistry | None = None) -> ASGIApp:
    """An ASGI app serving the metrics (``app.mount("/metrics", metrics_app())``): of
    ``registry``, else of every process (a :class:`MultiProcessCollector` registry) in
    multiprocess mode, else prometheus_client's ``REGISTRY``. Each request first writes this
    process's current pool values (:func:`update`)."""
    if registry is None:
        if multiprocess():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = REGISTRY
    inner: Any = make_asgi_app(registry)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            update()
        await inner(scope, receive, send)

    return app
