"""Async session scopes on every async driver, against the real servers: commit, rollback on any
exception, close, savepoints, run_in_transaction_async, concurrency, the dependency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from async_support import DRIVERS, kind, make_registry, sleep_sql, sqlite_sleep, table_sql, unique
from sqlalchemy.ext.asyncio import AsyncSession

from dbconf.errors import ConfigError, UnknownSessionFlavourError
from dbconf.runtime.database import Database
from dbconf.runtime.registry import Registry


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def urls(driver: str, request: pytest.FixtureRequest) -> dict[str, str]:
    k = kind(driver)
    if k == "pg":
        return {"pg": request.getfixturevalue("pg_url")}
    if k == "maria":
        return {"maria": request.getfixturevalue("maria_url")}
    return {}


@pytest.fixture
def dbs(driver: str, urls: dict[str, str], tmp_path: Path) -> Iterator[Registry]:
    registry = make_registry(
        driver,
        urls,
        tmp_path,
        pool={"size": 20, "max_overflow": 5},
        sessions={
            "default": {},
            "keep": {"expire_on_commit": False},
            "auto": {"autocommit": True},
        },
    )
    yield registry
    registry.close()


@pytest.fixture
def table(dbs: Registry, driver: str) -> Iterator[str]:
    name = unique("core_t")
    with dbs["main"].session() as s:  # the sync side of the same database
        s.execute(sa.text(table_sql(driver, name)))
    yield name
    with dbs["main"].session() as s:
        s.execute(sa.text(f"DROP TABLE {name}"))


def ids(db: Database, table: str) -> list[int]:
    with db.session() as s:
        return list(s.execute(sa.text(f"SELECT id FROM {table} ORDER BY id")).scalars())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_commit_on_success_with_a_real_async_session(
    dbs: Registry, table: str, driver: str
) -> None:
    db = dbs["main"]

    async def work() -> tuple[str, int | None]:
        async with db.async_session() as s:
            assert isinstance(s, AsyncSession)
            await s.execute(sa.text(f"INSERT INTO {table} VALUES (1, 0)"))
            name = s.bind.url.get_driver_name()  # type: ignore[union-attr]
        return name, db.async_pool_status().checked_out

    assert run(work()) == (driver, 0)
    assert ids(db, table) == [1]


@pytest.mark.parametrize("error", [ValueError, asyncio.CancelledError, KeyboardInterrupt])
def test_rollback_on_any_exception_and_close(
    dbs: Registry, table: str, error: type[BaseException]
) -> None:
    db = dbs["main"]

    async def failing() -> None:
        async with db.async_session() as s:
            await s.execute(sa.text(f"INSERT INTO {table} VALUES (2, 0)"))
            raise error

    async def work() -> int | None:
        with pytest.raises(error):
            await failing()
        return db.async_pool_status().checked_out

    assert run(work()) == 0
    assert ids(db, table) == []


def test_a_failing_statement_rolls_back_the_whole_scope(dbs: Registry, table: str) -> None:
    db = dbs["main"]

    async def failing() -> None:
        async with db.async_session() as s:
            await s.execute(sa.text(f"INSERT INTO {table} VALUES (4, 0)"))
            await s.execute(sa.text(f"INSERT INTO {table} VALUES (3, 0)"))

    async def work() -> int | None:
        async with db.async_session() as s:
            await s.execute(sa.text(f"INSERT INTO {table} VALUES (3, 0)"))
        with pytest.raises(sa.exc.IntegrityError):
            await failing()
        return db.async_pool_status().checked_out

    assert run(work()) == 0
    assert ids(db, table) == [3]


def test_transaction_scope_with_savepoints(dbs: Registry, table: str) -> None:
    db = dbs["main"]

    async def work() -> None:
        async with db.async_transaction() as s:
            await s.execute(sa.text(f"INSERT INTO {table} VALUES (1, 0)"))
            nested = await s.begin_nested()
            await s.execute(sa.text(f"INSERT INTO {table} VALUES (2, 0)"))
            await nested.rollback()
            async with s.begin_nested():
                await s.execute(sa.text(f"INSERT INTO {table} VALUES (3, 0)"))
        with pytest.raises(RuntimeError):
            await failing()

    async def failing() -> None:
        async with db.async_transaction() as s:
            await s.execute(sa.text(f"INSERT INTO {table} VALUES (4, 0)"))
            raise RuntimeError("boom")

    run(work())
    assert ids(db, table) == [1, 3]


def test_flavours_reach_the_async_sessionmaker(dbs: Registry, table: str) -> None:
    db = dbs["main"]
    keep = db.async_sessionmaker("keep")  # outside any loop: binds when called
    assert keep is db.async_sessionmaker("keep")
    assert keep.kw["expire_on_commit"] is False

    async def work() -> tuple[bool, list[int]]:
        async with db.async_session("auto") as s:  # autocommit: each statement commits
            await s.execute(sa.text(f"INSERT INTO {table} VALUES (7, 0)"))
            # another connection sees the row before this session ends
            async with db.async_session() as other:
                seen = list((await other.execute(sa.text(f"SELECT id FROM {table}"))).scalars())
        async with keep() as s:
            return s.sync_session.expire_on_commit, seen

    assert run(work()) == (False, [7])


def test_run_in_transaction_async_returns_and_refuses_autocommit(dbs: Registry, table: str) -> None:
    db = dbs["main"]
    calls = []

    async def fn(session: AsyncSession) -> int:
        calls.append(1)
        await session.execute(sa.text(f"INSERT INTO {table} VALUES (5, 0)"))
        return 42

    async def bad(session: AsyncSession) -> None:
        calls.append(2)
        await session.execute(sa.text("SELECT * FROM core_no_such_table"))

    async def work() -> int:
        result = await db.run_in_transaction_async(fn, retries=2, backoff=0.01)
        with pytest.raises(sa.exc.DBAPIError):
            await db.run_in_transaction_async(bad, retries=3, backoff=0.01)
        with pytest.raises(ConfigError, match="autocommit"):
            await db.run_in_transaction_async(fn, flavour="auto")
        return result

    assert run(work()) == 42
    assert calls == [1, 2]  # the other error is not retried
    assert ids(db, table) == [5]


def test_50_concurrent_scopes_do_not_block_each_other(dbs: Registry, driver: str) -> None:
    db = dbs["main"]
    sql = sa.text(sleep_sql(driver, 0.2))

    async def one() -> None:
        async with db.async_session() as s:
            await s.execute(sql)

    async def work() -> float:
        if kind(driver) == "lite":
            sqlite_sleep(db)
        await one()  # connect once first
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(50)))
        return time.perf_counter() - start

    elapsed = run(work())
    serial = 50 * 0.2
    assert elapsed < 0.5 * serial, f"{elapsed:.2f}s for 50 concurrent 0.2s sleeps"


def test_async_dependency(dbs: Registry, table: str) -> None:
    db = dbs["main"]
    with pytest.raises(UnknownSessionFlavourError):
        db.async_dependency("defualt")
    dep = db.async_dependency()
    assert dep.__name__ == "get_main_default_async_session"

    async def work() -> None:
        gen = dep()
        session = await gen.__anext__()
        await session.execute(sa.text(f"INSERT INTO {table} VALUES (9, 0)"))
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()  # the request ended: commit, close

    run(work())
    assert ids(db, table) == [9]
