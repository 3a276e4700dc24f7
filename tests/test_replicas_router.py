"""The router with a real standby: reads on the standby, read-only replica engines, the choice,
fallbacks, read your writes, and the Database / Registry / ``dbconf check`` integration."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from replica_support import replica_db, status_of, wait_for, wait_probed, wait_up

from dbconf.cli import main
from dbconf.config import DatabaseConfig, ProfileConfig
from dbconf.dialects import postgresql
from dbconf.errors import NoReplicaError, RegistryClosedError
from dbconf.runtime.database import Database
from dbconf.runtime.registry import Registry

PASSWORD = "s3cr3t-replica"
UNREACHABLE = f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:1/test"


@pytest.fixture
def db(pg_url: str, standby_url: str) -> Iterator[Database]:
    database = replica_db(pg_url, standby_url, check_interval="100ms", max_lag="60s")
    yield database
    database.close()


@pytest.fixture
def two(pg_url: str, standby_url: str) -> Iterator[Database]:
    """Two replicas (the same standby twice)."""
    database = replica_db(pg_url, standby_url, standby_url, check_interval="100ms", max_lag="60s")
    yield database
    database.close()


def test_replicated_rows_are_read_on_the_standby(db: Database, standby_url: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text("create table if not exists replica_router_t (n int)"))
        n = conn.execute(
            sa.text("insert into replica_router_t values (floor(random() * 1e9)) returning n")
        ).scalar_one()
    router = db.router
    assert router is not None
    wait_up(db)
    i = router.choose()
    assert i == 0
    engine = router.replica_engine(i)

    def visible() -> bool:
        with engine.connect() as conn:
            q = "select count(*) from replica_router_t where n = :n"
            return bool(conn.execute(sa.text(q), {"n": n}).scalar_one())

    wait_for(visible, "the row replayed on the standby")
    with engine.connect() as conn:
        port = conn.execute(sa.text("select inet_server_port()")).scalar_one()
    assert port == sa.make_url(standby_url).port


def test_replica_connections_refuse_writes(db: Database) -> None:
    router = db.router
    assert router is not None
    with router.replica_engine(0).connect() as conn:
        with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
            conn.execute(sa.text("create temporary table nope (n int)"))
        conn.rollback()
        # an AUTOCOMMIT connection too: the setting is the session's, not a transaction's
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
            auto.execute(sa.text("create temporary table nope (n int)"))


def test_async_replica_engine_is_read_only_and_per_loop(db: Database, standby_url: str) -> None:
    router = db.router
    assert router is not None

    async def read() -> object:
        engine = router.replica_async_engine(0)
        async with engine.connect() as conn:
            port = (await conn.execute(sa.text("select inet_server_port()"))).scalar_one()
            assert port == sa.make_url(standby_url).port
            with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
                await conn.execute(sa.text("create temporary table nope (n int)"))
        return engine

    first = asyncio.run(read())
    second = asyncio.run(read())
    assert first is not second  # one engine per event loop


def test_least_loaded_with_round_robin_ties(two: Database) -> None:
    router = two.router
    assert router is not None
    wait_up(two)
    assert [router.choose() for _ in range(4)] == [0, 1, 0, 1]  # idle: round robin
    with router.replica_engine(0).connect():  # replica 0 holds a connection
        assert [router.choose() for _ in range(3)] == [1, 1, 1]
        with router.replica_engine(1).connect(), router.replica_engine(1).connect():
            assert router.choose() == 0
    assert {router.choose(), router.choose()} == {0, 1}


def test_eject_avoids_the_replica_until_two_good_probes(two: Database) -> None:
    router = two.router
    assert router is not None
    wait_up(two)
    router.eject(0, "connection failed: server closed the connection")
    status = status_of(two)
    assert (status.state, status.reason) == (
        "ejected",
        "connection failed: server closed the connection",
    )
    assert router.choose() == 1
    wait_for(lambda: status_of(two).state == "up", "re-admission by the probe")


def test_fallback_error_raises_with_each_replicas_reason(pg_url: str) -> None:
    db = replica_db(pg_url, UNREACHABLE, check_interval="100ms", fallback="error")
    try:
        router = db.router
        assert router is not None
        wait_probed(db)
        with pytest.raises(NoReplicaError) as info:
            router.choose()
        message = str(info.value)
        assert "replicas[0]: unreachable: OperationalError: " in message
        assert "raise routing.max_lag" in message
        assert "routing.fallback: primary" in message
        assert PASSWORD not in message
        assert list(info.value.reasons) == ["replicas[0]"]
    finally:
        db.close()


def test_fallback_primary_warns_once_with_masked_urls(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = replica_db(pg_url, UNREACHABLE, check_interval="100ms", max_lag="60s")
    try:
        router = db.router
        assert router is not None
        with caplog.at_level(logging.WARNING, logger="dbconf.replicas"):
            assert [router.choose() for _ in range(3)] == [None, None, None]
        fallbacks = [r for r in caplog.records if "reading from the primary" in r.getMessage()]
        assert len(fallbacks) == 1
        assert "postgres:***@127.0.0.1:1/test" in fallbacks[0].getMessage()
        wait_probed(db)
        assert "unreachable" in status_of(db).reason  # type: ignore[operator]
        assert PASSWORD not in caplog.text
    finally:
        db.close()


def test_read_your_writes_by_position(db: Database) -> None:
    router = db.router
    assert router is not None
    assert router.last_write() is None
    with db.engine.begin() as conn:
        conn.execute(sa.text("create table if not exists replica_router_t (n int)"))
        conn.execute(sa.text("insert into replica_router_t values (1)"))
    with db.engine.connect() as conn:
        position = postgresql.write_position(conn)
    assert position is not None
    router.remember_write(position)
    remembered = router.last_write()
    assert remembered is not None
    assert remembered[0] == position
    # a replica whose probe has not shown the write yet is not chosen; once it has, it is
    assert router.choose(position=position + (1 << 40)) is None
    wait_for(lambda: router.choose(position=position) == 0, "a probe past the write")
    # another thread (another context) has no last write
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(router.last_write()))
    thread.start()
    thread.join()
    assert seen == [None]


def test_read_your_writes_off_remembers_nothing(pg_url: str, standby_url: str) -> None:
    db = replica_db(pg_url, standby_url, read_your_writes=False)
    try:
        router = db.router
        assert router is not None
        router.remember_write(123)
        assert router.last_write() is None
    finally:
        db.close()


def test_database_without_replicas_has_no_router(pg_url: str) -> None:
    db = Database("plain", DatabaseConfig.model_validate({"url": pg_url}))
    assert db.router is None
    assert db.replica_status() == []


def test_router_is_lazy_and_closed_with_the_database(pg_url: str, standby_url: str) -> None:
    db = replica_db(pg_url, standby_url, check_interval="100ms", max_lag="60s")
    router = db.router
    assert router is not None
    assert db.router is router  # built once
    wait_up(db)
    assert router.choose() == 0
    engine = router.replica_engine(0)
    with engine.connect():
        db.close()
        assert router.closed
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    with pytest.raises(RegistryClosedError):
        router.choose()
    with pytest.raises(RegistryClosedError):
        db.replica_status()


def test_registry_replica_status(pg_url: str, standby_url: str) -> None:
    databases = {
        "main": {"url": pg_url, "replicas": [{"url": standby_url}]},
        "other": {"url": pg_url},
    }
    registry = Registry(ProfileConfig.model_validate({"databases": databases}))
    with registry:
        statuses = registry.replica_status()
        assert list(statuses) == ["main", "other"]
        assert [s.name for s in statuses["main"]] == ["replicas[0]"]
        assert statuses["other"] == []
        wait_for(lambda: registry.replica_status()["main"][0].state == "up", "a first probe")


def _check(
    capsys: pytest.CaptureFixture[str],
    write_config: Callable[[str], Path],
    primary: str,
    replicas: str,
) -> tuple[int, str]:
    config = write_config(
        f"""
        profiles:
          p:
            databases:
              main:
                url: ${{PRIMARY}}
                replicas: {replicas}
        """
    )
    code = main(["check", "-c", str(config), "-p", "p"], environ={"PRIMARY": primary})
    out, err = capsys.readouterr()
    return code, out + err


def test_check_lists_replicas_and_fails_on_an_unreachable_one(
    pg_url: str,
    standby_url: str,
    write_config: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = _check(capsys, write_config, pg_url, f"[{{url: '{standby_url}'}}]")
    assert code == 0, out
    masked = sa.make_url(standby_url).render_as_string(hide_password=True)
    assert f"\n  replicas[0] {masked}: up, lag " in out
    both = f"[{{url: '{standby_url}'}}, {{url: '{UNREACHABLE}'}}]"
    code, out = _check(capsys, write_config, pg_url, both)
    assert code == 1, out
    assert "\n  replicas[1] postgresql+psycopg2://postgres:***@127.0.0.1:1/test: ejected, " in out
    assert "(unreachable: OperationalError: " in out
    assert PASSWORD not in out


def test_aclose_disposes_the_running_loops_replica_engine(db: Database) -> None:
    router = db.router
    assert router is not None

    async def use_then_close() -> int:
        engine = router.replica_async_engine(0)
        async with engine.connect() as conn:
            await conn.execute(sa.text("select 1"))
        assert engine.sync_engine.pool.checkedin() == 1  # type: ignore[attr-defined]
        await db.aclose()
        return engine.sync_engine.pool.checkedin()  # type: ignore[attr-defined,no-any-return]

    assert asyncio.run(use_then_close()) == 0
    assert router.closed


def test_probe_keeps_the_replicas_own_connect_timeout_when_connect_args_set_it(
    pg_url: str, standby_url: str
) -> None:
    """connect_args.connect_timeout and timeouts.connect would clash: the probe engine keeps
    the replica's own timeouts rather than fail."""
    replica = {"url": standby_url, "connect_args": {"connect_timeout": 3}}
    db = replica_db(pg_url, replica, check_interval="100ms", max_lag="60s")
    try:
        router = db.router
        assert router is not None
        wait_up(db)
        assert router.choose() == 0
    finally:
        db.close()


def test_async_check_probes_the_replicas_too(pg_url: str, standby_url: str) -> None:
    db = replica_db(pg_url, standby_url, UNREACHABLE)
    try:
        report = asyncio.run(db.async_check())
        assert report.ok
        assert [r.name for r in report.replicas] == ["replicas[0]", "replicas[1]"]
        assert report.replicas[1].reason is not None
        assert report.replicas[1].reason.startswith("unreachable: ")
        assert not report.replicas_ok
    finally:
        db.close()
