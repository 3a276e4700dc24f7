"""MariaDB read replicas against a real replication pair (.ci/mariadb-replica: a primary on 3307,
a GTID replica of it on 3308): the lag measurement, GTID positions for read your writes, and
the read-only SQL on both drivers (PyMySQL, aiomysql).

Tests that stop a replication thread request ``server_admin`` and restart it in teardown. The
server on 3306 is not involved.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from dbconf.dialects.base import ReplicaMeasurement
from dbconf.dialects.mysql import dialect
from dbconf.dialects.mysql_replica import gtid_seq_no

pytestmark = pytest.mark.mariadb

T = TypeVar("T")
DEADLINE = 30.0  # seconds: how long a poll waits for the replica
READ_ONLY_ERROR = 1792  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION


def poll(fetch: Callable[[], T], done: Callable[[T], bool], what: str) -> T:
    """``fetch()`` until ``done`` says so; fail after :data:`DEADLINE` naming ``what``."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {DEADLINE:.0f} s (last: {value!r})")
        time.sleep(0.05)


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


def measure(engine: sa.Engine) -> ReplicaMeasurement:
    assert dialect.measure_replica is not None
    with engine.connect() as conn:
        return dialect.measure_replica(conn)


def write_position(conn: sa.Connection) -> int:
    assert dialect.write_position is not None
    position = dialect.write_position(conn)
    assert position is not None, "the pair's primary has one GTID domain: positions are ints"
    return position


def on_replica(replica: sa.Engine, table: str, row_id: int) -> bool:
    with replica.connect() as conn:
        found = conn.execute(sa.text(f"SELECT 1 FROM {table} WHERE id = :i"), {"i": row_id})
        return found.first() is not None


@pytest.fixture
def table(primary: sa.Engine, replica: sa.Engine) -> Iterator[str]:
    """A fresh table made on the primary, once it has reached the replica."""
    name = f"rt_{uuid.uuid4().hex[:12]}"
    with primary.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} (id INT PRIMARY KEY, v INT)"))

    def exists() -> bool:
        with replica.connect() as conn:
            return conn.execute(sa.text("SHOW TABLES LIKE :t"), {"t": name}).first() is not None

    poll(exists, bool, f"table {name} replicated")
    yield name
    with primary.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))


def insert(primary: sa.Engine, table: str, row_id: int) -> int:
    """Insert and commit a row on the primary; the write position after the commit."""
    with primary.connect() as conn:
        conn.execute(sa.text(f"INSERT INTO {table} (id, v) VALUES (:i, 0)"), {"i": row_id})
        conn.commit()
        return write_position(conn)


def caught_up(replica: sa.Engine, position: int) -> ReplicaMeasurement:
    return poll(
        lambda: measure(replica),
        lambda m: m.lag == 0.0 and m.position is not None and m.position >= position,
        f"replica caught up with position {position}",
    )


@pytest.fixture
def replica_admin(server_admin: None, replica: sa.Engine) -> Iterator[sa.Engine]:
    """An AUTOCOMMIT engine on the replica for STOP SLAVE; teardown starts both replication
    threads again and waits until they run."""
    admin = replica.execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield admin
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("START SLAVE"))
        poll(lambda: measure(replica), lambda m: m.reason is None, "replication restarted")


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
    replica_admin: sa.Engine, primary: sa.Engine, replica: sa.Engine, table: str
) -> None:
    caught_up(replica, insert(primary, table, 1))
    with replica_admin.connect() as conn:
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
    with replica_admin.connect() as conn:
        conn.execute(sa.text("START SLAVE SQL_THREAD"))
    caught_up(replica, position)
    assert on_replica(replica, table, 2)


def test_a_stopped_io_thread_is_not_replicating_and_says_why(
    replica_admin: sa.Engine, replica: sa.Engine
) -> None:
    with replica_admin.connect() as conn:
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
    with replica.connect() as locker:
        locker.execute(sa.text(f"SELECT v FROM {table} WHERE id = 1 FOR UPDATE"))
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
        locker.rollback()  # release the row: the SQL thread applies the update
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


# --- read-only SQL --------------------------------------------------------------------------


def read_only_on_connect(sync_engine: sa.Engine) -> None:
    """As the router sets up a replica engine: the session SQL on every new connection."""
    sql = dialect.read_only_session_sql
    assert sql == "SET SESSION TRANSACTION READ ONLY"

    @event.listens_for(sync_engine, "connect")
    def _read_only(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()
        dbapi_connection.commit()


def refused(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "args", (None,))[0] == READ_ONLY_ERROR


@pytest.mark.parametrize("server", ["primary", "replica"])
def test_read_only_session_sql_refuses_writes_with_pymysql(
    server: str, request: pytest.FixtureRequest, table: str
) -> None:
    url = request.getfixturevalue(f"maria_{server}_url")
    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    read_only_on_connect(engine)
    try:
        for _ in range(2):  # a new connection, then the same one back from the pool
            with engine.connect() as conn:
                assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() == 0
                for statement in (
                    f"INSERT INTO {table} VALUES (1, 0)",
                    f"CREATE TABLE {table}_x (id INT)",
                ):
                    with pytest.raises(sa.exc.DBAPIError) as caught:
                        conn.execute(sa.text(statement))
                    assert refused(caught.value), caught.value
                    conn.rollback()
        assert engine.pool.checkedin() == 1  # one connection served both scopes
    finally:
        engine.dispose()


@pytest.mark.parametrize("server", ["primary", "replica"])
def test_read_only_session_sql_refuses_writes_with_aiomysql(
    server: str, request: pytest.FixtureRequest, table: str
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    url = sa.make_url(request.getfixturevalue(f"maria_{server}_url"))

    async def main() -> None:
        engine = create_async_engine(url.set(drivername="mariadb+aiomysql"), pool_size=1)
        read_only_on_connect(engine.sync_engine)
        try:
            for _ in range(2):
                async with engine.connect() as conn:
                    count = await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))
                    assert count.scalar_one() == 0
                    with pytest.raises(sa.exc.DBAPIError) as caught:
                        await conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 0)"))
                    assert refused(caught.value), caught.value
                    await conn.rollback()
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_read_only_transaction_sql_covers_the_next_transaction_only_with_pymysql(
    primary: sa.Engine, table: str
) -> None:
    sql = dialect.read_only_transaction_sql
    assert sql == "SET TRANSACTION READ ONLY"
    with primary.connect() as conn:
        conn.execute(sa.text(sql))  # the transaction SQLAlchemy began has run nothing yet
        assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() == 0
        with pytest.raises(sa.exc.DBAPIError) as caught:
            conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 0)"))
        assert refused(caught.value), caught.value
        conn.rollback()
        conn.execute(sa.text(f"INSERT INTO {table} VALUES (2, 0)"))  # a read-write one again
        conn.commit()
        assert conn.execute(sa.text(f"SELECT id FROM {table}")).scalars().all() == [2]


def test_read_only_transaction_sql_covers_the_next_transaction_only_with_aiomysql(
    maria_primary_url: str, table: str
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    sql = dialect.read_only_transaction_sql
    assert sql is not None
    url = sa.make_url(maria_primary_url).set(drivername="mariadb+aiomysql")

    async def main() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text(sql))
                with pytest.raises(sa.exc.DBAPIError) as caught:
                    await conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 0)"))
                assert refused(caught.value), caught.value
                await conn.rollback()
                await conn.execute(sa.text(f"INSERT INTO {table} VALUES (2, 0)"))
                await conn.commit()
                ids = await conn.execute(sa.text(f"SELECT id FROM {table}"))
                assert ids.scalars().all() == [2]
        finally:
            await engine.dispose()

    asyncio.run(main())
