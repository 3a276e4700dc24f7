"""dbconf.pooling.pools: the ``pool.pre_ping`` bypass window on the sync and async queue pools
(pings counted on the real server's connections; what a kill does is in tests/faults/
test_fault_preping.py), and that the window survives dispose (a recreated pool)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from dbconf.config import DatabaseConfig
from dbconf.pooling.pools import AsyncQueuePool, QueuePool, pre_ping_window
from dbconf.runtime.builder import build_async_engine, build_engine, describe_pool, engine_kwargs


def db(**data: Any) -> DatabaseConfig:
    return DatabaseConfig.model_validate(data)


class Pings:
    """Counts SQLAlchemy's pre-pings on ``dialect`` (wraps its ``do_ping``, which still runs)."""

    def __init__(self, dialect: Any) -> None:
        self.count = 0
        ping = dialect.do_ping

        def counted(dbapi_connection: Any) -> bool:
            self.count += 1
            return bool(ping(dbapi_connection))

        dialect.do_ping = counted


@pytest.fixture
def engines() -> Iterator[list[sa.Engine]]:
    made: list[sa.Engine] = []
    yield made
    for engine in made:
        engine.dispose()


def scope(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


@pytest.mark.parametrize(
    ("value", "window", "sent"),
    [(True, None, True), (False, None, False), ("1s", 1.0, True), ("250ms", 0.25, True)],
)
def test_window_and_what_create_engine_gets(value: Any, window: float | None, sent: bool) -> None:
    cfg = db(url="postgresql+psycopg2://app@h/app", pool={"pre_ping": value})
    assert pre_ping_window(cfg) == window
    assert engine_kwargs(cfg)["pool_pre_ping"] is sent  # a window keeps SQLAlchemy's ping


def test_connection_used_within_the_window_is_not_pinged(
    pg_url: str, engines: list[sa.Engine]
) -> None:
    engine = build_engine("main", db(url=pg_url, pool={"size": 1, "pre_ping": "1h"}))
    engines.append(engine)
    pings = Pings(engine.dialect)
    for _ in range(5):
        scope(engine)
    assert pings.count == 0  # the first connection is fresh, the others within the hour
    assert isinstance(engine.pool, QueuePool)
    assert (engine.pool._pre_ping, engine.pool._dbconf_window) == (True, 3600.0)


def test_connection_idle_longer_than_the_window_is_pinged(
    pg_url: str, engines: list[sa.Engine]
) -> None:
    engine = build_engine("main", db(url=pg_url, pool={"size": 1, "pre_ping": "50ms"}))
    engines.append(engine)
    pings = Pings(engine.dialect)
    scope(engine)  # a new connection: fresh, not pinged
    for expected in (1, 2):
        time.sleep(0.15)  # idle longer than the window
        scope(engine)
        assert pings.count == expected


def test_pre_ping_true_pings_every_checkout(pg_url: str, engines: list[sa.Engine]) -> None:
    engine = build_engine("main", db(url=pg_url, pool={"size": 1, "pre_ping": True}))
    engines.append(engine)
    pings = Pings(engine.dialect)
    for _ in range(4):
        scope(engine)
    assert pings.count == 3  # every checkout but the new connection's
    assert describe_pool(engine.pool)["pre_ping"] is True


def test_window_survives_dispose_and_is_described(pg_url: str, engines: list[sa.Engine]) -> None:
    engine = build_engine("main", db(url=pg_url, pool={"pre_ping": "2s"}))
    engines.append(engine)
    engine.dispose()  # a recreated pool
    assert isinstance(engine.pool, QueuePool)
    assert engine.pool._dbconf_window == 2.0
    assert describe_pool(engine.pool)["pre_ping"] == 2.0


def test_replica_engine_inherits_the_window(pg_url: str, engines: list[sa.Engine]) -> None:
    host = sa.make_url(pg_url).host
    cfg = db(url=pg_url, pool={"pre_ping": "1s"}, replicas=[{"host": host}])
    (replica,) = cfg.replica_configs
    engine = build_engine("main.replicas[0]", replica)
    engines.append(engine)
    assert engine.pool._dbconf_window == 1.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg_async"])
def test_async_engine_skips_the_ping_within_the_window(pg_url: str, driver: str) -> None:
    url = sa.make_url(pg_url).set(drivername=f"postgresql+{driver}").render_as_string(False)

    async def run(window: str) -> int:
        engine = build_async_engine("main", db(url=url, pool={"size": 1, "pre_ping": window}))
        assert isinstance(engine.sync_engine.pool, AsyncQueuePool)
        pings = Pings(engine.sync_engine.dialect)
        try:
            for _ in range(3):
                async with engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
                await asyncio.sleep(0.15)
        finally:
            await engine.dispose()
        return pings.count

    assert asyncio.run(run("1h")) == 0
    assert asyncio.run(run("50ms")) == 2  # the 2nd and 3rd checkouts, idle 150 ms
