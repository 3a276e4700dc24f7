"""OpenTelemetry connection-pool metrics (needs the ``otel`` extra: ``pip install
'dbconf[otel]'``; importing :mod:`dbconf` never imports OpenTelemetry).

.. code-block:: python

    from dbconf.integrations.opentelemetry import instrument

    dbs = dbconf.load("production")
    instrument(dbs)                       # the global MeterProvider, or:
    instrument(dbs, meter_provider=provider)

or, with no code, ``metrics: {opentelemetry: true}`` in the profile (the global MeterProvider;
set it before the pools are used, or OpenTelemetry's proxy drops what comes before).

The instruments of the semantic conventions for database client connection pools (current
names), on the meter ``dbconf``, each with ``db.client.connection.pool.name`` =
``<profile>.<database>`` (a replica: ``<profile>.<database>.replicas[<i>]``):

=========================================== ======================= ==============
``db.client.connection.count``              UpDownCounter (async)   ``{connection}``, with
                                                                    ``db.client.connection.state``
                                                                    = ``idle`` | ``used``
``db.client.connection.max``                UpDownCounter (async)   size + max_overflow
``db.client.connection.idle.max``           UpDownCounter (async)   size
``db.client.connection.idle.min``           UpDownCounter (async)   0 (SQLAlchemy keeps none)
``db.client.connection.pending_requests``   UpDownCounter (async)   checkouts waiting now
``db.client.connection.timeouts``           Counter (async)         checkout timeouts
``db.client.connection.create_time``        Histogram               s, new DBAPI connection
``db.client.connection.wait_time``          Histogram               s, to get one from the pool
``db.client.connection.use_time``           Histogram               s, checkout to checkin
=========================================== ======================= ==============

The gauges are read from the pools when the reader collects; the durations are buffered by
:mod:`dbconf.pooling.pool_metrics` and recorded into the histograms at the start of each collection
(so a checkout never pays for ``Histogram.record``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from dbconf.pooling import pool_metrics
from dbconf.pooling.pool_metrics import PoolSnapshot, PoolStats

__all__ = ["POOL_NAME", "OpenTelemetrySink", "instrument"]

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


class OpenTelemetrySink:
    """The instruments of one MeterProvider (None: the global one) for every pool whose
    durations it is handed."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = metrics.get_meter("dbconf", meter_provider=meter_provider)
        p = "db.client.connection."
        self._lock = threading.Lock()

        def gauge(name: str, doc: str, read: Any) -> None:
            meter.create_observable_up_down_counter(
                p + name, [lambda o: self._observe(read, o)], unit="{connection}", description=doc
            )

        # the first callback of a collection also flushes the durations into the histograms
        meter.create_observable_up_down_counter(
            p + "count",
            [self._count],
            unit="{connection}",
            description="Connections of the pool in each state (idle, used)",
        )
        gauge("max", "Most connections the pool may open", lambda s: s.max)
        gauge("idle.max", "Most idle connections the pool keeps", lambda s: s.idle_max)
        gauge("idle.min", "Fewest idle connections the pool keeps", lambda s: s.idle_min)
        gauge("pending_requests", "Checkouts waiting for a connection", lambda s: s.pending)
        meter.create_observable_counter(
            p + "timeouts",
            [lambda o: self._observe(lambda s: s.timeouts, o)],
            unit="{timeout}",
            description="Checkouts that timed out waiting for a connection",
        )

        def histogram(name: str, doc: str) -> Any:
            try:
                return meter.create_histogram(
                    p + name, unit="s", description=doc, explicit_bucket_boundaries_advisory=BUCKETS
                )
            except TypeError:  # an API before the advisory parameter
                return meter.create_histogram(p + name, unit="s", description=doc)

        self._create = histogram("create_time", "Time to create a new connection")
        self._wait = histogram("wait_time", "Time to obtain a connection from the pool")
        self._use = histogram("use_time", "Time between checkout and return of a connection")

    def _snapshots(self) -> list[PoolSnapshot]:
        out = []
        for stats in pool_metrics.pools():
            if self in stats.sinks:
                snap = stats.snapshot()
                if snap is not None:
                    out.append(snap)
        return out

    def _count(self, _options: CallbackOptions) -> Iterable[Observation]:
        for stats in pool_metrics.pools():
            if self in stats.sinks:
                stats.flush()
        out = []
        for snap in self._snapshots():
            if snap.used is not None and snap.idle is not None:
                out.append(Observation(snap.used, {POOL_NAME: snap.name, STATE: "used"}))
                out.append(Observation(snap.idle, {POOL_NAME: snap.name, STATE: "idle"}))
        return out

    def _observe(self, read: Any, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(value, {POOL_NAME: snap.name})
            for snap in self._snapshots()
            if (value := read(snap)) is not None
        ]

    def record(
        self,
        pool: PoolStats,
        create: Sequence[float],
        wait: Sequence[float],
        use: Sequence[float],
    ) -> None:
        attributes = {POOL_NAME: pool.name}
        for histogram, values in ((self._create, create), (self._wait, wait), (self._use, use)):
            for value in values:
                histogram.record(value, attributes)


_sinks: dict[int, OpenTelemetrySink] = {}
_lock = threading.Lock()


def sink(meter_provider: MeterProvider | None = None) -> OpenTelemetrySink:
    """The one sink of ``meter_provider`` (None: the global MeterProvider)."""
    key = id(meter_provider)
    with _lock:
        found = _sinks.get(key)
        if found is None:
            found = _sinks[key] = OpenTelemetrySink(meter_provider)
            _providers.append(meter_provider)  # keeps id() unique while the sink lives
        return found


_providers: list[Any] = []


def instrument(registry: Iterable[Any], *, meter_provider: MeterProvider | None = None) -> None:
    """Export the pool metrics of every database (and replica) of ``registry`` (a
    :class:`~dbconf.Registry`) through ``meter_provider`` (default: the global one). Engines
    already built are instrumented too (replica engines excepted: call it before first use)."""
    profile = getattr(registry, "profile", "default")
    pool_metrics.instrument(registry, profile, [sink(meter_provider)])
