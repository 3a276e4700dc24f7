"""LockTimeoutError against the real servers, for every driver (psycopg2, psycopg 3, asyncpg,
psycopg async, PyMySQL, aiomysql, sqlite3, aiosqlite).

A second connection, outside dbconf, holds a row lock in an open transaction (SQLite: the
database file's write lock); a dbconf database with a short ``timeouts.lock``, or a ``NOWAIT``
statement, runs into it. The holder takes its lock before the waiter starts (no race, no
sleep), and what happens after the error is read from the servers themselves: PostgreSQL's
aborted transaction, InnoDB's open one, SQLite's open one, the connection back in the pool.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import sqlite3
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import dbconf
from dbconf.config import DatabaseConfig
from dbconf.config.urls import mask_url
from dbconf.dialects import mysql, postgresql, sqlite
from dbconf.errors import DbconfError, LockTimeoutError
from dbconf.runtime.registry import Database
from dbconf.sessions.resilience import retry_reason

PASSWORD = "s3cr3t-lock-pw"  # the test PostgreSQL trusts loopback: accepted, never checked
SYNC = ["psycopg2", "psycopg", "pymysql", "pysqlite"]
ASYNC = ["asyncpg", "psycopg_async", "aiomysql", "aiosqlite"]
KIND = {"pymysql": "maria", "aiomysql": "maria", "pysqlite": "lite", "aiosqlite": "lite"}
# the shortest lock timeout each server takes (MariaDB: whole seconds)
LIMIT = {"pg": 0.2, "maria": 1.0, "lite": 0.2}
IDENTITY = {"pg": "SELECT pg_backend_pid()", "maria": "SELECT CONNECTION_ID()"}
WAIT_FOR_ROW_1 = "UPDATE {t} SET v = 2 WHERE id = 1"


def kind(driver: str) -> str:
    return KIND.get(driver, "pg")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@dataclass
class Target:
    """A table ``(id, v)`` with rows 1 and 2 on one server, and how to lock row 1 there."""

    kind: str
    url: str  # the sync URL (PostgreSQL: with a password), to configure dbconf with
    table: str
    admin: sa.Engine  # AUTOCOMMIT, outside dbconf

    @contextmanager
    def holding_row_1(self) -> Iterator[None]:
        """Row 1 locked by an open transaction of another connection until the block ends
        (SQLite: the whole file, by a transaction that wrote)."""
        if self.kind == "lite":
            holder = sqlite3.connect(sa.make_url(self.url).database or "", isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            holder.execute(f"UPDATE {self.table} SET v = 1 WHERE id = 1")
            try:
                yield
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            return
        with self.admin.connect() as holder:
            holder.exec_driver_sql("BEGIN")
            holder.exec_driver_sql(f"UPDATE {self.table} SET v = 1 WHERE id = 1")
            try:
                yield
            finally:
                holder.exec_driver_sql("ROLLBACK")

    def value(self, ident: int) -> Any:
        with self.admin.connect() as conn:
            return conn.exec_driver_sql(f"SELECT v FROM {self.table} WHERE id = {ident}").scalar()


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], Target]]:
    made: list[Target] = []

    def make(which: str) -> Target:
        table = unique("t_lock")
        if which == "lite":
            url = f"sqlite:///{tmp_path}/{table}.db"
        else:
            url = request.getfixturevalue("pg_url" if which == "pg" else "maria_url")
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        engine = " ENGINE=InnoDB" if which == "maria" else ""
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE TABLE {table} (id int PRIMARY KEY, v int){engine}")
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES (1, 0), (2, 0)")
        if which == "pg":
            url = sa.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)
        made.append(Target(which, url, table, admin))
        return made[-1]

    yield make
    for t in made:
        if t.kind != "lite":
            with t.admin.connect() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {t.table}")
        t.admin.dispose()


def database(t: Target, driver: str, **data: Any) -> Database:
    """A dbconf database on ``t``'s server: ``driver`` as its sync driver, or as its async one
    (the sync URL's default driver beside it)."""
    url = t.url
    if driver in ASYNC:
        data["async_driver"] = driver
    elif driver == "psycopg":
        url = sa.make_url(url).set(drivername="postgresql+psycopg").render_as_string(False)
    return Database("main", DatabaseConfig.model_validate({"url": url, **data}))


class Side:
    """One driver's side of a database: scopes (``work(session)`` in one session scope,
    committed), the pool's checked-out count, and disposal; awaited alike for sync and async
    drivers, so each test is written once."""

    def __init__(self, db: Database, driver: str) -> None:
        self.db = db
        self.is_async = driver in ASYNC

    async def scope(self, work: Callable[[Session], Any]) -> Any:
        if self.is_async:
            async with self.db.async_session() as s:
                return await s.run_sync(work)
        with self.db.session() as s:
            return work(s)

    def checked_out(self) -> int | None:
        status = self.db.async_pool_status() if self.is_async else self.db.pool_status()
        return status.checked_out

    async def dispose(self) -> None:
        if self.is_async:
            await self.db.adispose()
        self.db.dispose()


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())


def identity(k: str) -> Callable[[Session], Any]:
    """The server session of a scope's connection (SQLite: the driver's connection object)."""
    if k == "lite":
        return lambda s: s.connection().connection.dbapi_connection
    return lambda s: s.execute(sa.text(IDENTITY[k])).scalar_one()


def execute(sql: str) -> Callable[[Session], Any]:
    return lambda s: s.execute(sa.text(sql))


# --- a lock wait past timeouts.lock ----------------------------------------------------------


@pytest.mark.parametrize("driver", SYNC + ASYNC)
def test_a_lock_wait_past_timeouts_lock_is_a_lock_timeout_error(
    driver: str,
    target: Callable[[str], Target],
    assert_no_secret: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    k = kind(driver)
    t = target(k)
    limit = LIMIT[k]
    side = Side(database(t, driver, timeouts={"lock": f"{round(limit * 1000)}ms"}), driver)
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        try:
            before = await side.scope(identity(k))
            with t.holding_row_1():
                started = time.monotonic()
                with pytest.raises(LockTimeoutError) as caught:
                    await side.scope(execute(WAIT_FOR_ROW_1.format(t=t.table)))
                waited = time.monotonic() - started
                assert side.checked_out() == 0  # the scope gave its connection back
            assert limit * 0.9 <= waited < limit + 5  # it waited for the lock, then gave up
            after = await side.scope(identity(k))  # the same connection serves the next scope,
            assert after is before if k == "lite" else after == before
            await side.scope(execute(WAIT_FOR_ROW_1.format(t=t.table)))  # which gets the lock
            assert side.checked_out() == 0
        finally:
            await side.dispose()
        check_error(caught.value, side.db, driver)
        errors.append(caught.value)

    errors: list[LockTimeoutError] = []
    run(main)
    assert t.value(1) == 2
    assert_no_secret([*errors, *caplog.records], PASSWORD)


def check_error(error: LockTimeoutError, db: Database, driver: str) -> None:
    k = kind(driver)
    assert isinstance(error, DbconfError)
    assert isinstance(error, sa.exc.OperationalError)  # what SQLAlchemy raised (asyncpg: a
    assert isinstance(error, sa.exc.DBAPIError)  # DBAPIError, which OperationalError is too)
    assert not error.connection_invalidated
    assert error.database == "main"
    assert error.orig is error.__cause__  # chained to the driver's exception
    assert retry_reason(error) is None
    copy = pickle.loads(pickle.dumps(error))  # e.g. across a multiprocessing boundary
    assert (type(copy), str(copy)) == (type(error), str(error))
    masked = mask_url(db.config.async_url) if driver in ASYNC else db.config.masked_url()
    text = str(error)
    assert text.startswith(f"database 'main' ({masked}): ")
    assert str(error.orig).splitlines()[0] in text  # what the driver said
    assert f"timeouts.lock {LIMIT[k]:g}s" in text
    assert "raise timeouts.lock if waiting longer is acceptable" in text
    if k == "pg":
        assert error.orig is not None
        assert (getattr(error.orig, "pgcode", None) or error.orig.sqlstate) == "55P03"  # type: ignore[attr-defined]
        assert "lock_timeout" in text
        assert "PostgreSQL aborted the transaction" in text
        assert "pg_stat_activity and pg_locks" in text
    elif k == "maria":
        assert error.orig is not None
        assert error.orig.args[0] == 1205
        assert "innodb_lock_wait_timeout" in text
        assert "the transaction is still open" in text
        assert "information_schema.INNODB_TRX" in text
    else:
        assert "database is locked" in text
        assert "another connection holds a lock on the database file" in text
        assert "journal_mode: wal" in text


# --- what is left of the transaction ---------------------------------------------------------


def test_postgresql_aborts_the_transaction(target: Callable[[str], Target]) -> None:
    t = target("pg")
    db = database(t, "psycopg2", timeouts={"lock": "200ms"})
    try:
        with t.holding_row_1(), db.session() as s:
            s.execute(sa.text(f"UPDATE {t.table} SET v = 5 WHERE id = 2"))
            with pytest.raises(LockTimeoutError):
                s.execute(sa.text(WAIT_FOR_ROW_1.format(t=t.table)))
            with pytest.raises(sa.exc.DBAPIError) as aborted:
                s.execute(sa.text("SELECT 1"))
            assert aborted.value.orig.pgcode == "25P02"  # type: ignore[union-attr]
            assert not isinstance(aborted.value, LockTimeoutError)
            s.rollback()
            assert s.execute(sa.text("SELECT 1")).scalar_one() == 1
        assert db.pool_status().checked_out == 0
    finally:
        db.dispose()
    assert t.value(2) == 0  # the earlier UPDATE went with the rollback


def test_postgresql_savepoint_keeps_the_transaction(target: Callable[[str], Target]) -> None:
    t = target("pg")
    db = database(t, "psycopg2", timeouts={"lock": "200ms"})
    try:
        with t.holding_row_1(), db.session() as s:
            s.execute(sa.text(f"UPDATE {t.table} SET v = 5 WHERE id = 2"))
            with pytest.raises(LockTimeoutError), s.begin_nested():
                s.execute(sa.text(WAIT_FOR_ROW_1.format(t=t.table)))
            assert s.execute(sa.text(f"SELECT v FROM {t.table} WHERE id = 2")).scalar() == 5
    finally:
        db.dispose()
    assert t.value(2) == 5  # committed with the scope


def test_mariadb_rolls_back_only_the_statement(target: Callable[[str], Target]) -> None:
    t = target("maria")
    db = database(t, "pymysql", timeouts={"lock": "1s"})
    try:
        with t.holding_row_1(), db.session() as s:
            s.execute(sa.text(f"UPDATE {t.table} SET v = 5 WHERE id = 2"))
            with pytest.raises(LockTimeoutError):
                s.execute(sa.text(WAIT_FOR_ROW_1.format(t=t.table)))
            assert s.execute(sa.text("SELECT @@in_transaction")).scalar() == 1
            assert s.execute(sa.text(f"SELECT v FROM {t.table} WHERE id = 2")).scalar() == 5
        # the scope commits: the work before the timed-out statement is kept
    finally:
        db.dispose()
    assert (t.value(1), t.value(2)) == (0, 5)


def test_sqlite_leaves_the_transaction_open(target: Callable[[str], Target]) -> None:
    t = target("lite")
    db = database(t, "pysqlite", timeouts={"lock": "200ms"})
    try:
        with t.holding_row_1(), db.session() as s:
            with pytest.raises(LockTimeoutError):
                s.execute(sa.text(WAIT_FOR_ROW_1.format(t=t.table)))
            raw = s.connection().connection.dbapi_connection
            assert raw is not None
            assert raw.in_transaction
            s.rollback()
            assert not raw.in_transaction
    finally:
        db.dispose()


def test_sqlite_commit_blocked_by_a_reader_is_a_lock_timeout_error(
    target: Callable[[str], Target],
) -> None:
    """Rollback-journal mode: a reader's shared lock keeps the writer from committing."""
    t = target("lite")
    db = database(t, "pysqlite", timeouts={"lock": "200ms"})
    reader = sqlite3.connect(sa.make_url(t.url).database or "", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute(f"SELECT v FROM {t.table}").fetchall()  # holds a shared lock
        # the UPDATE gets its (reserved) lock; the scope's COMMIT waits for the reader, gives up
        with pytest.raises(LockTimeoutError) as caught, db.session() as s:
            s.execute(sa.text(f"UPDATE {t.table} SET v = 3 WHERE id = 2"))
        reader.execute("ROLLBACK")
        assert caught.value.statement is None  # the COMMIT's, not a statement's
        assert "The statement (or COMMIT) failed" in str(caught.value)
        assert db.pool_status().checked_out == 0
        with db.session() as s:  # the scope rolled back; the connection is usable
            assert s.execute(sa.text(f"SELECT v FROM {t.table} WHERE id = 2")).scalar() == 0
    finally:
        reader.close()
        db.dispose()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="sqlite_errorcode is Python 3.11+")
def test_sqlite_busy_snapshot_in_wal_mode_says_why_there_was_no_wait(
    target: Callable[[str], Target],
) -> None:
    t = target("lite")
    db = database(t, "pysqlite", timeouts={"lock": "5s"}, sqlite={"journal_mode": "wal"})
    other = sqlite3.connect(sa.make_url(t.url).database or "", isolation_level=None)
    try:
        with db.session() as s:  # WAL on, before the other connection writes
            s.execute(sa.text("SELECT 1"))
        with db.session() as s:
            s.execute(sa.text(f"SELECT v FROM {t.table}")).all()  # this transaction's snapshot
            other.execute(f"UPDATE {t.table} SET v = 7 WHERE id = 1")  # written since
            started = time.monotonic()
            with pytest.raises(LockTimeoutError) as caught:
                s.execute(sa.text(f"UPDATE {t.table} SET v = 8 WHERE id = 2"))
            assert time.monotonic() - started < 4  # no busy wait
            s.rollback()
    finally:
        other.close()
        db.dispose()
    assert getattr(caught.value.orig, "sqlite_errorcode", None) == sqlite.BUSY_SNAPSHOT
    assert "SQLITE_BUSY_SNAPSHOT" in str(caught.value)
    assert "Roll it back and run it again" in str(caught.value)


# --- NOWAIT: the same SQLSTATE / error, the same class --------------------------------------


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg", "pymysql", "aiomysql"])
def test_nowait_on_a_locked_row_is_a_lock_timeout_error(
    driver: str, target: Callable[[str], Target]
) -> None:
    t = target(kind(driver))
    side = Side(database(t, driver), driver)  # no timeouts.lock: the server's own (long) wait
    nowait = f"SELECT v FROM {t.table} WHERE id = 1 FOR UPDATE NOWAIT"

    async def main() -> None:
        try:
            with t.holding_row_1():
                started = time.monotonic()
                with pytest.raises(LockTimeoutError) as caught:
                    await side.scope(lambda s: s.execute(sa.text(nowait)).all())
                assert time.monotonic() - started < 5  # at once, not after a lock timeout
            assert await side.scope(lambda s: s.execute(sa.text(nowait)).all()) == [(0,)]
        finally:
            await side.dispose()
        text = str(caught.value)
        assert "or asked not to wait (NOWAIT)" in text
        assert "(timeouts.lock" not in text  # no value: none was configured
        assert not caught.value.connection_invalidated

    run(main)


# --- not retried -----------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["psycopg2", "aiomysql", "aiosqlite"])
def test_run_in_transaction_does_not_retry_a_lock_timeout(
    driver: str, target: Callable[[str], Target], caplog: pytest.LogCaptureFixture
) -> None:
    k = kind(driver)
    t = target(k)
    db = database(t, driver, timeouts={"lock": f"{round(LIMIT[k] * 1000)}ms"})
    calls: list[int] = []
    update = sa.text(WAIT_FOR_ROW_1.format(t=t.table))

    def fn(session: Session) -> None:
        calls.append(1)
        session.execute(update)

    async def afn(session: Any) -> None:
        calls.append(1)
        await session.execute(update)

    async def attempt() -> None:
        if driver in ASYNC:
            await db.run_in_transaction_async(afn, retries=3, backoff=0)
        else:
            db.run_in_transaction(fn, retries=3, backoff=0)

    async def main() -> None:
        try:
            with t.holding_row_1(), pytest.raises(LockTimeoutError):
                await attempt()
        finally:
            await Side(db, driver).dispose()

    caplog.set_level(logging.WARNING, logger="dbconf")
    run(main)
    assert calls == [1]
    assert not [r for r in caplog.records if r.name.startswith("dbconf")]  # no "retrying"


# --- the dialects' codes ---------------------------------------------------------------------


def test_each_dialect_claims_only_its_own_lock_errors(target: Callable[[str], Target]) -> None:
    """The driver exceptions the servers raise, each recognised by its own dialect only;
    MySQL 8's NOWAIT error (3572; no MySQL server here) built as PyMySQL builds it."""
    cfg = DatabaseConfig.model_validate({"url": "sqlite://"})
    raised: dict[str, BaseException] = {}
    for k, driver in (("pg", "psycopg2"), ("maria", "pymysql"), ("lite", "pysqlite")):
        t = target(k)
        db = database(t, driver, timeouts={"lock": "1s"})
        try:
            with t.holding_row_1(), pytest.raises(LockTimeoutError) as caught, db.session() as s:
                s.execute(sa.text(WAIT_FOR_ROW_1.format(t=t.table)))
        finally:
            db.dispose()
        assert caught.value.orig is not None
        raised[k] = caught.value.orig
    mysql_nowait = pymysql.err.OperationalError(3572, "Statement aborted because lock(s) …")
    claims = {
        "pg": postgresql.lock_failure,
        "maria": mysql.lock_failure,
        "lite": sqlite.lock_failure,
    }
    for k, claim in claims.items():
        for other, orig in raised.items():
            assert (claim(orig, "said", cfg) is not None) == (k == other), (k, other)
    assert mysql.lock_failure(mysql_nowait, "said", cfg) is not None
    assert postgresql.lock_failure(mysql_nowait, "said", cfg) is None
    deadlock = pymysql.err.OperationalError(1213, "Deadlock found")
    assert mysql.lock_failure(deadlock, "said", cfg) is None  # retried, not a lock timeout


def test_public_name() -> None:
    assert dbconf.LockTimeoutError is LockTimeoutError
    assert "LockTimeoutError" in dbconf.__all__
