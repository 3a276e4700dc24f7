"""Network faults through a loopback TCP proxy in front of PostgreSQL (see proxy.py): a server
that accepts and never answers, a connection that stalls mid-statement, connections dropped
while queries run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import dbconf

from .conftest import FaultStats, SecretWatch, backends
from .proxy import FaultProxy

pytestmark = pytest.mark.faults
LoadDb = Callable[[dict[str, Any]], dbconf.Database]
# libpq keepalives and TCP_USER_TIMEOUT: the kernel aborts a connection whose sent data stays
# unacknowledged (or stuck behind a zero window) for 2 s.
TCP_BOUNDS = {
    "keepalives": 1,
    "keepalives_idle": 1,
    "keepalives_interval": 1,
    "keepalives_count": 2,
    "tcp_user_timeout": 2000,
}


@pytest.fixture
def proxy(pg_url: str, pg_faults: sa.Engine) -> Iterator[FaultProxy]:
    port = sa.make_url(pg_url).port or 5432
    with FaultProxy(port) as p:
        yield p


def _via(pg_url: str, proxy: FaultProxy) -> str:
    return sa.make_url(pg_url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)


def _run(threads: list[threading.Thread], bound: float) -> list[threading.Thread]:
    """Start and join ``threads`` within ``bound`` seconds in total; return those still alive."""
    deadline = time.monotonic() + bound
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    return [t for t in threads if t.is_alive()]


def test_connect_timeout_against_stalled_server(
    load_db: LoadDb,
    pg_app_url: str,
    app_name: str,
    proxy: FaultProxy,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: the server's address accepts TCP connections and never answers (stalled proxy).
    Guarantee: with timeouts.connect 2s (libpq's minimum) the scope fails with a DBAPIError
    within 2 s + 1 s instead of hanging."""
    proxy.set_mode("stall")
    db = load_db(
        {
            "url": _via(pg_app_url, proxy),
            "application_name": app_name,
            "timeouts": {"connect": "2s"},
        }
    )
    start = time.monotonic()
    with pytest.raises(sa.exc.DBAPIError) as info, db.session() as s:
        s.execute(sa.text("SELECT 1"))
    elapsed = time.monotonic() - start
    secret_watch.saw(info.value)
    assert "timeout expired" in str(info.value)
    assert proxy.accepted == 1
    assert 1.5 <= elapsed <= 2.0 + 1.0
    fault_stats.record(
        "connect to a stalled server",
        "proxy accepts, never answers",
        scopes=1,
        faults=1,
        errors=1,
        connect_timeout_s=2.0,
        raised_after_s=round(elapsed, 3),
    )


def test_stall_mid_statement_and_pool_timeout_no_thread_hangs(
    load_db: LoadDb,
    pg_app_url: str,
    app_name: str,
    proxy: FaultProxy,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: the network stalls after connect, while 2 threads are sending a statement
    (a half-open connection: the peer stops reading), and 4 more threads want a connection
    from the exhausted pool (size 2, no overflow, timeout 1s).
    Guarantee: no thread hangs. The senders get a DisconnectError within tcp_user_timeout
    (2 s, with keepalives on) + 2 s; the waiters get PoolExhaustedError within 1 s + 1 s."""
    db = load_db(
        {
            "url": _via(pg_app_url, proxy),
            "application_name": app_name,
            "pool": {"size": 2, "max_overflow": 0, "timeout": "1s"},
            "timeouts": {"connect": "2s"},
            "connect_args": TCP_BOUNDS,
        }
    )
    payload = "x" * 32_000_000  # more than the socket buffers hold: the send must block
    checked_out = threading.Barrier(3)
    stalled = threading.Event()
    outcomes: dict[str, tuple[str, float, BaseException | None]] = {}

    def sender(name: str) -> None:
        start = 0.0
        try:
            with db.session() as s:
                s.execute(sa.text("SELECT 1"))
                checked_out.wait(timeout=10)
                stalled.wait(timeout=10)
                start = time.monotonic()
                s.execute(sa.text("SELECT length(:p)"), {"p": payload})
            outcomes[name] = ("ok", time.monotonic() - start, None)
        except BaseException as e:
            outcomes[name] = ("error", time.monotonic() - start, e)

    def waiter(name: str) -> None:
        stalled.wait(timeout=10)
        start = time.monotonic()
        try:
            with db.session() as s:
                s.execute(sa.text("SELECT 1"))
            outcomes[name] = ("ok", time.monotonic() - start, None)
        except BaseException as e:
            outcomes[name] = ("error", time.monotonic() - start, e)

    senders = [threading.Thread(target=sender, args=(f"s{i}",)) for i in range(2)]
    waiters = [threading.Thread(target=waiter, args=(f"w{i}",)) for i in range(4)]
    for t in senders:
        t.start()
    checked_out.wait(timeout=10)
    proxy.set_mode("stall")
    stalled.set()
    hung = _run(waiters, 1.0 + 1.0)
    deadline = time.monotonic() + 2.0 + 2.0
    for t in senders:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    hung += [t for t in senders if t.is_alive()]
    secret_watch.errors += [e for _, _, e in outcomes.values() if e is not None]
    assert not hung, f"{len(hung)} threads hang"

    for name in ("s0", "s1"):
        kind, elapsed, error = outcomes[name]
        assert kind == "error", outcomes[name]
        assert isinstance(error, dbconf.DisconnectError), outcomes[name]
        assert isinstance(error, sa.exc.DBAPIError)
        assert elapsed <= 2.0 + 2.0
    for name in ("w0", "w1", "w2", "w3"):
        kind, elapsed, error = outcomes[name]
        assert kind == "error", outcomes[name]
        assert isinstance(error, dbconf.PoolExhaustedError), outcomes[name]
        assert isinstance(error, sa.exc.TimeoutError)
        assert 1.0 - 0.05 <= elapsed <= 1.0 + 1.0
    assert db.engine.pool.checkedout() == 0
    fault_stats.record(
        "half-open mid-statement + pool",
        "proxy stalls after connect",
        scopes=6,
        faults=1,
        errors=6,
        sender_error_after_s=round(max(outcomes[n][1] for n in ("s0", "s1")), 3),
        waiter_error_after_s=round(max(outcomes[f"w{i}"][1] for i in range(4)), 3),
    )


def test_connections_dropped_mid_query(
    load_db: LoadDb,
    pg_app_url: str,
    app_name: str,
    proxy: FaultProxy,
    pg_faults: sa.Engine,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: every connection is closed by the network (proxy drop) while 4 threads wait
    for a 5 s query. Guarantee: each thread gets one DisconnectError within 1 s of the drop,
    the pool is empty of dead connections, and once the network is back the next scopes
    succeed with no error."""
    db = load_db(
        {
            "url": _via(pg_app_url, proxy),
            "application_name": app_name,
            "pool": {"size": 4, "max_overflow": 0, "timeout": "5s"},
            "timeouts": {"connect": "2s"},
        }
    )
    outcomes: dict[int, tuple[float, BaseException | None]] = {}

    def worker(i: int) -> None:
        try:
            with db.session() as s:
                s.execute(sa.text("SELECT pg_sleep(5)"))
            outcomes[i] = (time.monotonic(), None)
        except BaseException as e:
            outcomes[i] = (time.monotonic(), e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while backends(pg_faults, app_name, state="active") < 4:
        assert time.monotonic() < deadline, "the queries did not start"
        time.sleep(0.02)
    dropped_at = time.monotonic()
    proxy.set_mode("drop")
    for t in threads:
        t.join(timeout=max(0.0, dropped_at + 1.0 - time.monotonic()))
    hung = [t for t in threads if t.is_alive()]
    secret_watch.errors += [e for _, e in outcomes.values() if e is not None]
    assert not hung
    for when, error in outcomes.values():
        assert isinstance(error, dbconf.DisconnectError), error
        assert when - dropped_at <= 1.0
    assert db.engine.pool.checkedout() == 0

    proxy.set_mode("pass")
    for _ in range(8):
        with db.session() as s:
            assert s.execute(sa.text("SELECT 1")).scalar_one() == 1
    fault_stats.record(
        "connections dropped mid-query",
        "proxy closes 4 connections",
        scopes=12,
        faults=4,
        errors=4,
        max_error_after_drop_s=round(max(w for w, _ in outcomes.values()) - dropped_at, 3),
    )
