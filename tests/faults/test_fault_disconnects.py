"""Faults on live connections: terminated backends, a PostgreSQL restart under load, a MariaDB
``wait_timeout`` that closes idle pooled connections, a statement timeout."""

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
    backends,
    ensure_pg_up,
    pg_cluster,
    pg_isready,
    table_ids,
    terminate,
)

pytestmark = pytest.mark.faults
LoadDb = Callable[[dict[str, Any]], dbconf.Database]


def _insert(session: Any, table: str, i: int) -> None:
    session.execute(sa.text(f"INSERT INTO {table} (id, tag) VALUES (:i, 'x')"), {"i": i})


def _pid(session: Any) -> int:
    return int(session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def _wait_gone(admin: sa.Engine, app_name: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while backends(admin, app_name) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backends(admin, app_name) == 0, "terminated backends did not exit"


def test_backends_terminated_between_scopes(
    load_db: LoadDb,
    pg_url: str,
    app_name: str,
    pg_faults: sa.Engine,
    pg_table: str,
    fault_stats: FaultStats,
) -> None:
    """Fault: every idle pooled backend is killed with pg_terminate_backend between scopes.
    Guarantee: with pre_ping (the default for servers) the next scopes see no error, run on
    new backends, and every committed row is there."""
    db = load_db({"url": pg_url, "application_name": app_name, "pool": {"size": 4}})
    barrier = threading.Barrier(4)
    warm_errors: list[BaseException] = []

    def warm(i: int) -> None:
        try:
            with db.session() as s:
                _insert(s, pg_table, i)
                barrier.wait(timeout=10)  # four connections checked out at once
        except BaseException as e:
            warm_errors.append(e)

    threads = [threading.Thread(target=warm, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not warm_errors
    assert db.engine.pool.checkedin() == 4

    killed = terminate(pg_faults, app_name)
    assert len(killed) == 4
    _wait_gone(pg_faults, app_name)

    errors, pids = 0, set()
    for i in range(4, 24):
        try:
            with db.session() as s:
                _insert(s, pg_table, i)
                pids.add(_pid(s))
        except Exception:
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
    pg_url: str,
    app_name: str,
    pg_faults: sa.Engine,
    pg_table: str,
    fault_stats: FaultStats,
) -> None:
    """Fault: the backend of an open transaction is killed between two of its statements.
    Guarantee: the caller sees exactly one error, a dbconf.DisconnectError that is also a
    sqlalchemy DBAPIError; the committed rows are all there, the uncommitted ones are not;
    the next scope works on a fresh backend."""
    db = load_db({"url": pg_url, "application_name": app_name, "pool": {"size": 2}})
    with db.session() as s:
        for i in range(10):
            _insert(s, pg_table, i)

    caught: list[BaseException] = []
    try:
        with db.session() as s:
            _insert(s, pg_table, 100)
            _insert(s, pg_table, 101)
            killed_pid = _pid(s)
            assert terminate(pg_faults, app_name) == [killed_pid]
            _wait_gone(pg_faults, app_name)
            _insert(s, pg_table, 102)
    except Exception as e:
        caught.append(e)

    assert len(caught) == 1
    error = caught[0]
    assert isinstance(error, sa.exc.DBAPIError)
    assert isinstance(error, dbconf.DisconnectError)
    assert error.connection_invalidated

    with db.session() as s:
        _insert(s, pg_table, 200)
        assert _pid(s) != killed_pid
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


def test_postgres_restart_under_load(
    load_db: LoadDb,
    pg_url: str,
    app_name: str,
    pg_faults: sa.Engine,
    pg_table: str,
    fault_stats: FaultStats,
) -> None:
    """Fault: `pg_ctlcluster … restart -m fast` while 8 threads run insert scopes for ~10 s.
    Guarantee: callers see only typed DBAPI errors, and only while the server is down; scopes
    succeed again soon after it is back; every insert whose scope returned is in the table."""
    db = load_db(
        {
            "url": pg_url,
            "application_name": app_name,
            "pool": {"size": 8, "max_overflow": 0, "timeout": "5s"},
            "timeouts": {"connect": "2s"},
        }
    )
    lock = threading.Lock()
    next_id = iter(range(10**9))
    committed: dict[int, float] = {}
    errors: list[tuple[float, BaseException]] = []
    untyped: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            with lock:
                i = next(next_id)
            try:
                with db.session() as s:
                    _insert(s, pg_table, i)
                with lock:
                    committed[i] = time.monotonic()
            except sa.exc.DBAPIError as e:
                with lock:
                    errors.append((time.monotonic(), e))
                time.sleep(0.05)
            except BaseException as e:
                untyped.append(e)
                return

    threads = [threading.Thread(target=worker, name=f"restart-{n}") for n in range(8)]
    start = time.monotonic()
    t_restart = t_back = 0.0
    try:
        for t in threads:
            t.start()
        time.sleep(2.0)
        t_restart = time.monotonic()
        result = pg_cluster("restart", "-m", "fast")
        assert result.returncode == 0, result.stderr
        while not pg_isready():
            assert time.monotonic() - t_restart < 60, "PostgreSQL did not come back"
            time.sleep(0.05)
        t_back = time.monotonic()
        time.sleep(max(1.0, 10.0 - (t_back - start)))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        ensure_pg_up()

    assert not [t for t in threads if t.is_alive()], "a worker thread hangs"
    assert not untyped, f"untyped errors reached callers: {untyped[:3]!r}"
    before_restart = [e for when, e in errors if when < t_restart]
    assert not before_restart
    after_back = sorted(when for when in committed.values() if when >= t_back)
    assert after_back, "no scope succeeded after the restart"
    first_success = after_back[0] - t_back
    assert first_success < 5.0
    error_times = [when for when, _ in errors]
    blackout = (after_back[0] - min(error_times)) if error_times else 0.0
    in_flight = sum(isinstance(e, dbconf.DisconnectError) for _, e in errors)
    ids = table_ids(pg_faults, pg_table)
    lost = set(committed) - ids
    assert not lost, f"{len(lost)} committed rows lost"
    late_errors = [when - t_back for when, _ in errors if when - t_back > 5.0]
    assert not late_errors, "errors long after the server was back"
    fault_stats.record(
        "PostgreSQL restart, 8 threads",
        "pg_ctlcluster restart -m fast",
        scopes=len(committed) + len(errors),
        faults=1,
        errors=len(errors),
        rows_lost=len(lost),
        committed=len(committed),
        restart_s=round(t_back - t_restart, 2),
        first_ok_after_ready_ms=round(first_success * 1000, 1),
        caller_blackout_s=round(blackout, 2),
        disconnects=in_flight,
        connect_failures=len(errors) - in_flight,
        outcome_unknown=len(ids - set(committed)),
    )


STATEMENT_TIMEOUT_CASES = [
    pytest.param("pg_url", "SELECT pg_backend_pid()", "SELECT pg_sleep(5)", id="postgresql"),
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
) -> None:
    """Fault: a statement runs past timeouts.statement (300ms) and the server cancels it.
    Guarantee: a dbconf.StatementTimeoutError (a DBAPIError) within the timeout + 1 s; the
    connection is not invalidated: the next scope runs on the same server connection."""
    url = request.getfixturevalue(url_fixture)
    if url_fixture == "pg_url":
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
    assert isinstance(info.value, sa.exc.DBAPIError)
    assert not info.value.connection_invalidated
    assert elapsed < 0.3 + 1.0
    with db.session() as s:
        assert s.execute(sa.text(whoami)).scalar_one() == before
    backend = "PostgreSQL" if url_fixture == "pg_url" else "MariaDB"
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
