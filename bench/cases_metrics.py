"""Case 13: pool metrics (OpenTelemetry SDK + Prometheus, both on) vs off, per PostgreSQL
session scope, interleaved in one process. A collector thread reads both exporters every
0.5 s during the run (an OTel reader's collection and a Prometheus scrape), as a service
being scraped would."""

from __future__ import annotations

import threading

from bench.cases_single import PG_POOL, dbconf_op
from bench.envs import PG_URL, registry
from bench.stats import CaseResult, Scale, Target, interleave

TARGET = "13 PostgreSQL time ratio metrics on/off"


def case13(scale: Scale) -> CaseResult:
    result = CaseResult(13, "pool metrics on vs off (PostgreSQL, dbconf; OTel + Prometheus)")
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from prometheus_client import CollectorRegistry, generate_latest

        from dbconf.integrations import opentelemetry, prometheus
    except ImportError as e:
        result.skipped = f"needs opentelemetry-sdk and prometheus-client ({e.name} missing)"
        result.targets.append(Target(TARGET, None, "<=", 1.03, note=result.skipped))
        return result
    on = registry({"on": {"url": PG_URL, "pool": PG_POOL}})
    off = registry({"off": {"url": PG_URL, "pool": PG_POOL}})
    reader = InMemoryMetricReader()
    prom = CollectorRegistry()
    opentelemetry.instrument(on, meter_provider=MeterProvider(metric_readers=[reader]))
    prometheus.instrument(on, prometheus_registry=prom)
    stop = threading.Event()
    collections = 0

    def collect() -> None:
        nonlocal collections
        while not stop.wait(0.5):
            reader.get_metrics_data()
            generate_latest(prom)
            collections += 1

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    try:
        run = interleave(
            {"metrics on": dbconf_op(on["on"]), "metrics off": dbconf_op(off["off"])},
            scale.n(250),
            scale,
        )
    finally:
        stop.set()
        collector.join(5)
        on.dispose()
        off.dispose()
    result.variants.update(run.stats)
    ratio = run.time_ratio("metrics on", "metrics off")
    result.metrics["time_ratio_on_off"] = round(ratio, 4)
    result.metrics["collections"] = collections
    result.targets.append(Target(TARGET, ratio, "<=", 1.03))
    result.notes.append(
        "metrics on: per checkout two perf_counter calls and a deque append, one of each at "
        "checkin (dbconf's QueuePool, no pool event); gauges are read and durations recorded "
        f"into the histograms at collection time ({collections} collections during the run)"
    )
    return result
