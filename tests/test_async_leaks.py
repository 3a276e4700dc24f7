"""Async twins of the pool guarantees: dbconf's AsyncQueuePool (PoolExhaustedError naming the
holders), pool_status() and leak detection whose holder is the asyncio task and the
application's file:line, on asyncpg, psycopg async, aiomysql and aiosqlite.

Engines come from ``builder.build_async_engine``; each test runs its own ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from dbconf.config import DatabaseConfig
from dbconf.errors import PoolExhaustedError
from dbconf.pooling.leaks import AsyncQueuePool, pool_class_kwargs, pool_status
from dbconf.runtime.builder import build_async_engine

SELECT_1 = sa.text("SELECT 1")
DRIVERS = ["asyncpg", "psycopg_async", "aiomysql", "aiosqlite"]


def line() -> int:
    return sys._getframe(1).f_lineno


def async_url(driver: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if driver == "aiosqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'pool-leaks.db'}"
    if driver == "aiomysql":
        url = sa.make_url(request.getfixturevalue("maria_url"))
        return url.set(drivername="mysql+aiomysql").render_as_string(hide_password=False)
    url = sa.make_url(request.getfixturevalue("pg_url"))
    return url.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


@pytest.fixture
def make_engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., AsyncEngine]]:
    """``make_engine(driver, name, **settings)``: an async engine built by dbconf; disposed
    (pool only: the test's loop is gone) at the end."""
    made: list[AsyncEngine] = []

    def make(driver: str, name: str, **settings: Any) -> AsyncEngine:
        url = async_url(driver, request, tmp_path)
        cfg = DatabaseConfig.model_validate({"url": url, **settings})
        engine = build_async_engine(name, cfg)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.sync_engine.dispose(close=False)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def warnings_for(caplog: pytest.LogCaptureFixture, database: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "dbconf.leaks" and getattr(r, "dbconf_database", None) == database
    ]


async def wait_for_warning(caplog: Any, database: str, what: str) -> logging.LogRecord:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = [r for r in warnings_for(caplog, database) if what in r.getMessage()]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {what!r} warning for {database} within 15 s")


@pytest.mark.parametrize("driver", DRIVERS)
def test_async_engine_uses_dbconf_async_queue_pool(
    driver: str, make_engine: Callable[..., AsyncEngine]
) -> None:
    name = unique("pool_status")
    engine = make_engine(driver, name, pool={"size": 3, "max_overflow": 2, "timeout": 5})

    async def main() -> None:
        assert isinstance(engine.sync_engine.pool, AsyncQueuePool)
        async with AsyncSession(engine) as s:
            await s.execute(SELECT_1)
            status = pool_status(name, engine.sync_engine)
            assert (status.pool, status.size, status.checked_out) == ("AsyncQueuePool", 3, 1)
            assert status.timeout == 5
            assert not status.tracking
        status = pool_status(name, engine.sync_engine)
        assert (status.checked_out, status.idle) == (0, 1)
        assert pool_status(name, engine) == status  # the AsyncEngine itself, too
        await engine.dispose()

    asyncio.run(main())


@pytest.mark.parametrize("driver", DRIVERS)
def test_leaked_async_session_warns_with_task_and_line(
    driver: str, make_engine: Callable[..., AsyncEngine], caplog: Any
) -> None:
    name = unique("pool_leak")
    engine = make_engine(driver, name, leak_detection={"threshold": "0.3s"})
    caplog.set_level(logging.WARNING, logger="dbconf.leaks")
    acquired = 0

    async def leaker() -> None:
        nonlocal acquired
        session = AsyncSession(engine)
        acquired = line() + 1
        await session.execute(SELECT_1)
        holders = pool_status(name, engine.sync_engine).holders
        assert [(h.task, h.acquired_at) for h in holders] == [
            ("pool-leaker", f"{__file__}:{acquired}")
        ]
        assert "task 'pool-leaker'" in holders[0].describe()
        record = await wait_for_warning(caplog, name, "checked out for")
        await session.close()
        message = record.getMessage()
        assert "by task 'pool-leaker' (thread " in message
        assert f"acquired at {__file__}:{acquired}" in message
        assert f'File "{__file__}", line {acquired}, in leaker' in message
        stack = message.split("Acquired at", 1)[1]
        assert "sqlalchemy" not in stack
        assert "asyncio" not in stack
        assert getattr(record, "dbconf_task", None) == "pool-leaker"

    async def main() -> None:
        await asyncio.create_task(leaker(), name="pool-leaker")
        assert pool_status(name, engine.sync_engine).holders == ()
        await engine.dispose()

    asyncio.run(main())


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg_async", "aiomysql"])
def test_long_async_transaction_warns_once(
    driver: str, make_engine: Callable[..., AsyncEngine], caplog: Any
) -> None:
    name = unique("pool_longtx")
    engine = make_engine(driver, name, leak_detection={"long_transaction": "0.3s"})
    caplog.set_level(logging.WARNING, logger="dbconf.leaks")

    async def main() -> None:
        acquired = line() + 1
        async with engine.connect() as conn:
            for _ in range(3):  # short transactions on one checkout: no warning
                async with conn.begin():
                    await conn.execute(SELECT_1)
                await asyncio.sleep(0.2)
            assert warnings_for(caplog, name) == []
            async with conn.begin():
                await conn.execute(SELECT_1)
                record = await wait_for_warning(caplog, name, "a transaction has been open")
                await asyncio.sleep(0.5)  # no second warning for the same transaction
        records = warnings_for(caplog, name)
        assert len(records) == 1, [r.getMessage() for r in records]
        assert "long_transaction" in record.getMessage()
        assert "by task 'Task-" in record.getMessage()
        assert f"acquired at {__file__}:{acquired}" in record.getMessage()  # the checkout
        await engine.dispose()

    asyncio.run(main())


@pytest.mark.parametrize("driver", DRIVERS)
def test_async_pool_exhaustion_answers_every_waiter(
    driver: str, make_engine: Callable[..., AsyncEngine]
) -> None:
    name = unique("pool_exhaust")
    engine = make_engine(
        driver,
        name,
        pool={"size": 1, "max_overflow": 1, "timeout": 0.5},
        leak_detection={"threshold": "1h"},
    )

    async def waiter() -> None:
        async with engine.connect() as conn:
            await conn.execute(SELECT_1)

    async def main() -> None:
        async with engine.connect() as a, engine.connect() as b:
            await a.execute(SELECT_1)
            await b.execute(SELECT_1)
            started = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(*(waiter() for _ in range(8)), return_exceptions=True), 30
            )
            elapsed = time.monotonic() - started
        assert all(isinstance(r, PoolExhaustedError) for r in results), results
        assert elapsed < 20
        error = results[0]
        assert isinstance(error, PoolExhaustedError)
        text = str(error)
        for part in (repr(name), "pool.size 1", "pool.max_overflow 1", "pool.timeout 0.5s"):
            assert part in text, text
        assert text.count("task 'Task-") == 2, text  # both holders, by task
        assert f"{__file__}:" in text
        status = pool_status(name, engine.sync_engine)
        assert status.checked_out == 0
        await waiter()  # the pool still serves
        await engine.dispose()

    asyncio.run(main())


def test_pool_class_kwargs_for_async(tmp_path: Path) -> None:
    def cfg(url: str, **pool: Any) -> DatabaseConfig:
        return DatabaseConfig.model_validate({"url": url, "pool": pool})

    pg = "postgresql+asyncpg://u@h/db"
    assert pool_class_kwargs(cfg(pg), use_async=True) == {"poolclass": AsyncQueuePool}
    assert pool_class_kwargs(cfg(pg, **{"class": "queue"}), use_async=True) == {
        "poolclass": AsyncQueuePool
    }
    assert pool_class_kwargs(cfg(pg, **{"class": "null"}), use_async=True) == {}
    lite = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    assert pool_class_kwargs(cfg(lite), use_async=True) == {"poolclass": AsyncQueuePool}
    assert pool_class_kwargs(cfg("sqlite+aiosqlite://"), use_async=True) == {}
    # the sync side keeps dbconf's sync QueuePool
    assert pool_class_kwargs(cfg(pg)) != {"poolclass": AsyncQueuePool}
