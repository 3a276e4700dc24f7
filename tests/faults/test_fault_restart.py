"""A PostgreSQL restart under load, with a second, idle database whose pool is warm."""

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
    backend_pid,
    ensure_pg_up,
    insert_row,
    local_cluster,
    pg_address,
    pg_cluster,
    pg_isready,
    table_ids,
)

pytestmark = pytest.mark.faults
LoadDb = Callable[[dict[str, Any]], dbconf.Database]


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
        idle_before = {backend_pid(s) for s in sessions}
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
                    insert_row(s, pg_table, i)
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
                insert_row(s, pg_table, idle_ids[0])
                idle_after.add(backend_pid(s))
            with ExitStack() as stack:
                sessions = [stack.enter_context(idle.session()) for _ in range(3)]
                for s, i in zip(sessions, idle_ids[1:], strict=True):
                    insert_row(s, pg_table, i)
                    idle_after.add(backend_pid(s))
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
    # Callers' errors span from the first to the last error; the first success after the
    # last error is the first scope that worked on the restarted server.
    down = error_times[-1] if error_times else t_back
    after_down = sorted(when for when in committed.values() if when > down)
    first_ok = after_down[0] if after_down else None
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
        caller_error_window_s=round(error_times[-1] - error_times[0], 2) if error_times else 0.0,
        first_ok_after_last_error_ms=round((first_ok - down) * 1000, 1) if first_ok else None,
        disconnects=in_flight,
        connect_failures=len(errors) - in_flight,
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
    # The contract: callers see errors only while the server is down. Once it accepts
    # connections again (pg_ctlcluster returned and pg_isready answered), no caller errs.
    # (Scopes may still commit on the old server while a fast shutdown is under way, so "the
    # first success after the first error" is not a reliable "server is back" mark.)
    assert not after_ready, (
        f"{len(after_ready)} errors after the server accepted connections again "
        f"(up to {max(after_ready):.3f} s after pg_isready)"
    )
