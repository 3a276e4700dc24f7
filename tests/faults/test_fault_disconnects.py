"""Faults on live connections: terminated backends, a MariaDB ``wait_timeout`` that closes idle
pooled connections, a statement timeout. The PostgreSQL restart is in test_fault_restart.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

import dbconf

from .conftest import (
    FaultStats,
    SecretWatch,
    backend_pid,
    backends,
    insert_row,
    table_ids,
    terminate,
)

pytestmark = pytest.mark.faults
LoadDb = Callable[[dict[str, Any]], dbconf.Database]


def _wait_gone(admin: sa.Engine, app_name: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while backends(admin, app_name) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backends(admin, app_name) == 0, "terminated backends did not exit"


def test_backends_terminated_between_scopes(
    load_db: LoadDb,
    pg_app_url: str,
    app_name: str,
    pg_faults: sa.Engine,
    pg_table: str,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: every idle pooled backend is killed with pg_terminate_backend between scopes.
    Guarantee: with pre_ping (the default for servers) the next scopes see no error, run on
    new backends, and every committed row is there."""
    db = load_db({"url": pg_app_url, "application_name": app_name, "pool": {"size": 4}})
    barrier = threading.Barrier(4)
    warm_errors: list[BaseException] = []

    def warm(i: int) -> None:
        try:
            with db.session() as s:
                insert_row(s, pg_table, i)
                barrier.wait(timeout=10)  # four connections checked out at once
        except BaseException as e:
            warm_errors.append(secret_watch.saw(e))

    threads = [threading.Thread(target=warm, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not warm_errors
    assert db.engine.pool.checkedin() == 4
    with pg_faults.connect() as conn:  # the app's backends are the password role's
        users = conn.execute(
            sa.text("SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = :a"),
            {"a": app_name},
        ).scalars()
        assert set(users) == {sa.make_url(pg_app_url).username}

    killed = terminate(pg_faults, app_name)
    assert len(killed) == 4
    _wait_gone(pg_faults, app_name)

    errors, pids = 0, set()
    for i in range(4, 24):
        try:
            with db.session() as s:
                insert_row(s, pg_table, i)
                pids.add(backend_pid(s))
        except Exception as e:
            secret_watch.saw(e)
            errors += 1
    assert errors == 0
    assert not pids & set(killed), "a terminated backend was used again"
    lost = set(range(24)) - table_ids(pg_faults, pg_table)
    assert not lost
    fault_stats.record(
        "terminated between scopes",
        "pg_terminate_backend x4 (idle)",
        scopes=24,
        faults=len(killed),
        errors=errors,
        rows_lost=len(lost),
    )


def test_backend_terminated_mid_transaction(
    load_db: LoadDb,
    pg_app_url: str,
    app_name: str,
    pg_faults: sa.Engine,
    pg_table: str,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: the backend of an open transaction is killed between two of its statements.
    Guarantee: the caller sees exactly one error, a dbconf.DisconnectError that is also a
    sqlalchemy DBAPIError; the committed rows are all there, the uncommitted ones are not;
    the next scope works on a fresh backend."""
    db = load_db({"url": pg_app_url, "application_name": app_name, "pool": {"size": 2}})
    with db.session() as s:
        for i in range(10):
            insert_row(s, pg_table, i)

    caught: list[BaseException] = []
    try:
        with db.session() as s:
            insert_row(s, pg_table, 100)
            insert_row(s, pg_table, 101)
            killed_pid = backend_pid(s)
            assert terminate(pg_faults, app_name) == [killed_pid]
            _wait_gone(pg_faults, app_name)
            insert_row(s, pg_table, 102)
    except Exception as e:
        caught.append(secret_watch.saw(e))

    assert len(caught) == 1
    error = caught[0]
    assert isinstance(error, sa.exc.DBAPIError)
    assert isinstance(error, dbconf.DisconnectError)
    assert error.connection_invalidated

    with db.session() as s:
        insert_row(s, pg_table, 200)
        assert backend_pid(s) != killed_pid
    ids = table_ids(pg_faults, pg_table)
    lost = (set(range(10)) | {200}) - ids
    assert not lost
    assert not ids & {100, 101, 102}, "uncommitted rows survived"
    fault_stats.record(
        "terminated mid-transaction",
        "pg_terminate_backend in a transaction",
        scopes=3,
        faults=1,
        errors=len(caught),
        rows_lost=len(lost),
    )


STATEMENT_TIMEOUT_CASES = [
    pytest.param("pg_app_url", "SELECT pg_backend_pid()", "SELECT pg_sleep(5)", id="postgresql"),
    pytest.param(
        "maria_url",
        "SELECT CONNECTION_ID()",
        "SELECT SLEEP(5)",
        id="mariadb",
        marks=pytest.mark.mariadb,
    ),
]


@pytest.mark.parametrize(("url_fixture", "whoami", "slow"), STATEMENT_TIMEOUT_CASES)
def test_statement_timeout_keeps_connection(
    request: pytest.FixtureRequest,
    load_db: LoadDb,
    app_name: str,
    url_fixture: str,
    whoami: str,
    slow: str,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: a statement runs past timeouts.statement (300ms) and the server cancels it.
    Guarantee: a dbconf.StatementTimeoutError (a DBAPIError) within the timeout + 1 s; the
    connection is not invalidated: the next scope runs on the same server connection."""
    url = request.getfixturevalue(url_fixture)
    if url_fixture == "pg_app_url":
        request.getfixturevalue("pg_faults")  # terminate our backends after the test
    db = load_db(
        {
            "url": url,
            "application_name": app_name,
            "pool": {"size": 1, "max_overflow": 0},
            "timeouts": {"statement": "300ms"},
        }
    )
    with db.session() as s:
        before = s.execute(sa.text(whoami)).scalar_one()
    start = time.monotonic()
    with pytest.raises(dbconf.StatementTimeoutError) as info, db.session() as s:
        s.execute(sa.text(slow))
    elapsed = time.monotonic() - start
    secret_watch.saw(info.value)
    assert isinstance(info.value, sa.exc.DBAPIError)
    assert not info.value.connection_invalidated
    assert elapsed < 0.3 + 1.0
    with db.session() as s:
        assert s.execute(sa.text(whoami)).scalar_one() == before
    backend = "PostgreSQL" if url_fixture == "pg_app_url" else "MariaDB"
    fault_stats.record(
        f"statement timeout ({backend})",
        "statement timeout 300ms",
        scopes=3,
        faults=1,
        errors=1,
        raised_after_s=round(elapsed, 3),
    )


@pytest.mark.mariadb
def test_mariadb_wait_timeout_closes_pooled_connection(
    load_db: LoadDb, maria_url: str, app_name: str, fault_stats: FaultStats
) -> None:
    """Fault: the server closes a pooled connection idle past wait_timeout (SET GLOBAL
    wait_timeout=2 before the pool opens, then 3 s idle). Guarantee: the next scope succeeds
    (pre_ping replaces the dead connection) on a new server connection. The global is
    restored (to 28800, the default, if a crashed run left it below 10 s)."""
    admin = sa.create_engine(maria_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    db = load_db(
        {"url": maria_url, "application_name": app_name, "pool": {"size": 1, "max_overflow": 0}}
    )
    try:
        with admin.connect() as conn:
            old = int(conn.execute(sa.text("SELECT @@GLOBAL.wait_timeout")).scalar_one())
            if old < 10:  # left by a run that crashed before restoring it: the server default
                old = 28800
            try:
                conn.execute(sa.text("SET GLOBAL wait_timeout = 2"))
                with db.session() as s:  # the pool's one connection takes the global now
                    first = int(s.execute(sa.text("SELECT CONNECTION_ID()")).scalar_one())
                    session_wt = s.execute(sa.text("SELECT @@SESSION.wait_timeout")).scalar_one()
            finally:
                conn.execute(sa.text(f"SET GLOBAL wait_timeout = {old}"))
        assert int(session_wt) == 2
        time.sleep(3.0)
        with admin.connect() as conn:
            alive = conn.execute(
                sa.text("SELECT count(*) FROM information_schema.processlist WHERE id = :i"),
                {"i": first},
            ).scalar_one()
        assert alive == 0, "the server did not close the idle connection; no fault injected"
        with db.session() as s:
            second = int(s.execute(sa.text("SELECT CONNECTION_ID()")).scalar_one())
        assert second != first
    finally:
        admin.dispose()
    fault_stats.record(
        "MariaDB wait_timeout=2, idle 3s",
        "server closed idle pooled conn",
        scopes=2,
        faults=1,
        errors=0,
    )
