"""Faults on async engines (asyncpg and psycopg async; aiomysql for the pool): terminated
backends between scopes and mid-transaction, statement timeouts under concurrency, and an
exhausted AsyncQueuePool in which every waiter gets an answer. Engines come from
``builder.build_async_engine`` and connect as the password role of ``pg_app_url``.

``application_name`` (and the statement timeout) are SET on each new connection by the test
(until dbconf translates them for the async drivers), so that each test sees only its
backends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

import dbconf
from dbconf.config import DatabaseConfig
from dbconf.pooling.leaks import pool_status
from dbconf.runtime.builder import build_async_engine

from .conftest import FaultStats, SecretWatch, backends, table_ids, terminate

pytestmark = pytest.mark.faults
PG_DRIVERS = ["asyncpg", "psycopg_async"]


@pytest.fixture
def make_engine() -> Iterator[Any]:
    """``make_engine(url, driver, session={...}, **settings)``: an async engine of ``driver``
    on ``url``; ``session`` settings (application_name, statement_timeout) are SET on each new
    connection, through the DBAPI connection, for every driver alike."""
    made: list[AsyncEngine] = []

    def make(
        url: str, driver: str, session: dict[str, str] | None = None, **kw: Any
    ) -> AsyncEngine:
        if driver != "aiosqlite":
            base = "mysql" if driver == "aiomysql" else "postgresql"
            url = sa.make_url(url).set(drivername=f"{base}+{driver}").render_as_string(False)
        engine = build_async_engine("main", DatabaseConfig.model_validate({"url": url, **kw}))
        if session:

            @event.listens_for(engine.sync_engine, "connect")
            def _set(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                for key, value in session.items():
                    cursor.execute(f"SET {key} = '{value}'")
                cursor.close()

        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.sync_engine.dispose(close=False)


async def wait_gone(admin: sa.Engine, app_name: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while backends(admin, app_name) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert backends(admin, app_name) == 0, "terminated backends did not exit"


async def insert(session: AsyncSession, table: str, i: int) -> None:
    await session.execute(sa.text(f"INSERT INTO {table} (id, tag) VALUES (:i, 'x')"), {"i": i})


async def pid_of(session: AsyncSession) -> int:
    return int((await session.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_async_backends_terminated_between_scopes(
    driver: str,
    make_engine: Any,
    pg_app_url: str,
    app_name: str,
    pg_faults: sa.Engine,
    pg_table: str,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: every idle pooled backend of an async engine is terminated between scopes.
    Guarantee: with pre_ping the next 20 concurrent-ish scopes see no error, use new
    backends, and every committed row is there."""
    engine = make_engine(
        pg_app_url, driver, pool={"size": 4}, session={"application_name": app_name}
    )

    async def main() -> tuple[list[int], int, set[int]]:
        gate = asyncio.Barrier(4) if hasattr(asyncio, "Barrier") else None

        async def warm(i: int) -> None:
            async with AsyncSession(engine) as s, s.begin():
                await insert(s, pg_table, i)
                if gate is not None:
                    await gate.wait()  # four connections checked out at once
                else:
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(warm(i) for i in range(4)))
        assert pool_status("main", engine.sync_engine).idle == 4
        killed = terminate(pg_faults, app_name)
        assert len(killed) == 4
        await wait_gone(pg_faults, app_name)
        errors, pids = 0, set()

        async def scope(i: int) -> None:
            nonlocal errors
            try:
                async with AsyncSession(engine) as s, s.begin():
                    await insert(s, pg_table, i)
                    pids.add(await pid_of(s))
            except Exception as e:
                secret_watch.saw(e)
                errors += 1

        for batch in range(5):
            await asyncio.gather(*(scope(4 + batch * 4 + k) for k in range(4)))
        await engine.dispose()
        return killed, errors, pids

    killed, errors, pids = asyncio.run(main())
    assert errors == 0
    assert not pids & set(killed), "a terminated backend was used again"
    lost = set(range(24)) - table_ids(pg_faults, pg_table)
    assert not lost
    fault_stats.record(
        f"async {driver}: killed between scopes",
        "pg_terminate_backend x4 (idle)",
        scopes=24,
        faults=len(killed),
        errors=errors,
        rows_lost=len(lost),
    )


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_async_backend_terminated_mid_transaction(
    driver: str,
    make_engine: Any,
    pg_app_url: str,
    app_name: str,
    pg_faults: sa.Engine,
    pg_table: str,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: the backend of an open AsyncSession transaction is killed between statements.
    Guarantee: exactly one error, a DisconnectError (a DBAPIError); committed rows stay,
    uncommitted ones do not; the next scope runs on a fresh backend; nothing stays checked
    out."""
    engine = make_engine(
        pg_app_url, driver, pool={"size": 2}, session={"application_name": app_name}
    )
    caught: list[BaseException] = []

    async def main() -> tuple[int, int]:
        async with AsyncSession(engine) as s, s.begin():
            for i in range(10):
                await insert(s, pg_table, i)
        killed_pid = 0
        try:
            async with AsyncSession(engine) as s, s.begin():
                await insert(s, pg_table, 100)
                killed_pid = await pid_of(s)
                assert terminate(pg_faults, app_name) == [killed_pid]
                await wait_gone(pg_faults, app_name)
                await insert(s, pg_table, 101)
        except Exception as e:
            caught.append(secret_watch.saw(e))
        async with AsyncSession(engine) as s, s.begin():
            await insert(s, pg_table, 200)
            fresh = await pid_of(s)
        assert pool_status("main", engine.sync_engine).checked_out == 0
        await engine.dispose()
        return killed_pid, fresh

    killed_pid, fresh = asyncio.run(main())
    assert len(caught) == 1, caught
    assert isinstance(caught[0], dbconf.DisconnectError)
    assert isinstance(caught[0], sa.exc.DBAPIError)
    assert caught[0].connection_invalidated
    assert fresh != killed_pid
    ids = table_ids(pg_faults, pg_table)
    lost = (set(range(10)) | {200}) - ids
    assert not lost
    assert not ids & {100, 101}, "uncommitted rows survived"
    fault_stats.record(
        f"async {driver}: killed mid-tx",
        "pg_terminate_backend in a transaction",
        scopes=3,
        faults=1,
        errors=len(caught),
        rows_lost=len(lost),
    )


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_async_statement_timeouts_under_concurrency(
    driver: str,
    make_engine: Any,
    pg_app_url: str,
    app_name: str,
    pg_faults: sa.Engine,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: ten concurrent scopes each run a statement past the server's 300 ms statement
    timeout. Guarantee: each gets a StatementTimeoutError within a few seconds, no connection
    is invalidated (the same backends serve the next scopes), nothing stays checked out."""
    engine = make_engine(
        pg_app_url,
        driver,
        pool={"size": 10, "max_overflow": 0},
        session={"application_name": app_name, "statement_timeout": "300"},
    )

    async def slow() -> BaseException | None:
        try:
            async with AsyncSession(engine) as s:
                await s.execute(sa.text("SELECT pg_sleep(5)"))
        except Exception as e:
            return secret_watch.saw(e)
        return None

    async def main() -> tuple[list[BaseException | None], float, int]:
        start = time.monotonic()
        results = await asyncio.gather(*(slow() for _ in range(10)))
        elapsed = time.monotonic() - start
        async with AsyncSession(engine) as s:
            assert (await s.execute(sa.text("SELECT 1"))).scalar_one() == 1
        out = pool_status("main", engine.sync_engine).checked_out
        assert out is not None
        await engine.dispose()
        return results, elapsed, out

    results, elapsed, out = asyncio.run(main())
    assert all(isinstance(r, dbconf.StatementTimeoutError) for r in results), results
    assert not any(getattr(r, "connection_invalidated", True) for r in results)
    assert elapsed < 4.5
    assert out == 0
    fault_stats.record(
        f"async {driver}: statement timeouts",
        "statement_timeout 300ms x10 concurrent",
        scopes=11,
        faults=10,
        errors=0,
        seconds=elapsed,
    )


@pytest.mark.parametrize("driver", [*PG_DRIVERS, "aiomysql", "aiosqlite"])
def test_async_pool_exhaustion_every_waiter_answered(
    driver: str,
    request: pytest.FixtureRequest,
    make_engine: Any,
    tmp_path: Any,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: 40 tasks share a pool of 2 (no overflow, pool.timeout 0.5 s) and each holds its
    connection 0.2 s. Guarantee: every task is answered (a result or a PoolExhaustedError
    naming the pool's settings), none hangs, and afterwards nothing is checked out."""
    if driver == "aiosqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'faults-async.db'}"
    else:
        url = request.getfixturevalue("maria_url" if driver == "aiomysql" else "pg_app_url")
    engine = make_engine(
        url,
        driver,
        pool={"size": 2, "max_overflow": 0, "timeout": 0.5},
        leak_detection={"threshold": "1h"},
    )
    sleep = "SELECT SLEEP(0.2)" if driver == "aiomysql" else "SELECT pg_sleep(0.2)"

    async def task() -> str:
        try:
            async with AsyncSession(engine) as s:
                if driver == "aiosqlite":
                    await s.execute(sa.text("SELECT 1"))
                    await asyncio.sleep(0.2)
                else:
                    await s.execute(sa.text(sleep))
            return "ok"
        except dbconf.PoolExhaustedError as e:
            secret_watch.saw(e)
            return "exhausted" if "pool.size 2, pool.max_overflow 0" in str(e) else str(e)

    async def main() -> tuple[list[str], float]:
        start = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(*(task() for _ in range(40))), 60)
        elapsed = time.monotonic() - start
        assert pool_status("main", engine.sync_engine).checked_out == 0
        assert pool_status("main", engine.sync_engine).holders == ()
        await engine.dispose()
        return results, elapsed

    results, elapsed = asyncio.run(main())
    assert len(results) == 40
    assert set(results) <= {"ok", "exhausted"}, results
    assert results.count("ok") >= 2
    assert results.count("exhausted") >= 1
    fault_stats.record(
        f"async {driver}: pool exhaustion",
        "40 tasks over size 2, timeout 0.5s",
        scopes=40,
        faults=0,
        errors=results.count("exhausted"),
        ok=results.count("ok"),
        seconds=elapsed,
    )
