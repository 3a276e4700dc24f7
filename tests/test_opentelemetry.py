"""dbconf.integrations.opentelemetry: the pool metrics read back through the OpenTelemetry
SDK's in-memory reader, under workloads with known counts (threads and asyncio tasks holding
connections, a blocked checkout, a forced timeout) on the real PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import dbconf
from dbconf.config import ProfileConfig
from dbconf.errors import PoolExhaustedError
from dbconf.integrations.opentelemetry import POOL_NAME, STATE, instrument

Points = dict[tuple[str, tuple[tuple[str, Any], ...]], Any]


def read(reader: InMemoryMetricReader, pool: str) -> Points:
    """``{(metric name, sorted attributes without the pool name): value or histogram count}``
    of ``pool``."""
    out: Points = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "dbconf"
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    attrs = dict(point.attributes or {})
                    if attrs.pop(POOL_NAME, None) != pool:
                        continue
                    value = getattr(point, "value", None)
                    if value is None:
                        value = point.count  # type: ignore[union-attr]
                    out[(metric.name, tuple(sorted(attrs.items())))] = value
    return out


def gauges(points: Points) -> dict[str, Any]:
    p = "db.client.connection."
    return {
        "used": points[(p + "count", ((STATE, "used"),))],
        "idle": points[(p + "count", ((STATE, "idle"),))],
        "max": points[(p + "max", ())],
        "idle.max": points[(p + "idle.max", ())],
        "idle.min": points[(p + "idle.min", ())],
        "pending": points[(p + "pending_requests", ())],
        "timeouts": points[(p + "timeouts", ())],
    }


def histograms(points: Points) -> dict[str, int]:
    p = "db.client.connection."
    return {k: points.get((p + k, ()), 0) for k in ("create_time", "wait_time", "use_time")}


def until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


def registry(url: str, pool: dict[str, Any], reader: InMemoryMetricReader) -> dbconf.Registry:
    config = ProfileConfig.model_validate({"databases": {"main": {"url": url, "pool": pool}}})
    dbs = dbconf.Registry(config, profile="prod")
    instrument(dbs, meter_provider=MeterProvider(metric_readers=[reader]))
    return dbs


def test_threads_blocked_checkout_and_timeout(pg_url: str, reader: InMemoryMetricReader) -> None:
    n = 3
    with registry(pg_url, {"size": n, "max_overflow": 0, "timeout": "30s"}, reader) as dbs:
        engine = dbs["main"].engine
        release, ready = threading.Event(), threading.Barrier(n + 1)

        def hold() -> None:
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
                ready.wait()
                release.wait(30)

        threads = [threading.Thread(target=hold) for _ in range(n)]
        for t in threads:
            t.start()
        ready.wait(30)
        blocked = threading.Thread(target=lambda: engine.connect().close())
        blocked.start()
        try:
            pool = engine.pool
            until(lambda: len(pool._pool.not_empty._waiters) == 1)  # type: ignore[attr-defined]
            assert gauges(read(reader, "prod.main")) == {
                "used": 3, "idle": 0, "max": 3, "idle.max": 3, "idle.min": 0,
                "pending": 1, "timeouts": 0,
            }  # fmt: skip
        finally:
            release.set()
            for t in [*threads, blocked]:
                t.join(30)
        points = read(reader, "prod.main")
        assert gauges(points)["used"] == 0
        assert gauges(points)["idle"] == 3
        assert gauges(points)["pending"] == 0
        # 3 connections made; 4 checkouts (3 + the blocked one), 4 returns
        assert histograms(points) == {"create_time": 3, "wait_time": 4, "use_time": 4}
        held = [engine.connect() for _ in range(n)]
        pool._timeout = 0.05  # type: ignore[attr-defined]
        with pytest.raises(PoolExhaustedError):
            engine.connect()
        for conn in held:
            conn.close()
        assert gauges(read(reader, "prod.main"))["timeouts"] == 1


def test_async_engine_tasks(pg_url: str, reader: InMemoryMetricReader) -> None:
    dbs = registry(pg_url, {"size": 2, "max_overflow": 1, "timeout": "30s"}, reader)

    async def main() -> None:
        engine = dbs["main"].async_engine
        release = asyncio.Event()
        held = 0

        async def hold() -> None:
            nonlocal held
            async with engine.connect() as conn:
                await conn.execute(sa.text("select 1"))
                held += 1
                await release.wait()

        tasks = [asyncio.create_task(hold()) for _ in range(3)]
        while held < 3:
            await asyncio.sleep(0.01)
        waiter = asyncio.create_task(hold())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = gauges(read(reader, "prod.main"))
            if got["pending"] == 1:
                break
            await asyncio.sleep(0.01)
        assert got == {
            "used": 3, "idle": 0, "max": 3, "idle.max": 2, "idle.min": 0,
            "pending": 1, "timeouts": 0,
        }  # fmt: skip
        release.set()
        await asyncio.gather(*tasks, waiter)
        points = read(reader, "prod.main")
        # 3 returned at once: the pool keeps 2 (size), the overflow one is closed
        assert (gauges(points)["used"], gauges(points)["idle"]) == (0, 2)
        assert histograms(points) == {"create_time": 3, "wait_time": 4, "use_time": 4}
        engine.sync_engine.pool._timeout = 0.05  # type: ignore[attr-defined]
        held_conns = [await engine.connect() for _ in range(3)]
        with pytest.raises(PoolExhaustedError):
            await engine.connect()
        for conn in held_conns:
            await conn.close()
        assert gauges(read(reader, "prod.main"))["timeouts"] == 1
        await dbs.aclose()

    asyncio.run(main())


def test_two_readers_of_one_provider_and_a_second_profile(
    pg_url: str, reader: InMemoryMetricReader
) -> None:
    other = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader, other])
    config = ProfileConfig.model_validate(
        {"databases": {"a": {"url": pg_url}, "b": {"url": pg_url}}}
    )
    with dbconf.Registry(config, profile="staging") as dbs:
        instrument(dbs, meter_provider=provider)
        with dbs["a"].session() as s, dbs["b"].session() as t:
            s.execute(sa.text("select 1"))
            t.execute(sa.text("select 1"))
            assert gauges(read(reader, "staging.a"))["used"] == 1
            assert gauges(read(other, "staging.b"))["used"] == 1
        # each reader got the durations flushed before its own collection
        assert histograms(read(other, "staging.a"))["use_time"] == 1
        assert histograms(read(reader, "staging.b"))["use_time"] == 1


GLOBAL = textwrap.dedent(
    """
    import json, sys
    import sqlalchemy as sa
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    import dbconf

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    dbs = dbconf.load("prod", path=sys.argv[1])
    with dbs["main"].session() as s:
        s.execute(sa.text("select 1"))
        out = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        attrs = sorted(p.attributes.items())
                        key = m.name + "/" + ",".join(f"{k}={v}" for k, v in attrs)
                        out[key] = getattr(p, "value", None)
    print(json.dumps(out))
    """
)


def test_enabled_by_the_profile_on_the_global_meter_provider(
    pg_url: str, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    path = write_config(
        "profiles:\n  prod:\n    metrics: {opentelemetry: true}\n"
        f"    databases: {{main: {{url: '{pg_url}', pool: {{size: 2, max_overflow: 0}}}}}}\n"
    )
    script = tmp_path / "global_provider.py"
    script.write_text(GLOBAL)
    done = subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    name = f"{POOL_NAME}=prod.main"
    assert out[f"db.client.connection.count/{name},{STATE}=used"] == 1
    assert out[f"db.client.connection.count/{name},{STATE}=idle"] == 0
    assert out[f"db.client.connection.max/{name}"] == 2
