"""Routing reads to a MariaDB replica (dbconf.replicas.Router) against the replication pair of
.ci/mariadb-replica: reads go to the replica (``@@port``) through read-only connections, a
replica that stops replicating or lags past ``max_lag`` is ejected and reads fall back to the
primary, two good probes re-admit it, and read your writes waits for the GTID position.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import MariaReplicaServer
from mariadb_pair import (
    caught_up,
    insert,
    poll,
    refused_as_read_only,
    replicated_table,
    row_locked,
    write_position,
)

from dbconf.cli import main
from dbconf.config import ProfileConfig
from dbconf.replicas.router import Router
from dbconf.replicas.state import ReplicaStatus
from dbconf.runtime.registry import Registry

pytestmark = pytest.mark.mariadb

PRIMARY_PORT, REPLICA_PORT = 3307, 3308


@pytest.fixture(scope="module")
def primary(maria_primary_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(maria_primary_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def replica(maria_replica_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(maria_replica_url)
    yield engine
    engine.dispose()


@pytest.fixture
def table(primary: sa.Engine, replica: sa.Engine) -> Iterator[str]:
    with replicated_table(primary, replica) as name:
        yield name


def pair_registry(primary_url: str, replica_url: str, **routing: Any) -> Registry:
    config = {
        "url": primary_url,
        "replicas": [{"url": replica_url}],
        "routing": {"max_lag": "1s", "check_interval": "0.2s", **routing},
    }
    return Registry(ProfileConfig.model_validate({"databases": {"main": config}}), profile="test")


@pytest.fixture
def dbs(maria_primary_url: str, maria_replica_url: str) -> Iterator[Registry]:
    registry = pair_registry(maria_primary_url, maria_replica_url)
    yield registry
    registry.close()


def router_of(registry: Registry) -> Router:
    router = registry.default.router
    assert router is not None
    return router


def port(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT @@port")).scalar_one())


def status(router: Router) -> ReplicaStatus:
    (only,) = router.status()
    return only


def serving(router: Router) -> int | None:
    """``router.choose()`` once the replica is up (a first probe round can take longer than
    the ``check_interval`` the first choice waits)."""
    poll(lambda: status(router), lambda s: s.state == "up", "replica up")
    return router.choose()


def test_reads_go_to_the_replica_through_read_only_connections(
    dbs: Registry, primary: sa.Engine, table: str
) -> None:
    router = router_of(dbs)
    position = insert(primary, table, 1)
    up = poll(
        lambda: status(router),
        lambda s: s.state == "up" and s.position is not None and s.position >= position,
        "replica up at the write's position",
    )
    assert up.lag == 0.0
    assert up.reason is None
    assert dbs.replica_status()["main"][0].state == "up"
    assert router.choose() == 0
    engine = router.replica_engine(0)
    assert port(engine) == REPLICA_PORT
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT id FROM {table}")).scalars().all() == [1]
        with pytest.raises(sa.exc.DBAPIError) as caught:
            conn.execute(sa.text(f"INSERT INTO {table} VALUES (2, 0)"))
        assert refused_as_read_only(caught.value), caught.value


def test_async_reads_go_to_the_replica_through_read_only_connections(
    dbs: Registry, table: str
) -> None:
    router = router_of(dbs)

    async def main() -> None:
        engine = router.replica_async_engine(0)
        assert engine.dialect.driver == "aiomysql"
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT @@port"))).scalar_one() == REPLICA_PORT
            with pytest.raises(sa.exc.DBAPIError) as caught:
                await conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 0)"))
            assert refused_as_read_only(caught.value), caught.value
        await dbs.aclose()

    asyncio.run(main())


def test_a_stopped_sql_thread_ejects_the_replica_until_two_good_probes(
    maria_replica_admin: sa.Engine,
    maria_primary_url: str,
    maria_replica_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # probes 0.5 s apart: the state between the two good probes lasts long enough to be seen
    dbs = pair_registry(maria_primary_url, maria_replica_url, check_interval="0.5s")
    try:
        stop_and_restart_the_sql_thread(maria_replica_admin, dbs, caplog)
    finally:
        dbs.close()


def stop_and_restart_the_sql_thread(
    admin: sa.Engine, dbs: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    router = router_of(dbs)
    assert serving(router) == 0
    with admin.connect() as conn:
        conn.execute(sa.text("STOP SLAVE SQL_THREAD"))
    ejected = poll(lambda: status(router), lambda s: s.state == "ejected", "replica ejected")
    assert ejected.lag is None
    assert ejected.reason is not None
    assert ejected.reason.startswith("not replicating: its SQL thread is not running")
    with caplog.at_level(logging.WARNING, logger="dbconf.replicas"):
        assert router.choose() is None  # fallback: primary
    assert any("no replica can serve reads" in r.getMessage() for r in caplog.records)
    assert port(dbs.default.engine) == PRIMARY_PORT
    with admin.connect() as conn:
        conn.execute(sa.text("START SLAVE SQL_THREAD"))
    seen: list[ReplicaStatus] = []

    def watch() -> ReplicaStatus:
        seen.append(status(router))
        return seen[-1]

    poll(watch, lambda s: s.state == "up", "replica re-admitted")
    # one good probe is not enough: still ejected, counting
    assert any(s.state == "ejected" and "1 so far" in (s.reason or "") for s in seen), seen
    assert router.choose() == 0


def test_lag_past_max_lag_ejects_the_replica_and_catching_up_readmits_it(
    dbs: Registry, primary: sa.Engine, replica: sa.Engine, table: str
) -> None:
    router = router_of(dbs)
    caught_up(replica, insert(primary, table, 1))
    assert serving(router) == 0
    with row_locked(replica, table, 1):
        with primary.begin() as conn:
            conn.execute(sa.text(f"UPDATE {table} SET v = 1 WHERE id = 1"))
        ejected = poll(lambda: status(router), lambda s: s.state == "ejected", "replica ejected")
        assert ejected.lag is not None
        assert ejected.lag > 1.0
        assert ejected.reason == f"lag {ejected.lag:.3g} s > max_lag 1 s"
        assert router.choose() is None
    poll(lambda: status(router), lambda s: s.state == "up", "replica re-admitted")
    assert router.choose() == 0


def test_read_your_writes_waits_for_the_replica_to_reach_the_gtid_position(
    maria_primary_url: str,
    maria_replica_url: str,
    primary: sa.Engine,
    replica: sa.Engine,
    table: str,
) -> None:
    """The replica lags (its SQL thread waits on a row lock) but within max_lag: plain reads
    may use it, a read that must see this context's write goes to the primary until the
    replica's GTID position has reached the write's."""
    registry = pair_registry(maria_primary_url, maria_replica_url, max_lag="60s")
    try:
        router = router_of(registry)
        caught_up(replica, insert(primary, table, 1))
        with row_locked(replica, table, 1):
            with primary.connect() as conn:
                conn.execute(sa.text(f"UPDATE {table} SET v = 1 WHERE id = 1"))
                conn.commit()
                router.remember_write(write_position(conn))
            last = router.last_write()
            assert last is not None
            position, _wrote_at = last
            assert position is not None
            lagging = poll(
                lambda: status(router),
                lambda s: s.lag is not None and s.lag >= 1.0,
                "replica lagging",
            )
            assert lagging.state == "up"
            assert lagging.position is not None
            assert lagging.position < position
            assert router.choose() == 0  # a plain read may be 60 s stale
            assert router.choose(position=position) is None  # this read must see the write
        poll(lambda: router.choose(position=position), lambda i: i == 0, "replica has the write")
        with router.replica_engine(0).connect() as conn:
            assert conn.execute(sa.text(f"SELECT v FROM {table} WHERE id = 1")).scalar_one() == 1
    finally:
        registry.close()


def test_check_lists_the_replica_and_fails_on_a_server_that_is_not_one(
    maria_primary_url: str,
    maria_replica_url: str,
    maria_url: str,
    write_config: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    def check(replica_url: str) -> tuple[int, str]:
        config = write_config(
            f"""
            profiles:
              p:
                databases:
                  main:
                    url: {maria_primary_url}
                    replicas: [{{url: '{replica_url}'}}]
            """
        )
        code = main(["check", "-c", str(config), "-p", "p"], environ={})
        out, err = capsys.readouterr()
        return code, out + err

    code, out = check(maria_replica_url)
    assert code == 0, out
    assert f"\n  replicas[0] {maria_replica_url}: up, lag 0 s" in out
    code, out = check(maria_url)  # the standalone server on 3306
    assert code == 1, out
    assert "not a replica (SHOW SLAVE STATUS is empty)" in out


def test_a_replica_that_goes_down_is_ejected_and_readmitted_when_it_is_back(
    maria_replica_server: MariaReplicaServer, maria_primary_url: str, maria_replica_url: str
) -> None:
    dbs = pair_registry(maria_primary_url, maria_replica_url)
    try:
        router = router_of(dbs)
        assert serving(router) == 0
        engine = router.replica_engine(0)
        assert port(engine) == REPLICA_PORT  # a pooled connection to the replica
        maria_replica_server.stop()
        # the probe's pooled connection may first fail mid-query ("probe failed: … Lost
        # connection"); the next probe cannot connect at all
        poll(
            lambda: status(router),
            lambda s: s.state == "ejected" and (s.reason or "").startswith("unreachable: "),
            "replica ejected as unreachable",
        )
        assert router.choose() is None
        with pytest.raises(sa.exc.OperationalError):
            port(engine)  # its pooled connection is gone; pre-ping finds no server either
        maria_replica_server.start()
        poll(lambda: status(router), lambda s: s.state == "up", "replica re-admitted")
        assert router.choose() == 0
        assert port(engine) == REPLICA_PORT  # a new connection
    finally:
        dbs.close()
