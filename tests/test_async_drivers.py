"""psycopg 3 and the async drivers against the real servers: every translated setting reaches
the server (asyncpg, psycopg 3 sync and async, aiomysql, aiosqlite), the typed statement
timeout, the retry classification of the server's SQLSTATEs, and SQLite's BEGIN/savepoints
through aiosqlite. Uses builder.build_engine / build_async_engine directly."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from dbconf.config import DatabaseConfig
from dbconf.errors import StatementTimeoutError
from dbconf.runtime.builder import build_async_engine, build_engine
from dbconf.sessions.resilience import retry_reason

SLOW_CTE = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
PG_TIMEOUTS = {"connect": 3, "statement": "250ms", "lock": "2s", "idle_in_transaction": "30s"}
PG_SHOW = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")


def db(**data: Any) -> DatabaseConfig:
    return DatabaseConfig.model_validate(data)


def unique(prefix: str) -> str:
    return f"drivers_{prefix}_{uuid.uuid4().hex[:10]}"


def with_driver(url: str, drivername: str) -> str:
    return sa.make_url(url).set(drivername=drivername).render_as_string(hide_password=False)


def raise_sqlstate(state: str) -> str:
    return f"DO $$ BEGIN RAISE EXCEPTION 'drivers test' USING ERRCODE = '{state}'; END $$"


# --- PostgreSQL: psycopg 3 sync -------------------------------------------------------------


def test_psycopg3_sync_settings_reach_the_server(pg_url: str) -> None:
    app = unique("pg3")
    cfg = db(
        url=with_driver(pg_url, "postgresql+psycopg"), application_name=app, timeouts=PG_TIMEOUTS
    )
    engine = build_engine("main", cfg)
    try:
        with engine.connect() as conn:
            shown = [conn.exec_driver_sql(f"SHOW {name}").scalar_one() for name in PG_SHOW]
            assert shown == ["250ms", "2s", "30s"]
            seen = conn.exec_driver_sql(
                "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            ).scalar_one()
            assert seen == app
            assert conn.connection.dbapi_connection.info.get_parameters()["connect_timeout"] == "3"  # type: ignore[union-attr]
            with pytest.raises(StatementTimeoutError) as err:
                conn.exec_driver_sql("SELECT pg_sleep(2)")
            assert getattr(err.value.orig, "sqlstate", None) == "57014"
            conn.rollback()
            for state, reason in (("40001", "serialization failure"), ("40P01", "deadlock")):
                with pytest.raises(sa.exc.DBAPIError) as failed:
                    conn.exec_driver_sql(raise_sqlstate(state))
                assert retry_reason(failed.value) == reason
                conn.rollback()
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
    finally:
        engine.dispose()


# --- PostgreSQL: asyncpg and psycopg 3 async ------------------------------------------------


async def _pg_async_settings(engine: AsyncEngine, app: str) -> None:
    async with engine.connect() as conn:
        shown = [(await conn.exec_driver_sql(f"SHOW {name}")).scalar_one() for name in PG_SHOW]
        assert shown == ["250ms", "2s", "30s"]
        seen = (
            await conn.exec_driver_sql(
                "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            )
        ).scalar_one()
        assert seen == app
        start = time.monotonic()
        with pytest.raises(StatementTimeoutError) as err:
            await conn.exec_driver_sql("SELECT pg_sleep(2)")
        assert time.monotonic() - start < 1.9
        assert getattr(err.value.orig, "sqlstate", None) == "57014"
        await conn.rollback()
        for state, reason in (("40001", "serialization failure"), ("40P01", "deadlock")):
            with pytest.raises(sa.exc.DBAPIError) as failed:
                await conn.exec_driver_sql(raise_sqlstate(state))
            assert retry_reason(failed.value) == reason
            await conn.rollback()
        assert (await conn.exec_driver_sql("SELECT 1")).scalar_one() == 1


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg_async"])
def test_pg_async_settings_reach_the_server(pg_url: str, driver: str) -> None:
    app = unique(driver)
    cfg = db(url=pg_url, async_driver=driver, application_name=app, timeouts=PG_TIMEOUTS)
    assert cfg.async_url is not None
    assert cfg.async_url.drivername == f"postgresql+{driver}"

    async def main() -> None:
        engine = build_async_engine("main", cfg)
        try:
            await _pg_async_settings(engine, app)
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_asyncpg_url_merges_user_server_settings(pg_url: str) -> None:
    cfg = db(
        url=with_driver(pg_url, "postgresql+asyncpg"),
        connect_args={"server_settings": {"search_path": "pg_catalog"}},
        timeouts={"statement": "5s"},
    )

    async def main() -> None:
        engine = build_async_engine("main", cfg)
        try:
            async with engine.connect() as conn:
                path = (await conn.exec_driver_sql("SHOW search_path")).scalar_one()
                statement = (await conn.exec_driver_sql("SHOW statement_timeout")).scalar_one()
                assert (path, statement) == ("pg_catalog", "5s")
        finally:
            await engine.dispose()

    asyncio.run(main())


# --- MariaDB: aiomysql ------------------------------------------------------------------------


def test_aiomysql_settings_reach_the_server(maria_url: str) -> None:
    app = unique("aiomysql")
    cfg = db(
        url=maria_url,
        application_name=app,
        timeouts={
            "connect": "2.5s",
            "statement": "300ms",
            "lock": "3s",
            "idle_in_transaction": "40s",
        },
    )
    assert cfg.async_url is not None
    assert cfg.async_url.drivername == "mariadb+aiomysql"

    async def main() -> None:
        engine = build_async_engine("main", cfg)
        try:
            async with engine.connect() as conn:
                row = (
                    await conn.exec_driver_sql(
                        "SELECT @@max_statement_time, @@innodb_lock_wait_timeout, "
                        "@@idle_transaction_timeout"
                    )
                ).one()
                assert tuple(row) == (0.3, 3, 40)
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                assert driver.connect_timeout == 3
                perf = (await conn.exec_driver_sql("SELECT @@performance_schema")).scalar_one()
                if perf:
                    attr = (
                        await conn.exec_driver_sql(
                            "SELECT ATTR_VALUE FROM performance_schema.session_connect_attrs "
                            "WHERE PROCESSLIST_ID = CONNECTION_ID() AND ATTR_NAME = 'program_name'"
                        )
                    ).scalar_one()
                    assert attr == app
                else:  # performance_schema off: the attribute sent in the handshake
                    assert driver._connect_attrs["program_name"] == app
                start = time.monotonic()
                with pytest.raises(StatementTimeoutError, match="max_statement_time"):
                    await conn.exec_driver_sql("SELECT SLEEP(3)")
                assert time.monotonic() - start < 2
                assert (await conn.exec_driver_sql("SELECT 1")).scalar_one() == 1
        finally:
            await engine.dispose()

    asyncio.run(main())


# --- SQLite: aiosqlite ----------------------------------------------------------------------


def test_aiosqlite_pragmas_busy_timeout_and_statement_deadline(tmp_path: Path) -> None:
    cfg = db(
        url=f"sqlite:///{tmp_path}/a.db",
        timeouts={"lock": "1.5s", "statement": "200ms"},
        sqlite={"journal_mode": "wal", "foreign_keys": True, "synchronous": "normal"},
    )

    async def main() -> None:
        engine = build_async_engine("lite", cfg)
        try:
            async with engine.connect() as conn:
                read = {
                    p: (await conn.exec_driver_sql(f"PRAGMA {p}")).scalar_one()
                    for p in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
                }
                assert read == {
                    "journal_mode": "wal",
                    "foreign_keys": 1,
                    "synchronous": 1,
                    "busy_timeout": 1500,
                }
                start = time.monotonic()
                with pytest.raises(StatementTimeoutError, match="interrupted"):
                    (await conn.exec_driver_sql(SLOW_CTE)).all()
                assert 0.15 < time.monotonic() - start < 2
                await conn.rollback()
                assert (await conn.exec_driver_sql("SELECT 1")).scalar_one() == 1
        finally:
            await engine.dispose()

    asyncio.run(main())


@pytest.mark.parametrize("where", ["memory", "file"])
def test_aiosqlite_savepoint_rollback_keeps_outer_work(where: str, tmp_path: Path) -> None:
    url = "sqlite://" if where == "memory" else f"sqlite:///{tmp_path}/s.db"
    cfg = db(url=url)

    async def main() -> None:
        engine = build_async_engine("lite", cfg)
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("CREATE TABLE t (x int)")
            factory = async_sessionmaker(engine)
            async with factory() as session, session.begin():
                await session.execute(sa.text("INSERT INTO t VALUES (1)"))
                nested = await session.begin_nested()
                await session.execute(sa.text("INSERT INTO t VALUES (2)"))
                await nested.rollback()
                await session.execute(sa.text("INSERT INTO t VALUES (3)"))
            async with engine.connect() as conn:
                rows = (await conn.exec_driver_sql("SELECT x FROM t ORDER BY x")).scalars().all()
                assert rows == [1, 3]
        finally:
            await engine.dispose()

    asyncio.run(main())
