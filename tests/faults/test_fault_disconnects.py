"""Faults on live connections: terminated backends, a PostgreSQL restart under load, a MariaDB
``wait_timeout`` that closes idle pooled connections, a statement timeout."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
import sqlalchemy as sa

import dbconf

from .conftest import (
    FaultStats,
    SecretWatch,
    backends,
    ensure_pg_up,
    local_cluster,
    pg_address,
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
                _insert(s, pg_table, i)
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
                _insert(s, pg_table, i)
                pids.add(_pid(s))
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
        caught.append(secret_watch.saw(e))

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


def _restartable_cluster(pg_url: str) -> tuple[str, str]:
    """The local cluster serving TEST_POSTGRES_URL's port; skip (fail under CI=true) if none:
    never restart a cluster that is not the one the tests use."""
    cluster = local_cluster(pg_url)
    if cluster is None:
        host, port = pg_address(pg_url)
        message = (
            f"no PostgreSQL cluster of this machine serves {host or 'the default socket'}:{port} "
            "(pg_lsclusters); the restart test restarts only the local cluster of "
            "TEST_POSTGRES_URL"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    return cluster


def test_postgres_restart_under_load(
    load_db: LoadDb,
    pg_url: str,
    pg_app_url: str,
    app_name: str,
    pg_faults: sa.Engine,
    pg_table: str,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: `pg_ctlcluster … restart -m fast` while 8 threads run insert scopes for ~10 s,
    and a second database with a warm pool (3 connections checked in) sits idle.
    Guarantee: callers see only typed DBAPI errors, and only while the server is down: once
    one scope has succeeded after the restart, no caller sees an error; the idle database's
    next scopes after pg_isready succeed with no error (pre_ping); every insert whose scope
    returned is in the table."""
    cluster = _restartable_cluster(pg_url)
    db = load_db(
        {
            "url": pg_app_url,
            "application_name": app_name,
            "pool": {"size": 8, "max_overflow": 0, "timeout": "5s"},
            "timeouts": {"connect": "2s"},
        }
    )
    idle = load_db(  # pre_ping left at its default (on for servers)
        {"url": pg_app_url, "application_name": app_name, "pool": {"size": 3, "max_overflow": 0}}
    )
    with ExitStack() as stack:  # warm: three connections at once, then all checked in
        sessions = [stack.enter_context(idle.session()) for _ in range(3)]
        idle_before = {_pid(s) for s in sessions}
    assert len(idle_before) == 3
    assert idle.engine.pool.checkedin() == 3
    idle_ids = [-1, -2, -3, -4]
    idle_errors: list[BaseException] = []
    idle_after: set[int] = set()

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
                    errors.append((time.monotonic(), secret_watch.saw(e)))
                time.sleep(0.05)
            except BaseException as e:
                untyped.append(secret_watch.saw(e))
                return

    threads = [threading.Thread(target=worker, name=f"restart-{n}") for n in range(8)]
    start = time.monotonic()
    t_restart = t_back = 0.0
    try:
        for t in threads:
            t.start()
        time.sleep(2.0)
        t_restart = time.monotonic()
        result = pg_cluster(cluster, "restart", "-m", "fast")
        assert result.returncode == 0, result.stderr
        while not pg_isready(pg_url):
            assert time.monotonic() - t_restart < 60, "PostgreSQL did not come back"
            time.sleep(0.05)
        t_back = time.monotonic()
        try:  # the idle database's next scope, then all three of its connections at once
            with idle.session() as s:
                _insert(s, pg_table, idle_ids[0])
                idle_after.add(_pid(s))
            with ExitStack() as stack:
                sessions = [stack.enter_context(idle.session()) for _ in range(3)]
                for s, i in zip(sessions, idle_ids[1:], strict=True):
                    _insert(s, pg_table, i)
                    idle_after.add(_pid(s))
        except Exception as e:
            idle_errors.append(secret_watch.saw(e))
        time.sleep(max(1.0, 10.0 - (time.monotonic() - start)))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        ensure_pg_up(pg_url)

    ids = table_ids(pg_faults, pg_table)
    lost = set(committed) - ids
    error_times = sorted(when for when, _ in errors)
    # "Down" starts at the first error after the restart began; the first success after it
    # is the first scope that worked on the restarted server.
    down = error_times[0] if error_times else t_back
    after_down = sorted(when for when in committed.values() if when > down)
    first_ok = after_down[0] if after_down else None
    late = [w for w in error_times if first_ok is not None and w > first_ok]
    after_ready = [w - t_back for w in error_times if w > t_back]
    in_flight = sum(isinstance(e, dbconf.DisconnectError) for _, e in errors)
    fault_stats.record(
        "PostgreSQL restart, 8 threads",
        "pg_ctlcluster restart -m fast",
        scopes=len(committed) + len(errors) + 3 + 4,  # + the idle database's scopes
        faults=1,
        errors=len(errors) + len(idle_errors),
        rows_lost=len(lost),
        committed=len(committed),
        restart_cmd_s=round(t_back - t_restart, 2),  # pg_ctlcluster returned + pg_isready
        first_ok_after_restart_cmd_s=round(first_ok - t_restart, 2) if first_ok else None,
        caller_blackout_s=round(first_ok - down, 2) if first_ok and error_times else 0.0,
        disconnects=in_flight,
        connect_failures=len(errors) - in_flight,
        errors_after_first_ok=len(late),
        errors_after_ready=len(after_ready),
        idle_db_errors=len(idle_errors),
        outcome_unknown=len(ids - set(committed) - set(idle_ids)),
    )

    assert not [t for t in threads if t.is_alive()], "a worker thread hangs"
    assert not untyped, f"untyped errors reached callers: {untyped[:3]!r}"
    assert not [w for w in error_times if w < t_restart], "errors before the restart"
    assert not idle_errors, f"the idle database's next scopes failed: {idle_errors!r}"
    assert set(idle_ids) <= ids
    assert not idle_after & idle_before, "a connection from before the restart was reused"
    assert first_ok is not None, "no scope succeeded after the restart"
    assert first_ok - t_back < 5.0
    assert not lost, f"{len(lost)} committed rows lost"
    assert not late, (
        f"{len(late)} errors after the first success on the restarted server "
        f"(up to {max(late) - first_ok:.3f} s after it; pg_isready at "
        f"{first_ok - t_back:+.3f} s from it)"
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
