"""dbconf.integrations.prometheus: the pool metrics scraped from a real ``/metrics`` HTTP
endpoint and from the ASGI app mounted in FastAPI (through httpx), under workloads with known
counts on the real PostgreSQL server; multiprocess mode with a forked child (in a fresh
interpreter: prometheus_client picks the mode at import)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import dbconf
from dbconf.config import ProfileConfig
from dbconf.errors import PoolExhaustedError
from dbconf.integrations.prometheus import POOL, STATE, instrument, metrics_app

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str, pool: str) -> Samples:
    """``{(sample name, labels without the pool name): value}`` of ``pool``."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if labels.pop(POOL, None) != pool or "le" in labels:
                continue
            labels.pop("pid", None)
            out[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return out


def gauges(samples: Samples) -> dict[str, float]:
    p = "db_client_connection_"
    return {
        "used": samples[(p + "count", ((STATE, "used"),))],
        "idle": samples[(p + "count", ((STATE, "idle"),))],
        "max": samples[(p + "max", ())],
        "idle_max": samples[(p + "idle_max", ())],
        "idle_min": samples[(p + "idle_min", ())],
        "pending": samples[(p + "pending_requests", ())],
        "timeouts": samples[(p + "timeouts_total", ())],
    }


def counts(samples: Samples) -> dict[str, float]:
    p = "db_client_connection_"
    return {
        k: samples.get((f"{p}{k}_seconds_count", ()), 0)
        for k in ("create_time", "wait_time", "use_time")
    }


def registry(url: str, pool: dict[str, Any], profile: str) -> dbconf.Registry:
    config = ProfileConfig.model_validate({"databases": {"main": {"url": url, "pool": pool}}})
    return dbconf.Registry(config, profile=profile)


def test_scrape_a_real_http_endpoint(pg_url: str) -> None:
    prom = CollectorRegistry()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=prom)
    url = f"http://127.0.0.1:{server.server_port}/metrics"

    def scrape() -> Samples:
        with urllib.request.urlopen(url, timeout=10) as response:
            return parse(response.read().decode(), "http.main")

    try:
        with registry(pg_url, {"size": 2, "max_overflow": 1, "timeout": "30s"}, "http") as dbs:
            instrument(dbs, prometheus_registry=prom)
            engine = dbs["main"].engine
            held = [engine.connect() for _ in range(3)]
            blocked = threading.Thread(target=lambda: engine.connect().close())
            blocked.start()
            try:
                deadline = time.monotonic() + 10
                while scrape() and gauges(scrape())["pending"] != 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert gauges(scrape()) == {
                    "used": 3, "idle": 0, "max": 3, "idle_max": 2, "idle_min": 0,
                    "pending": 1, "timeouts": 0,
                }  # fmt: skip
            finally:
                for conn in held:
                    conn.close()
                blocked.join(30)
            samples = scrape()
            assert (
                gauges(samples)["used"],
                gauges(samples)["idle"],
                gauges(samples)["pending"],
            ) == (0, 2, 0)
            assert counts(samples) == {"create_time": 3, "wait_time": 4, "use_time": 4}
            engine.pool._timeout = 0.05  # type: ignore[attr-defined]
            held = [engine.connect() for _ in range(3)]
            with pytest.raises(PoolExhaustedError):
                engine.connect()
            for conn in held:
                conn.close()
            assert gauges(scrape())["timeouts"] == 1
    finally:
        server.shutdown()
        thread.join(10)


def test_asgi_app_mounted_in_fastapi(pg_url: str) -> None:
    prom = CollectorRegistry()
    app = FastAPI()
    app.mount("/metrics", metrics_app(prom))
    with registry(pg_url, {"size": 4}, "asgi") as dbs:
        instrument(dbs, prometheus_registry=prom)
        db = dbs["main"]
        with db.session() as s, db.session() as t:
            s.execute(sa.text("select 1"))
            t.execute(sa.text("select 1"))

            async def scrape() -> str:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                    response = await c.get("/metrics/")
                    assert response.status_code == 200
                    return response.text

            import asyncio

            samples = parse(asyncio.run(scrape()), "asgi.main")
        assert gauges(samples)["used"] == 2
        assert gauges(samples)["max"] == 14  # size 4 + SQLAlchemy's default max_overflow 10
        assert counts(samples)["wait_time"] == 2


def test_async_engine_through_the_endpoint(pg_url: str) -> None:
    prom = CollectorRegistry()
    app = metrics_app(prom)
    dbs = registry(pg_url, {"size": 2, "max_overflow": 0}, "aio")
    instrument(dbs, prometheus_registry=prom)

    async def main() -> Samples:
        engine = dbs["main"].async_engine
        async with engine.connect() as a, engine.connect() as b:
            await a.execute(sa.text("select 1"))
            await b.execute(sa.text("select 1"))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                text = (await c.get("/")).text
        await dbs.aclose()
        return parse(text, "aio.main")

    import asyncio

    samples = asyncio.run(main())
    assert (gauges(samples)["used"], gauges(samples)["idle"], gauges(samples)["max"]) == (2, 0, 2)


CHILD = textwrap.dedent(
    """
    import json, os, sys
    import sqlalchemy as sa
    import dbconf
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client import generate_latest
    from dbconf.config import ProfileConfig
    from dbconf.errors import PoolExhaustedError
    from dbconf.integrations import prometheus

    config = ProfileConfig.model_validate({
        "metrics": {"prometheus": True},
        "databases": {"main": {"url": sys.argv[1],
                               "pool": {"size": 3, "max_overflow": 0, "timeout": 0.05}}},
    })
    dbs = dbconf.Registry(config, profile="mp")
    engine = dbs["main"].engine
    parent_held = [engine.connect() for _ in range(2)]   # the parent: 2 used, 0 idle
    prometheus.update()
    read, write = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        held = [engine.connect() for _ in range(3)]       # the child: 3 used (a new pool)
        try:
            engine.connect()
        except PoolExhaustedError:
            pass                                          # 1 timeout in the child
        held[0].close()                                   # child: 2 used, 1 idle
        prometheus.update()                               # (the flush thread would do it too)
        alive = prometheus._flusher is not None and prometheus._flusher.is_alive()
        os.write(write, b"1" if alive else b"0")
        os.read(go_read, 1)                               # stay alive while the parent reads
        os._exit(0)
    os.close(write)
    child_flusher = os.read(read, 1) == b"1"
    scrape = CollectorRegistry()
    MultiProcessCollector(scrape)
    text = generate_latest(scrape).decode()
    os.write(go_write, b"x")
    os.waitpid(pid, 0)
    thread_alive = prometheus._flusher is not None and prometheus._flusher.is_alive()
    print(json.dumps({"text": text, "flusher": thread_alive, "child_flusher": child_flusher}))
    """
)


def test_multiprocess_mode_with_a_forked_child(pg_url: str, tmp_path: Path) -> None:
    script = tmp_path / "mp.py"
    script.write_text(CHILD)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), "PATH": "/usr/bin:/bin"}
    (tmp_path / "prom").mkdir()
    done = subprocess.run(
        [sys.executable, str(script), pg_url], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["flusher"] is True
    assert out["child_flusher"] is True  # started again in the forked child
    samples = parse(out["text"], "mp.main")
    # livesum: parent (2 used, 0 idle) + child (2 used, 1 idle); capacity of both processes
    assert gauges(samples) == {
        "used": 4, "idle": 1, "max": 6, "idle_max": 6, "idle_min": 0,
        "pending": 0, "timeouts": 1,
    }  # fmt: skip
    # counters and histograms are summed over processes: 2 + 3 connections made
    assert counts(samples)["create_time"] == 5
    assert counts(samples)["use_time"] == 1
