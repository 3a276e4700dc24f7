"""Pool faults: exhaustion under 20 threads, 10,000 scopes with a third raising, a leaked
session past the leak_detection threshold."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import dbconf

from .conftest import FaultStats, SecretWatch, backends, table_ids

pytestmark = pytest.mark.faults
LoadDb = Callable[[dict[str, Any]], dbconf.Database]


class AppError(Exception):
    """The application error raised inside a scope."""


def test_pool_exhaustion_every_waiter_answered(
    load_db: LoadDb,
    pg_app_url: str,
    app_name: str,
    pg_faults: sa.Engine,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: 20 threads at once on a pool of size 2, max_overflow 0, timeout 1s, each holding
    its connection 250 ms. Guarantee: every thread either gets a connection or a
    PoolExhaustedError (a sqlalchemy TimeoutError) saying size, overflow, timeout and who
    holds the connections, within 1 s + 1 s; never more than 2 server connections."""
    db = load_db(
        {
            "url": pg_app_url,
            "application_name": app_name,
            "pool": {"size": 2, "max_overflow": 0, "timeout": "1s"},
            "leak_detection": {"threshold": "30s"},
        }
    )
    start = threading.Barrier(20)
    outcomes: list[tuple[str, float, BaseException | None]] = []
    lock = threading.Lock()
    peak = [0]

    def worker() -> None:
        start.wait(timeout=10)
        began = time.monotonic()
        try:
            with db.session() as s:
                s.execute(sa.text("SELECT pg_sleep(0.25)"))
            result: tuple[str, float, BaseException | None] = ("ok", time.monotonic() - began, None)
        except BaseException as e:
            result = ("error", time.monotonic() - began, e)
        with lock:
            outcomes.append(result)

    def monitor(stop: threading.Event) -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], backends(pg_faults, app_name))
            time.sleep(0.05)

    stop = threading.Event()
    mon = threading.Thread(target=monitor, args=(stop,))
    mon.start()
    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10 + 1.0 + 1.0 + 0.25
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    stop.set()
    mon.join()
    secret_watch.errors += [e for _, _, e in outcomes if e is not None]
    assert not [t for t in threads if t.is_alive()], "a waiter hangs"
    assert len(outcomes) == 20

    got = [o for o in outcomes if o[0] == "ok"]
    refused = [o for o in outcomes if o[0] == "error"]
    assert len(got) >= 2
    for _, elapsed, error in refused:
        assert isinstance(error, dbconf.PoolExhaustedError), repr(error)
        assert isinstance(error, sa.exc.TimeoutError)
        assert 1.0 - 0.05 <= elapsed <= 1.0 + 1.0
    for _, elapsed, _ in got:
        assert elapsed <= 1.0 + 0.25 + 1.0
    assert refused, "20 threads x 0.25 s over 2 connections with a 1 s timeout must exhaust"
    error = refused[0][2]
    assert isinstance(error, dbconf.PoolExhaustedError)
    assert (error.size, error.max_overflow, error.timeout) == (2, 0, 1.0)
    assert error.holders is not None
    assert len(error.holders) >= 1
    assert "pool.size 2" in str(error)
    assert "test_fault_pool.py" in str(error)
    assert peak[0] <= 2
    assert db.engine.pool.checkedout() == 0
    fault_stats.record(
        "pool exhaustion, 20 threads",
        "size 2 overflow 0 timeout 1s",
        scopes=20,
        faults=1,
        errors=len(refused),
        got_connection=len(got),
        pool_exhausted=len(refused),
        max_wait_s=round(max(o[1] for o in outcomes), 3),
        peak_server_conns=peak[0],
    )


def test_ten_thousand_scopes_a_third_raising(
    load_db: LoadDb,
    pg_app_url: str,
    app_name: str,
    pg_faults: sa.Engine,
    pg_table: str,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: 10,000 scopes across 8 threads on a pool of size 4 + overflow 2, every third
    raising an application error after its INSERT. Guarantee: afterwards no connection is
    checked out, no backend of ours is idle in transaction, the server never saw more than
    size + overflow connections from us, and exactly the non-raising inserts are committed."""
    total, nthreads = 10_000, 8
    db = load_db(
        {"url": pg_app_url, "application_name": app_name, "pool": {"size": 4, "max_overflow": 2}}
    )
    unexpected: list[BaseException] = []
    raised = [0] * nthreads
    peak = [0]
    stop = threading.Event()

    def worker(n: int) -> None:
        for i in range(n, total, nthreads):
            try:
                with db.session() as s:
                    s.execute(sa.text(f"INSERT INTO {pg_table} (id) VALUES (:i)"), {"i": i})
                    if i % 3 == 0:
                        raise AppError(i)
            except AppError:
                raised[n] += 1
            except BaseException as e:
                unexpected.append(secret_watch.saw(e))
                return

    def monitor() -> None:
        sql = sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :app")
        with pg_faults.connect() as conn:
            while not stop.is_set():
                peak[0] = max(peak[0], int(conn.execute(sql, {"app": app_name}).scalar_one()))
                time.sleep(0.01)

    mon = threading.Thread(target=monitor)
    mon.start()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(nthreads)]
    began = time.monotonic()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        stop.set()
        mon.join()
    elapsed = time.monotonic() - began
    assert not unexpected, unexpected[:3]
    assert sum(raised) == len(range(0, total, 3))
    assert db.engine.pool.checkedout() == 0
    assert backends(pg_faults, app_name, state="idle in transaction") == 0
    assert 1 <= peak[0] <= 4 + 2
    ids = table_ids(pg_faults, pg_table)
    expected = {i for i in range(total) if i % 3}
    assert not ids - expected, "rows of raising scopes were committed"
    lost = expected - ids
    assert not lost
    fault_stats.record(
        "10,000 scopes, 1/3 raising, 8 thr",
        "AppError raised in 1/3 of scopes",
        scopes=total,
        faults=0,
        app_exceptions=sum(raised),
        errors=0,
        rows_lost=len(lost),
        peak_server_conns=peak[0],
        seconds=round(elapsed, 2),
    )


def test_leaked_session_warns_with_acquiring_line(
    write_config: Callable[..., Path],
    pg_app_url: str,
    app_name: str,
    pg_faults: sa.Engine,
    caplog: pytest.LogCaptureFixture,
    fault_stats: FaultStats,
) -> None:
    """Fault: a session scope holds its connection 1.6 s, past leak_detection.threshold 1s
    set in a YAML profile. Guarantee: one WARNING on the dbconf.pooling.leaks logger naming the
    database and the file:line where the connection was acquired."""
    path = write_config(
        f"""
        profiles:
          faults:
            databases:
              orders:
                url: "{pg_app_url}"
                application_name: {app_name}
                leak_detection: {{threshold: 1s}}
        """
    )
    caplog.set_level(logging.WARNING, logger="dbconf.leaks")
    with dbconf.load("faults", path=path, environ={}) as registry:
        db = registry["orders"]
        with db.session() as s:
            line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
            s.execute(sa.text("SELECT 1"))
            time.sleep(1.6)
        time.sleep(0.1)
    ours = [r for r in caplog.records if r.name == "dbconf.leaks" and "'orders'" in r.getMessage()]
    assert len(ours) == 1, [r.message for r in caplog.records]
    where = f"{Path(__file__).resolve()}:{line}"
    assert where in ours[0].getMessage() or f"{__file__}:{line}" in ours[0].getMessage()
    fault_stats.record(
        "leaked session, threshold 1s",
        "session held 1.6 s",
        scopes=1,
        faults=1,
        errors=0,
        warnings=len(ours),
    )
