"""Through a real PgBouncer in transaction mode (``.ci/pgbouncer``, TEST_PGBOUNCER_URL), for
psycopg2, psycopg 3 and asyncpg: with ``pooler: pgbouncer_transaction`` concurrent
parameterized queries run without a prepared-statement error, the timeouts are enforced per
transaction and leak to no other client, run_in_transaction retries; without ``pooler:`` the
same work fails as PgBouncer makes it fail (so the knob is what makes it work)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from migrate_support import scratch_databases, tables, write_scripts
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dbconf.cli import main
from dbconf.config import DatabaseConfig
from dbconf.dialects.pgbouncer import admin_version
from dbconf.errors import ConnectError, LockTimeoutError, StatementTimeoutError
from dbconf.runtime.registry import Database
from dbconf.runtime.reports import pooler_status

DRIVERS = ("psycopg2", "psycopg", "asyncpg")
POOLER = {"pooler": "pgbouncer_transaction"}
THREADS, TASKS, SCOPES, QUERIES = 8, 200, 10, 3
CREATE_NOTES = 'op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True))'


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def database(url: str, driver: str, **data: Any) -> Database:
    """A database through PgBouncer, with ``driver`` as its sync or its async driver."""
    if driver == "asyncpg":
        data["async_driver"] = "asyncpg"
    else:
        url = sa.make_url(url).set(drivername=f"postgresql+{driver}").render_as_string(False)
    return Database("main", DatabaseConfig.model_validate({"url": url, **data}))


def run(db: Database, driver: str, work: Any) -> Any:
    """``work(session)`` in one scope, on the sync or the async side."""
    if driver != "asyncpg":
        with db.session() as s:
            return work(s)

    async def scope() -> Any:
        try:
            async with db.async_session() as s:
                return await s.run_sync(work)
        finally:
            await db.adispose()

    return asyncio.run(scope())


def load(db: Database, driver: str) -> tuple[int, list[str]]:
    """8 threads (sync) or 200 tasks (asyncpg) running parameterized queries in scopes; the
    number of checked results and the errors (first line each)."""
    errors: list[str] = []
    done = Counter[str]()
    sql = sa.text("SELECT CAST(:a AS int) + CAST(:b AS int), CAST(:s AS text)")

    def check(row: Any, a: int, b: int) -> None:
        assert tuple(row) == (a + b, f"{a}-{b}")
        done["ok"] += 1

    if driver != "asyncpg":

        def worker(i: int) -> None:
            for j in range(SCOPES):
                try:
                    with db.session() as s:
                        for k in range(QUERIES):
                            row = s.execute(sql, {"a": i, "b": j + k, "s": f"{i}-{j + k}"}).one()
                            check(row, i, j + k)
                except sa.exc.DBAPIError as e:
                    errors.append(str(e).splitlines()[0])

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(worker, range(THREADS * 3)))
        return done["ok"], errors

    async def main() -> None:
        async def task(i: int) -> None:
            try:
                async with db.async_session() as s:
                    for k in range(QUERIES):
                        row = (await s.execute(sql, {"a": i, "b": k, "s": f"{i}-{k}"})).one()
                        check(row, i, k)
            except sa.exc.DBAPIError as e:
                errors.append(str(e).splitlines()[0])

        try:
            for _ in range(2):  # twice: the second round reuses the pooled connections
                await asyncio.gather(*(task(i) for i in range(TASKS)))
        finally:
            await db.adispose()

    asyncio.run(main())
    return done["ok"], errors


def alternate(db: Database, driver: str) -> list[str]:
    """Two client connections taking turns, one transaction each turn, the same parameterized
    query 10 times each: PgBouncer hands each turn the server connection released last, so
    what one client prepared there is seen by the other. The errors (first line each)."""
    errors: list[str] = []
    sql = sa.text("SELECT CAST(:a AS int) + 1")
    if driver != "asyncpg":
        with db.engine.connect() as a, db.engine.connect() as b:
            for i in range(10):
                for conn in (a, b):
                    try:
                        assert conn.execute(sql, {"a": i}).scalar_one() == i + 1
                        conn.commit()
                    except sa.exc.DBAPIError as e:
                        errors.append(str(e).splitlines()[0])
                        conn.rollback()
        return errors

    async def main() -> None:
        try:
            async with db.async_engine.connect() as a, db.async_engine.connect() as b:
                for i in range(10):
                    for conn in (a, b):
                        try:
                            assert (await conn.execute(sql, {"a": i})).scalar_one() == i + 1
                            await conn.commit()
                        except sa.exc.DBAPIError as e:
                            errors.append(str(e).splitlines()[0])
                            await conn.rollback()
        finally:
            await db.adispose()

    asyncio.run(main())
    return errors


@pytest.fixture
def table(pg_admin: sa.Engine) -> Iterator[str]:
    """A fresh table ``(id int primary key, v int)`` with rows 1 and 2, dropped afterwards."""
    name = unique("t_pgb")
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id int PRIMARY KEY, v int)")
        conn.exec_driver_sql(f"INSERT INTO {name} VALUES (1, 0), (2, 0)")
    yield name
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


# --- concurrent parameterized queries --------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_concurrent_queries_have_no_prepared_statement_errors(
    pgbouncer_url: str, driver: str
) -> None:
    db = database(
        pgbouncer_url,
        driver,
        **POOLER,
        timeouts={"statement": "30s", "lock": "10s", "connect": 5},
        application_name="dbconf_pgb",
        pool={"size": 8, "max_overflow": 4},
    )
    try:
        ok, errors = load(db, driver)
    finally:
        db.dispose()
    assert errors == []
    expected = THREADS * 3 * SCOPES * QUERIES if driver != "asyncpg" else 2 * TASKS * QUERIES
    assert ok == expected


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
def test_without_pooler_prepared_statements_collide(pgbouncer_url: str, driver: str) -> None:
    db = database(pgbouncer_url, driver, pool={"size": 8, "max_overflow": 4})
    try:
        turns = alternate(db, driver)
        _, errors = load(db, driver)  # under load too (how often depends on the scheduling)
    finally:
        db.dispose()
    # psycopg 3 fails taking turns (deterministic), asyncpg under load (its statement names
    # collide as soon as two clients' transactions share a server connection)
    assert turns if driver == "psycopg" else errors, "expected prepared-statement errors"
    assert all("prepared statement" in e for e in turns + errors), (turns + errors)[:3]


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
def test_with_pooler_clients_taking_turns_have_no_errors(pgbouncer_url: str, driver: str) -> None:
    db = database(pgbouncer_url, driver, **POOLER)
    try:
        assert alternate(db, driver) == []
    finally:
        db.dispose()


@pytest.mark.parametrize("driver", DRIVERS)
def test_without_pooler_timeouts_are_refused_at_connect(pgbouncer_url: str, driver: str) -> None:
    db = database(pgbouncer_url, driver, timeouts={"statement": "5s"})
    try:
        with pytest.raises(ConnectError) as err:
            run(db, driver, lambda s: s.execute(sa.text("SELECT 1")).scalar_one())
    finally:
        db.dispose()
    assert "unsupported startup parameter" in str(err.value)


# --- timeouts --------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_statement_timeout_is_enforced(pgbouncer_url: str, driver: str) -> None:
    db = database(pgbouncer_url, driver, **POOLER, timeouts={"statement": "200ms"})

    def slow(s: Session) -> Any:
        assert s.execute(sa.text("SHOW statement_timeout")).scalar_one() == "200ms"
        return s.execute(sa.text("SELECT pg_sleep(10)")).scalar_one()

    try:
        with pytest.raises(StatementTimeoutError) as err:
            run(db, driver, slow)
    finally:
        db.dispose()
    assert "ran past timeouts.statement (0.2s)" in str(err.value)


@pytest.mark.parametrize("driver", DRIVERS)
def test_lock_timeout_is_enforced(
    pgbouncer_url: str, pg_admin: sa.Engine, table: str, driver: str
) -> None:
    db = database(pgbouncer_url, driver, **POOLER, timeouts={"lock": "200ms"})
    try:
        with pg_admin.connect() as holder:  # AUTOCOMMIT: an explicit transaction holds the row
            holder.exec_driver_sql("BEGIN")
            holder.exec_driver_sql(f"UPDATE {table} SET v = 1 WHERE id = 1")
            try:
                with pytest.raises(LockTimeoutError) as err:
                    run(db, driver, lambda s: s.execute(sa.text(f"LOCK TABLE {table}")))
            finally:
                holder.exec_driver_sql("ROLLBACK")
    finally:
        db.dispose()
    orig = err.value.orig
    assert (getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)) == "55P03"
    assert isinstance(err.value, sa.exc.OperationalError)  # asyncpg's DBAPIError is one too
    assert not err.value.connection_invalidated
    assert "canceling statement due to lock timeout" in str(err.value)
    assert "waited past lock_timeout (timeouts.lock 0.2s)" in str(err.value)


def test_timeouts_do_not_leak_to_other_clients(pgbouncer_url: str) -> None:
    """SET LOCAL: after many dbconf transactions, PgBouncer's server connections (handed to
    any client) still have the server's defaults."""
    db = database(pgbouncer_url, "psycopg2", **POOLER, timeouts={"statement": "7s", "lock": "3s"})
    try:
        for _ in range(30):
            assert run(db, "psycopg2", lambda s: s.execute(sa.text("SHOW lock_timeout")).one()) == (
                "3s",
            )
    finally:
        db.dispose()
    plain = sa.create_engine(pgbouncer_url, poolclass=sa.NullPool)
    try:
        for _ in range(30):
            with plain.connect() as conn:
                row = conn.exec_driver_sql("SHOW statement_timeout").scalar_one()
                assert row == "0"
    finally:
        plain.dispose()


@pytest.mark.parametrize("driver", DRIVERS)
def test_application_name_reaches_the_server(pgbouncer_url: str, driver: str) -> None:
    name = unique("dbconf_pgb")
    db = database(pgbouncer_url, driver, **POOLER, application_name=name)
    try:
        shown = run(db, driver, lambda s: s.execute(sa.text("SHOW application_name")).scalar())
    finally:
        db.dispose()
    assert shown == name


# --- run_in_transaction ----------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_run_in_transaction_retries_a_deadlock(pgbouncer_url: str, table: str, driver: str) -> None:
    db = database(pgbouncer_url, driver, **POOLER, timeouts={"statement": "20s"})
    barrier = threading.Barrier(2)
    calls: Counter[str] = Counter()

    def body(name: str, session: Session) -> str:
        order = (1, 2) if name == "a" else (2, 1)
        calls[name] += 1
        session.execute(sa.text("SET LOCAL deadlock_timeout = '100ms'"))
        session.execute(sa.text(f"UPDATE {table} SET v = v + 1 WHERE id = :id"), {"id": order[0]})
        if calls[name] == 1:
            barrier.wait(timeout=10)  # each holds one row and wants the other's
        session.execute(sa.text(f"UPDATE {table} SET v = v + 1 WHERE id = :id"), {"id": order[1]})
        return name

    def sync_work(name: str) -> str:
        return db.run_in_transaction(lambda s: body(name, s), backoff=0.01)

    def async_work(name: str) -> str:
        async def attempt(s: AsyncSession) -> str:
            return await s.run_sync(lambda sync: body(name, sync))

        async def main() -> str:
            try:
                return await db.run_in_transaction_async(attempt, backoff=0.01)
            finally:
                await db.adispose()

        return asyncio.run(main())

    work = async_work if driver == "asyncpg" else sync_work
    try:
        with ThreadPoolExecutor(2) as pool:
            results = [f.result(timeout=60) for f in [pool.submit(work, n) for n in "ab"]]
    finally:
        db.dispose()
    assert results == ["a", "b"]
    assert sum(calls.values()) == 3  # the deadlock victim ran again, once
    check = sa.create_engine(pgbouncer_url, poolclass=sa.NullPool)
    try:
        with check.connect() as conn:
            values = conn.exec_driver_sql(f"SELECT v FROM {table} ORDER BY id").scalars().all()
    finally:
        check.dispose()
    assert values == [2, 2]


# --- the admin console -----------------------------------------------------------------------


def test_check_reports_pgbouncer_from_its_admin_console(pgbouncer_url: str) -> None:
    db = database(pgbouncer_url, "psycopg2", **POOLER)
    try:
        report = db.check()
    finally:
        db.dispose()
    assert report.ok
    assert report.pooler is not None
    assert report.pooler.startswith("pgbouncer_transaction declared; PgBouncer 1.")
    assert "pooler: pgbouncer_transaction declared; PgBouncer" in report.render()


def test_async_check_reports_pgbouncer_too(pgbouncer_url: str) -> None:
    db = database(pgbouncer_url, "asyncpg", **POOLER)

    async def check() -> Any:
        try:
            return await db.async_check()
        finally:
            await db.adispose()

    try:
        report = asyncio.run(check())
    finally:
        db.dispose()
    assert report.ok, report.error
    assert report.driver == "asyncpg"
    assert report.pooler is not None
    assert report.pooler.startswith("pgbouncer_transaction declared; PgBouncer 1.")


def test_check_says_what_it_could_not_ask(pgbouncer_url: str) -> None:
    url = sa.make_url(pgbouncer_url).set(port=5432)  # PostgreSQL itself: no admin console
    version, note = admin_version(url)
    assert version is None
    assert "did not answer SHOW VERSION" in note
    assert "admin_users or stats_users" in note
    cfg = DatabaseConfig.model_validate(
        {"url": url.render_as_string(False), "pooler": "pgbouncer_session"}
    )
    status = pooler_status(cfg)
    assert status is not None
    assert status.startswith("pgbouncer_session declared; its admin console")


def test_session_mode_autocommit_flavour_runs_untimed(pgbouncer_url: str) -> None:
    """An AUTOCOMMIT connection (allowed in session mode only) has no transaction for SET
    LOCAL to last in: its statements run with the server's default, and nothing it did stays
    on the connection for the transactional flavour, which is timed."""
    db = database(
        pgbouncer_url,
        "psycopg2",
        pooler="pgbouncer_session",
        timeouts={"statement": "4s"},
        sessions={"auto": {"autocommit": True}},
    )
    show = sa.text("SELECT current_setting('statement_timeout')")
    try:
        with db.session("auto") as s:
            assert s.execute(show).scalar_one() == "0"
        with db.session() as s:
            assert s.execute(show).scalar_one() == "4s"
    finally:
        db.dispose()


# --- dbconf migrate --------------------------------------------------------------------------


def test_migrate_connects_to_the_direct_url(
    pg_url: str,
    pgbouncer_url: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The migration connection sends its timeouts as startup options, which PgBouncer
    refuses: the migration succeeding proves it went to direct_url; through PgBouncer
    (no direct_url) it runs as well, with SET LOCAL."""
    with scratch_databases("postgresql", pg_url, tmp_path) as make:
        direct, plain = make(), make()
        pooled = [
            sa.make_url(u).set(port=sa.make_url(pgbouncer_url).port).render_as_string(False)
            for u in (direct, plain)
        ]
        write_scripts(tmp_path / "m", "primary", [("n1", CREATE_NOTES)])
        config = write_config(
            f"""
            profiles:
              test:
                databases:
                  direct:
                    url: {pooled[0]}
                    pooler: {{mode: pgbouncer_transaction, direct_url: "{direct}"}}
                    timeouts: {{statement: 5s}}
                    migrations: {{path: {tmp_path}/m}}
                  through:
                    url: {pooled[1]}
                    pooler: pgbouncer_transaction
                    timeouts: {{statement: 5s}}
                    migrations: {{path: {tmp_path}/m}}
            """
        )
        code = main(["migrate", "--all", "-p", "test", "-c", str(config)], environ={})
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "direct: upgraded base (nothing applied) -> n1" in out
        assert "through: upgraded base (nothing applied) -> n1" in out
        assert tables(direct) == tables(plain) == {"notes", "alembic_version"}
        # the control: a "direct" URL that is PgBouncer's gets the startup options refused
        wrong = write_config(
            f"""
            profiles:
              test:
                databases:
                  wrong:
                    url: {pooled[1]}
                    pooler: {{mode: pgbouncer_transaction, direct_url: "{pooled[1]}"}}
                    migrations: {{path: {tmp_path}/m}}
            """,
            name="wrong.yaml",
        )
        code = main(["migrate", "-p", "test", "-c", str(wrong)], environ={})
        out, err = capsys.readouterr()
        assert code != 0
        assert "unsupported startup parameter" in out + err
