"""MariaDB read replicas against a real replication pair (.ci/mariadb-replica: a primary on 3307,
a GTID replica of it on 3308): the lag measurement, GTID positions for read your writes, and
why a replica is not usable.

Tests that stop a replication thread use ``maria_replica_admin`` (``server_admin``), which
restarts it in teardown. The server on 3306 is not involved. Read-only SQL:
test_replicas_mariadb_readonly.py; routing: test_replicas_mariadb_routing.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from mariadb_pair import (
    DEADLINE,
    caught_up,
    insert,
    measure,
    on_replica,
    poll,
    replicated_table,
    row_locked,
    write_position,
)

from dbconf.dialects.base import ReplicaMeasurement
from dbconf.dialects.mysql import dialect
from dbconf.dialects.mysql_replica import gtid_seq_no, lag_bound

pytestmark = pytest.mark.mariadb


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


# --- positions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gtids", "seq_no"),
    [
        ("0-1-42", 42),
        (" 0-2-7 ", 7),
        ("3-1-9", 9),
        ("", None),
        (None, None),
        ("0-1-5,1-1-3", None),  # two domains: no single order
        ("not-a-gtid", None),
        ("0-1", None),
    ],
)
def test_gtid_seq_no_of_a_one_domain_list(gtids: str | None, seq_no: int | None) -> None:
    assert gtid_seq_no(gtids) == seq_no


def status_row(read: int, executed: int, relay_file: str = "binlog.000001") -> dict[str, object]:
    return {
        "Master_Log_File": "binlog.000001",
        "Read_Master_Log_Pos": read,
        "Relay_Master_Log_File": relay_file,
        "Exec_Master_Log_Pos": executed,
    }


@pytest.mark.parametrize(
    ("row", "behind", "lag"),
    [
        (status_row(468, 468), 0, 0.0),  # applied all it received: complete
        (status_row(900, 468), 0, 1.0),  # the server says 0 s while applying: under 1 s
        (status_row(900, 468), 3, 4.0),  # truncated to whole seconds: under 4 s
        (status_row(468, 468, relay_file="binlog.000000"), 0, 1.0),  # an older file
    ],
)
def test_the_lag_is_a_bound_on_the_age_of_the_replica_data(
    row: dict[str, object], behind: int, lag: float
) -> None:
    assert lag_bound(row, behind) == lag


def test_write_position_is_the_gtid_seq_no_of_the_commit(primary: sa.Engine, table: str) -> None:
    with primary.connect() as conn:
        conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 0)"))
        conn.commit()
        own = gtid_seq_no(conn.execute(sa.text("SELECT @@last_gtid")).scalar())
        first = write_position(conn)
    assert own is not None
    assert first >= own
    # @@gtid_binlog_pos is global: any connection to the primary gives a position that covers
    # the commit, and a later commit has a higher one
    with primary.connect() as other:
        assert write_position(other) >= first
    assert insert(primary, table, 2) > first


def test_positions_through_aiomysql_and_a_mysql_scheme_url(
    maria_primary_url: str,
    maria_replica_url: str,
    primary: sa.Engine,
    replica: sa.Engine,
    table: str,
) -> None:
    """An async session's sync connection (aiomysql under SQLAlchemy's greenlet) measures the
    same; a ``mysql+`` URL to MariaDB is recognised as MariaDB (GTID positions)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    position = insert(primary, table, 1)
    caught_up(replica, position)
    assert dialect.measure_replica is not None
    assert dialect.write_position is not None

    async def main() -> tuple[int | None, ReplicaMeasurement]:
        urls = [
            sa.make_url(u).set(drivername="mysql+aiomysql")
            for u in (maria_primary_url, maria_replica_url)
        ]
        on_primary, on_replica = (create_async_engine(u) for u in urls)
        try:
            async with on_primary.connect() as conn:
                written = await conn.run_sync(dialect.write_position)
            async with on_replica.connect() as conn:
                measured = await conn.run_sync(dialect.measure_replica)
            return written, measured
        finally:
            await on_primary.dispose()
            await on_replica.dispose()

    written, measured = asyncio.run(main())
    assert written is not None
    assert written >= position
    assert measured.reason is None
    assert measured.position is not None
    assert measured.position >= position


def test_the_primary_and_a_standalone_server_are_not_replicas(
    primary: sa.Engine, maria_url: str
) -> None:
    standalone = sa.create_engine(maria_url, poolclass=sa.NullPool)
    try:
        for engine in (primary, standalone):
            assert measure(engine) == ReplicaMeasurement(
                None, None, "not a replica (SHOW SLAVE STATUS is empty)"
            )
    finally:
        standalone.dispose()


# --- lag ------------------------------------------------------------------------------------


def test_a_caught_up_replica_measures_lag_zero_and_the_write_position(
    primary: sa.Engine, replica: sa.Engine, table: str
) -> None:
    position = insert(primary, table, 1)
    measurement = caught_up(replica, position)
    assert measurement.reason is None
    assert on_replica(replica, table, 1)


def test_a_stopped_sql_thread_is_not_replicating_and_says_why(
    maria_replica_admin: sa.Engine, primary: sa.Engine, replica: sa.Engine, table: str
) -> None:
    caught_up(replica, insert(primary, table, 1))
    with maria_replica_admin.connect() as conn:
        conn.execute(sa.text("STOP SLAVE SQL_THREAD"))  # returns once the thread has stopped
    position = insert(primary, table, 2)
    stopped = measure(replica)
    assert stopped.lag is None
    assert stopped.reason == (
        "not replicating: its SQL thread is not running (Slave_SQL_Running: No); "
        "Seconds_Behind_Master is NULL"
    )
    # the replica's position says it has not applied the write, and indeed it has not
    assert stopped.position is not None
    assert stopped.position < position
    assert not on_replica(replica, table, 2)
    with maria_replica_admin.connect() as conn:
        conn.execute(sa.text("START SLAVE SQL_THREAD"))
    caught_up(replica, position)
    assert on_replica(replica, table, 2)


def test_a_stopped_io_thread_is_not_replicating_and_says_why(
    maria_replica_admin: sa.Engine, replica: sa.Engine
) -> None:
    with maria_replica_admin.connect() as conn:
        conn.execute(sa.text("STOP SLAVE IO_THREAD"))
    stopped = measure(replica)
    assert stopped.lag is None
    assert stopped.reason == (
        "not replicating: its I/O thread is not connected to the primary "
        "(Slave_IO_Running: No); Seconds_Behind_Master is NULL"
    )


def test_lag_grows_while_the_sql_thread_waits_then_returns_to_zero(
    primary: sa.Engine, replica: sa.Engine, table: str
) -> None:
    """The SQL thread runs but cannot apply an update: a transaction on the replica holds the
    row's lock. Seconds_Behind_Master then counts the age of the event it waits on."""
    caught_up(replica, insert(primary, table, 1))
    with row_locked(replica, table, 1):
        with primary.begin() as conn:
            conn.execute(sa.text(f"UPDATE {table} SET v = 1 WHERE id = 1"))
        with primary.connect() as conn:
            position = write_position(conn)
        behind = poll(
            lambda: measure(replica),
            lambda m: m.lag is not None and m.lag >= 2.0,
            "lag grows while the SQL thread waits on the lock",
        )
        later = poll(
            lambda: measure(replica),
            lambda m: m.lag is not None and m.lag > behind.lag,  # type: ignore[operator]
            "lag keeps growing",
        )
        assert behind.reason is None
        assert later.reason is None
        assert later.position is not None
        assert later.position < position
    # the row is released: the SQL thread applies the update
    caught_up(replica, position)
    with replica.connect() as conn:
        assert conn.execute(sa.text(f"SELECT v FROM {table} WHERE id = 1")).scalar_one() == 1


def test_a_replica_position_at_or_past_a_write_means_the_write_is_visible(
    primary: sa.Engine, replica: sa.Engine, table: str
) -> None:
    """The read-your-writes rule on real replication: every time a measurement says the
    replica's position has reached a write's, a read that starts after it sees the row."""
    reached = 0
    for row_id in range(1, 41):
        position = insert(primary, table, row_id)
        deadline = time.monotonic() + DEADLINE
        while True:
            measurement = measure(replica)
            if measurement.position is not None and measurement.position >= position:
                assert on_replica(replica, table, row_id), (row_id, position, measurement)
                reached += 1
                break
            assert time.monotonic() < deadline, f"replica never reached position {position}"
    assert reached == 40


def test_a_user_without_the_monitor_privilege_gets_a_reason(
    server_admin: None, maria_replica_url: str, replica: sa.Engine
) -> None:
    user = f"dbconf_nomon_{uuid.uuid4().hex[:8]}"
    admin = replica.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'127.0.0.1'"))
        conn.execute(sa.text(f"GRANT SELECT ON test.* TO '{user}'@'127.0.0.1'"))
    engine = sa.create_engine(
        sa.make_url(maria_replica_url).set(username=user), poolclass=sa.NullPool
    )
    try:
        measurement = measure(engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP USER '{user}'@'127.0.0.1'"))
    assert measurement.lag is None
    assert measurement.position is None
    assert measurement.reason is not None
    assert measurement.reason.startswith("cannot read its replication status (SHOW SLAVE STATUS:")
    assert "SLAVE MONITOR" in measurement.reason
    assert measurement.reason.endswith("grant SLAVE MONITOR to this replica's user")
