"""Typed errors for the async drivers (asyncpg, psycopg async, aiomysql): DisconnectError after
a terminated backend, StatementTimeoutError, ConnectError with the right hint, retry_reason
for serialization failures and deadlocks, bound values hidden, no password in any text."""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from dbconf.config import DatabaseConfig
from dbconf.errors import ConnectError, DisconnectError, StatementTimeoutError
from dbconf.runtime.builder import build_async_engine
from dbconf.sessions.resilience import retry_reason

PG_DRIVERS = ["asyncpg", "psycopg_async"]
SERVER_DRIVERS = [*PG_DRIVERS, "aiomysql"]
SECRET_VALUE = "4111-2222-3333-4444"


def as_driver(url: str, driver: str) -> str:
    base = "mysql" if driver == "aiomysql" else "postgresql"
    return sa.make_url(url).set(drivername=f"{base}+{driver}").render_as_string(False)


@pytest.fixture
def server_url(request: pytest.FixtureRequest) -> Callable[[str], str]:
    def get(driver: str) -> str:
        fixture = "maria_url" if driver == "aiomysql" else "pg_url"
        return as_driver(request.getfixturevalue(fixture), driver)

    return get


@pytest.fixture
def make_engine() -> Iterator[Callable[..., AsyncEngine]]:
    made: list[AsyncEngine] = []

    def make(url: str, name: str = "main", **settings: Any) -> AsyncEngine:
        engine = build_async_engine(name, DatabaseConfig.model_validate({"url": url, **settings}))
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.sync_engine.dispose(close=False)


async def kill_backend(driver: str, conn: Any, admin_url: str) -> None:
    """End the server session of ``conn`` from another connection."""
    if driver == "aiomysql":
        pid = (await conn.execute(sa.text("SELECT CONNECTION_ID()"))).scalar_one()
        admin = sa.create_engine(admin_url, poolclass=sa.NullPool)
        with admin.connect() as a:
            a.execute(sa.text(f"KILL {int(pid)}"))
        admin.dispose()
        return
    pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as a:
        a.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        for _ in range(100):  # the backend leaves pg_stat_activity asynchronously
            gone = a.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
            ).scalar_one()
            if not gone:
                break
            await asyncio.sleep(0.05)
    admin.dispose()


@pytest.mark.parametrize("driver", SERVER_DRIVERS)
def test_terminated_backend_is_a_disconnect_error_and_the_pool_recovers(
    driver: str, request: pytest.FixtureRequest, server_url: Any, make_engine: Any
) -> None:
    admin_url = request.getfixturevalue("maria_url" if driver == "aiomysql" else "pg_url")
    name = f"pool_disc_{driver}"
    engine = make_engine(server_url(driver), name)

    async def main() -> None:
        async with engine.connect() as conn:
            await kill_backend(driver, conn, admin_url)
            with pytest.raises(DisconnectError) as caught:
                await conn.execute(sa.text("SELECT 1"))
        error = caught.value
        assert error.connection_invalidated
        assert error.database == name
        assert f"database {name!r} ({sa.make_url(server_url(driver)).drivername}://" in str(error)
        assert "the connection was lost while running a statement" in str(error)
        assert retry_reason(error) == "disconnect"
        async with engine.connect() as conn:  # a fresh connection
            assert (await conn.execute(sa.text("SELECT 1"))).scalar_one() == 1
        await engine.dispose()

    asyncio.run(main())


@pytest.mark.parametrize("driver", SERVER_DRIVERS)
def test_statement_timeout_is_typed_and_the_connection_stays_usable(
    driver: str, server_url: Any, make_engine: Any
) -> None:
    engine = make_engine(server_url(driver), f"pool_timeout_{driver}")
    if driver == "aiomysql":
        limit, sleep = "SET SESSION max_statement_time = 0.2", "SELECT SLEEP(5)"
    else:
        limit, sleep = "SET statement_timeout = 200", "SELECT pg_sleep(5)"

    async def main() -> None:
        async with engine.connect() as conn:
            await conn.execute(sa.text(limit))
            with pytest.raises(StatementTimeoutError) as caught:
                await conn.execute(sa.text(sleep))
            if driver != "aiomysql":  # PostgreSQL aborts the transaction; MariaDB does not
                await conn.rollback()
            assert (await conn.execute(sa.text("SELECT 1"))).scalar_one() == 1
        assert "ran past the statement timeout" in str(caught.value)
        assert not caught.value.connection_invalidated
        await engine.dispose()

    asyncio.run(main())


def _hint_cases(driver: str, url: str) -> list[tuple[str, str]]:
    u = sa.make_url(url)
    return [
        (u.set(port=1).render_as_string(False), "server is running and reachable"),
        (u.set(database="pool_no_such_db").render_as_string(False), "create the database"),
        (u.set(username="pool_no_such_role").render_as_string(False), "user name and password"),
    ]


@pytest.mark.parametrize("driver", SERVER_DRIVERS)
def test_connect_failures_are_connect_errors_with_the_right_hint(
    driver: str, server_url: Any, make_engine: Any
) -> None:
    async def main() -> None:
        for url, hint in _hint_cases(driver, server_url(driver)):
            engine = make_engine(url, "pool_connect")
            with pytest.raises(ConnectError) as caught:
                async with engine.connect():
                    pass
            assert hint in str(caught.value), (url, str(caught.value))
            assert "could not connect" in str(caught.value)
            await engine.dispose()

    asyncio.run(main())


@pytest.mark.parametrize("driver", PG_DRIVERS)
@pytest.mark.parametrize(
    ("errcode", "reason"),
    [("serialization_failure", "serialization failure"), ("deadlock_detected", "deadlock")],
)
def test_retry_reason_for_postgresql_async_drivers(
    driver: str, errcode: str, reason: str, server_url: Any, make_engine: Any
) -> None:
    engine = make_engine(server_url(driver), "pool_retry")
    raise_it = f"DO $$ BEGIN RAISE EXCEPTION 'pool test' USING ERRCODE = '{errcode}'; END $$"

    async def main() -> None:
        async with engine.connect() as conn:
            with pytest.raises(sa.exc.DBAPIError) as caught:
                await conn.execute(sa.text(raise_it))
        assert retry_reason(caught.value) == reason
        await engine.dispose()

    asyncio.run(main())


def test_retry_reason_for_a_real_aiomysql_deadlock(server_url: Any, make_engine: Any) -> None:
    engine = make_engine(server_url("aiomysql"), "pool_deadlock")
    table = f"pool_dl_{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"CREATE TABLE {table} (id INT PRIMARY KEY, n INT)"))
            await conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 0), (2, 0)"))
        try:
            a, b = await engine.connect(), await engine.connect()
            await a.begin()
            await b.begin()
            await a.execute(sa.text(f"UPDATE {table} SET n = 1 WHERE id = 1"))
            await b.execute(sa.text(f"UPDATE {table} SET n = 1 WHERE id = 2"))
            results = await asyncio.gather(
                a.execute(sa.text(f"UPDATE {table} SET n = 2 WHERE id = 2")),
                b.execute(sa.text(f"UPDATE {table} SET n = 2 WHERE id = 1")),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            assert len(errors) == 1, results
            assert retry_reason(errors[0]) == "deadlock"
            await a.close()
            await b.close()
        finally:
            async with engine.begin() as conn:
                await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
            await engine.dispose()

    asyncio.run(main())


@pytest.mark.parametrize("driver", SERVER_DRIVERS)
def test_hide_parameters_strips_echoed_values(
    driver: str, server_url: Any, make_engine: Any
) -> None:
    engine = make_engine(server_url(driver), "pool_hide")
    table = f"pool_hide_{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"CREATE TABLE {table} (card VARCHAR(40) PRIMARY KEY)"))
            await conn.execute(sa.text(f"INSERT INTO {table} VALUES (:c)"), {"c": SECRET_VALUE})
        errors: list[BaseException] = []
        statements = [f"INSERT INTO {table} VALUES (:c)"]
        if driver != "aiomysql":
            statements.append("SELECT CAST(:c AS integer)")
        try:
            for statement in statements:
                with pytest.raises(sa.exc.DBAPIError) as caught:
                    async with engine.begin() as conn:
                        await conn.execute(sa.text(statement), {"c": SECRET_VALUE})
                errors.append(caught.value)
        finally:
            async with engine.begin() as conn:
                await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
            await engine.dispose()
        for error in errors:
            texts = [str(error), repr(error), str(error.orig), repr(error.orig.args)]  # type: ignore[attr-defined]
            assert not any(SECRET_VALUE in t for t in texts), texts
        # the server echoed the value somewhere (MariaDB's duplicate entry, the cast error)
        assert any("values hidden by hide_parameters" in str(e) for e in errors)

    asyncio.run(main())


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_password_never_in_async_error_or_log_texts(
    driver: str,
    pg_secret_url: str,
    secret_password: str,
    pg_url: str,
    make_engine: Any,
    caplog: pytest.LogCaptureFixture,
    assert_no_secret: Callable[[Iterable[object], str], None],
) -> None:
    caplog.set_level(logging.DEBUG)
    url = sa.make_url(as_driver(pg_secret_url, driver))
    seen: list[object] = []

    async def main() -> None:
        engine = make_engine(url.render_as_string(False), "pool_secret", echo=True)
        async with engine.connect() as conn:
            with pytest.raises(sa.exc.DBAPIError) as caught:
                await conn.execute(sa.text("SELECT 1/0"))
            seen.append(caught.value)
        async with engine.connect() as conn:
            await kill_backend(driver, conn, pg_url)
            with pytest.raises(DisconnectError) as lost:
                await conn.execute(sa.text("SELECT 1"))
            seen.append(lost.value)
        await engine.dispose()
        for bad in (url.set(database="pool_no_such_db"), url.set(port=1)):
            engine = make_engine(bad.render_as_string(False), "pool_secret")
            with pytest.raises(ConnectError) as failed:
                async with engine.connect():
                    pass
            seen.append(failed.value)
            await engine.dispose()

    asyncio.run(main())
    assert len(seen) == 4
    assert_no_secret([*seen, *caplog.records], secret_password)


def test_connect_hint_for_async_driver_error_forms() -> None:
    from dbconf.sessions.driver_errors import connect_hint

    class AsyncpgLikeError(Exception):
        def __init__(self, message: str, sqlstate: str) -> None:
            super().__init__(message)
            self.sqlstate = sqlstate

    wrapped = Exception("ConnectionRefusedError: [Errno 111] Connect call failed")
    wrapped.__cause__ = ConnectionRefusedError(111, "Connect call failed")
    assert "reachable" in connect_hint(ConnectionRefusedError(111, "refused"))
    assert "reachable" in connect_hint(TimeoutError())
    assert "reachable" in connect_hint(wrapped)
    assert "password" in connect_hint(AsyncpgLikeError("no such role", "28000"))
    assert "password" in connect_hint(AsyncpgLikeError("bad password", "28P01"))
    assert "create the database" in connect_hint(AsyncpgLikeError("no such db", "3D000"))


def test_retry_reason_reads_the_mysql_errno_before_its_sqlstate() -> None:
    class PyMySQLLikeError(Exception):
        sqlstate = "40001"  # what PyMySQL reports for a deadlock (1213)

    error = sa.exc.OperationalError("UPDATE t", {}, PyMySQLLikeError(1213, "Deadlock found"))
    assert retry_reason(error) == "deadlock"


# Python 3.10 has no Task.cancelling(), and SQLAlchemy's greenlet bridge drops the chain that
# would name the CancelledError (see dbconf.resilience): a known gap there, kept visible
_PY310_GAP = pytest.mark.xfail(
    sys.version_info < (3, 11),
    reason="3.10: no Task.cancelling(), and the greenlet bridge drops the exception chain",
    strict=True,
)


@pytest.mark.parametrize(
    "driver", ["asyncpg", "psycopg_async", pytest.param("aiomysql", marks=_PY310_GAP), "aiosqlite"]
)
def test_a_driver_error_caused_by_cancelling_a_connect_is_the_cancellation(
    driver: str, server_url: Any, make_engine: Any, tmp_path: Path
) -> None:
    """A task cancelled while its connection is being set up sees CancelledError, not the
    ConnectError of the driver's error that followed (the flaky stress test's failure: on
    SQLAlchemy 2.0 the rollback after a cancelled first connect fails on the connection aiomysql
    closed, "Cancelled during execution"). A ``connect`` listener reproduces it on every
    version: the task is cancelled before its statement's first await, deterministically; the
    ``finally`` then calls the driver on the interrupted connection. The pool counts stay
    right, and the next connect works."""
    url = f"sqlite+aiosqlite:///{tmp_path}/c.db" if driver == "aiosqlite" else server_url(driver)
    engine = make_engine(url, pool={"size": 1, "max_overflow": 1})
    pool = engine.sync_engine.pool
    base_overflow = pool.overflow()
    cancel_next = [True]

    @sa.event.listens_for(engine.sync_engine, "connect")
    def setup(dbapi_connection: Any, _record: Any) -> None:
        if not cancel_next:
            return
        cancel_next.clear()
        cursor = dbapi_connection.cursor()
        try:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # delivered at the statement's first await
            cursor.execute("SELECT 1")
        finally:
            dbapi_connection.rollback()  # like SQLAlchemy 2.0 after its first connect

    seen: list[BaseException] = []

    async def victim() -> None:
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except BaseException as exc:
            seen.append(exc)
            raise

    async def main() -> None:
        task = asyncio.ensure_future(victim())
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        assert [type(e) for e in seen] == [asyncio.CancelledError]
        assert pool.checkedout() == 0
        assert pool.overflow() == base_overflow
        async with engine.connect() as conn:  # the listener lets this one through
            assert (await conn.execute(sa.text("SELECT 1"))).scalar_one() == 1
        assert pool.checkedout() == 0
        await engine.dispose()

    asyncio.run(main())
