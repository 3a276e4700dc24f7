"""The replica probe against a real streaming standby: lag, ejection, re-admission, the thread.

Replay is paused and the standby stopped only on TEST_POSTGRES_STANDBY_URL (point it at a
standby of your own: ``STANDBY_NAME=x STANDBY_PORT=N .ci/pg-standby``); fixtures in conftest
always resume / restart it.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from replica_support import replica_db, status_of, wait_for, wait_probed

from dbconf.dialects import postgresql
from dbconf.dialects.base import ReplicaMeasurement
from dbconf.errors import RegistryClosedError
from dbconf.replicas import probe
from dbconf.replicas.probe_engine import probe_config, probe_timeout
from dbconf.replicas.state import ReplicaState
from dbconf.runtime.database import Database


@pytest.fixture
def db(pg_url: str, standby_url: str) -> Iterator[Database]:
    database = replica_db(pg_url, standby_url, max_lag="1s", check_interval="100ms")
    yield database
    database.close()


def write_on(url: str) -> None:
    """A committed write on the primary (so a paused standby falls behind)."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table if not exists replica_probe_t (n int)"))
            conn.execute(sa.text("insert into replica_probe_t values (1)"))
    finally:
        engine.dispose()


# --- the state machine, without a server ----------------------------------------------------


def test_lsn_to_int() -> None:
    assert postgresql.lsn_to_int("16/B374D848") == 0x16 << 32 | 0xB374D848
    assert postgresql.lsn_to_int("0/0") == 0
    assert postgresql.lsn_to_int(None) is None


def test_first_good_probe_admits_then_eject_at_once_and_two_good_probes_readmit() -> None:
    state = ReplicaState("replicas[0]", "postgresql://h/db")
    assert (state.state, state.reason) == ("unknown", "not probed yet")
    state.record(ReplicaMeasurement(0.0, 10), measured_at=100.0, max_lag=5.0, check_interval=1.0)
    assert state.status().state == "up"
    state.record(ReplicaMeasurement(7.5, 10), measured_at=110.0, max_lag=5.0, check_interval=1.0)
    status = state.status()
    assert (status.state, status.reason) == ("ejected", "lag 7.5 s > max_lag 5 s")
    state.record(ReplicaMeasurement(0.0, 11), measured_at=111.0, max_lag=5.0, check_interval=1.0)
    status = state.status()
    assert status.state == "ejected"
    assert status.reason is not None
    assert "1 so far" in status.reason
    state.record(ReplicaMeasurement(0.0, 12), measured_at=112.0, max_lag=5.0, check_interval=1.0)
    assert (state.status().state, state.status().reason) == ("up", None)
    # a bad probe between two good ones restarts the count
    state.failed("unreachable: refused")
    state.record(ReplicaMeasurement(0.0), measured_at=113.0, max_lag=5.0, check_interval=1.0)
    state.failed("unreachable: refused")
    state.record(ReplicaMeasurement(0.0), measured_at=114.0, max_lag=5.0, check_interval=1.0)
    assert state.status().state == "ejected"
    state.record(ReplicaMeasurement(0.0), measured_at=115.0, max_lag=5.0, check_interval=1.0)
    assert state.status().state == "up"


def test_not_replicating_ejects_with_the_dialects_reason() -> None:
    state = ReplicaState("replicas[0]", "u")
    state.record(
        ReplicaMeasurement(None, None, "not a standby"),
        measured_at=1.0,
        max_lag=5.0,
        check_interval=1.0,
    )
    assert (state.status().state, state.status().reason) == ("ejected", "not a standby")
    state.record(ReplicaMeasurement(None), measured_at=2.0, max_lag=5.0, check_interval=1.0)
    assert state.status().reason == "not replicating"


def test_lag_after_a_quiet_period_is_bounded_by_the_last_caught_up_probe() -> None:
    state = ReplicaState("replicas[0]", "u")
    state.record(ReplicaMeasurement(0.0), measured_at=100.0, max_lag=5.0, check_interval=1.0)
    # the primary was quiet for an hour, then wrote: now() - last replay time reads 3600 s
    state.record(ReplicaMeasurement(3600.0), measured_at=101.0, max_lag=5.0, check_interval=1.0)
    assert (state.status().state, state.status().lag) == ("up", 1.0)
    # replay stopped: the bound grows with time and the replica is ejected past max_lag
    state.record(ReplicaMeasurement(3606.0), measured_at=107.0, max_lag=5.0, check_interval=1.0)
    assert (state.status().state, state.status().lag) == ("ejected", 7.0)
    # without a caught-up probe since, the measured lag stands
    state.failed("unreachable: refused")
    state.record(ReplicaMeasurement(0.0), measured_at=110.0, max_lag=5.0, check_interval=1.0)
    state.failed("unreachable: refused")
    state.record(ReplicaMeasurement(9.0), measured_at=111.0, max_lag=5.0, check_interval=1.0)
    assert state.status().lag == 9.0


def test_eligibility_is_the_staleness_bound_even_without_new_probes() -> None:
    state = ReplicaState("replicas[0]", "u")
    state.record(ReplicaMeasurement(2.0), measured_at=100.0, max_lag=5.0, check_interval=1.0)
    # data 2 s old at t=100: at most max_lag + check_interval = 6 s old until t=104
    assert state.eligible(104.0, 5.0, 1.0)
    assert not state.eligible(104.5, 5.0, 1.0)
    assert "may be older than max_lag + check_interval" in state.why_not(104.5, 5.0, 1.0)
    state.eject("connection failed")
    assert not state.eligible(100.0, 5.0, 1.0)


def test_has_replayed_by_position_or_by_time() -> None:
    state = ReplicaState("replicas[0]", "u")
    state.record(ReplicaMeasurement(1.0, 500), measured_at=100.0, max_lag=5.0, check_interval=1.0)
    assert state.has_replayed(500, 0.0)
    assert not state.has_replayed(501, 0.0)
    state.record(ReplicaMeasurement(1.0, None), measured_at=100.0, max_lag=5.0, check_interval=1.0)
    # no position on the replica's side: its data is as of 100 - 1 = 99
    assert state.has_replayed(501, 98.0)
    assert not state.has_replayed(501, 99.5)


def test_probe_engine_has_one_connection_and_short_timeouts(pg_url: str) -> None:
    cfg = replica_db(pg_url, {"port": 5434, "timeouts": {"connect": "30s"}}).config
    probe_cfg = probe_config(cfg.replica_configs[0], 0.2)
    assert (probe_cfg.pool.size, probe_cfg.pool.max_overflow) == (1, 0)
    assert probe_cfg.timeouts.connect == probe_cfg.timeouts.statement == 1.0
    assert probe_timeout(2.0) == 2.0
    assert probe_timeout(60.0) == 5.0
    assert probe_cfg.sqlalchemy_url.port == 5434


# --- a real standby -----------------------------------------------------------------------


def test_measure_on_the_standby_and_on_a_primary(pg_url: str, standby_url: str) -> None:
    for url, standby in ((standby_url, True), (pg_url, False)):
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        try:
            with engine.connect() as conn:
                m = postgresql.measure_replica(conn)
        finally:
            engine.dispose()
        if standby:
            assert m.reason is None
            assert m.lag is not None
            assert m.lag >= 0
            assert m.position is not None
            assert m.position > 0
        else:
            assert m.reason == "not a standby (pg_is_in_recovery() is false)"


def test_lag_is_zero_once_the_standby_has_replayed_all_it_received(db: Database) -> None:
    """Not a growing now() - last replay timestamp on a quiet primary: receive == replay
    LSN reads as 0 (other sessions may write meanwhile: poll until one probe sees it)."""
    wait_for(lambda: (s := status_of(db)).state == "up" and s.lag == 0.0, "up with lag 0")
    status = status_of(db)
    assert status.reason is None
    assert status.checked_at is not None


def test_a_primary_as_replica_is_ejected_as_not_a_standby(pg_url: str) -> None:
    db = replica_db(pg_url, pg_url, check_interval="100ms")
    try:
        assert db.router is not None
        assert db.router.choose() is None
        wait_probed(db)
        status = status_of(db)
        assert (status.state, status.reason) == (
            "ejected",
            "not a standby (pg_is_in_recovery() is false)",
        )
    finally:
        db.close()


def test_paused_replay_ejects_past_max_lag_then_resume_readmits(
    db: Database, paused_replay: Callable[[], None], pg_url: str, standby_url: str
) -> None:
    router = db.router
    assert router is not None
    wait_for(lambda: router.choose() == 0, "replica 0 chosen")
    paused_replay()
    write_on(pg_url)  # the standby receives it but does not replay it
    ejected = wait_for(
        lambda: (s := status_of(db)).state == "ejected" and s, "ejection past max_lag"
    )
    assert ejected.reason.startswith("lag ")
    assert ejected.reason.endswith("> max_lag 1 s")
    assert ejected.lag is not None
    assert ejected.lag > 1.0
    assert router.choose() is None  # fallback: the primary
    from replica_support import on_standby

    on_standby(standby_url, "select pg_wal_replay_resume()")
    wait_for(lambda: router.choose() == 0, "re-admission after resume")


def test_stopped_standby_is_ejected_as_unreachable_and_readmitted_after_restart(
    db: Database, stopped_standby: Callable[[], None], standby_url: str
) -> None:
    from replica_support import start_standby

    router = db.router
    assert router is not None
    wait_for(lambda: router.choose() == 0, "replica 0 chosen")
    stopped_standby()
    status = wait_for(
        lambda: (s := status_of(db)).reason and s.reason.startswith("unreachable") and s,
        "ejection as unreachable",
    )
    assert status.state == "ejected"
    assert status.reason.startswith("unreachable: OperationalError: ")
    assert router.choose() is None
    start_standby(standby_url)
    wait_for(lambda: router.choose() == 0, "re-admission after restart", 60)


# --- the probe thread ---------------------------------------------------------------------


def _no_probe_thread() -> bool:
    gc.collect()  # routers of other tests that were dropped without close
    return probe.probe_thread() is None


def test_one_probe_thread_per_process_lazily_started_and_stopped_at_close(
    pg_url: str, standby_url: str
) -> None:
    wait_for(_no_probe_thread, "no probe thread before the test")
    first = replica_db(pg_url, standby_url, name="a", check_interval="100ms")
    second = replica_db(pg_url, standby_url, name="b", check_interval="100ms")
    router, other = first.router, second.router
    assert router is not None
    assert other is not None
    assert probe.probe_thread() is None  # building a router does not start it
    router.choose()
    thread = probe.probe_thread()
    assert thread is not None
    assert thread.daemon
    assert thread.name == "dbconf-replica-probe"
    other.choose()
    assert probe.probe_thread() is thread  # one for both
    wait_for(lambda: router.status()[0].state == "up", "a first probe of the first")
    first.close()
    assert probe.probe_thread() is thread  # still probing the second
    second.close()
    wait_for(_no_probe_thread, "the probe thread to end after close")
    assert router.status()[0].state == "up"  # a closed router shows its last probe
    with pytest.raises(RegistryClosedError):
        router.choose()


def test_forked_child_gets_fresh_state_and_its_own_probe(db: Database) -> None:
    router = db.router
    assert router is not None
    wait_for(lambda: router.choose() == 0, "replica 0 chosen")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read)
            fresh = probe.probe_thread() is None and router._states[0].status().state == "unknown"
            # probes again, in this process
            chosen = wait_for(lambda: router.choose() == 0, "a choice in the child")
            ok = fresh and chosen and probe.probe_thread() is not None
            os.write(write, b"ok" if ok else f"{fresh} {chosen}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert answer == b"ok"
    assert status_of(db).state == "up"  # the parent's state is untouched


def test_serve_until_is_the_eligibility_rule_solved_for_now() -> None:
    """Router.choose's lock-free fast path reads serve_until: it must agree with eligible()."""
    state = ReplicaState("replicas[0]", "postgresql://h/db")
    assert state.serve_until == float("-inf")  # not probed: never serves
    state.record(ReplicaMeasurement(0.5, 10), measured_at=100.0, max_lag=5.0, check_interval=1.0)
    assert state.serve_until == 100.0 - 0.5 + 5.0 + 1.0
    for now in (100.0, 104.0, 105.5, 105.6, 120.0):
        assert state.eligible(now, 5.0, 1.0) == (now <= state.serve_until), now
    state.eject("a session's connection failed")
    assert state.serve_until == float("-inf")
    assert not state.eligible(100.0, 5.0, 1.0)
    state.record(ReplicaMeasurement(0.0, 11), measured_at=101.0, max_lag=5.0, check_interval=1.0)
    assert state.serve_until == float("-inf")  # ejected: one good probe is not enough
    state.record(ReplicaMeasurement(0.0, 12), measured_at=102.0, max_lag=5.0, check_interval=1.0)
    assert state.serve_until == 102.0 + 6.0
    state.failed("unreachable: refused")
    assert state.serve_until == float("-inf")
