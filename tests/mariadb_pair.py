"""Helpers of the MariaDB replica tests, run against the private replication pair made by
.ci/mariadb-replica (conftest fixtures ``maria_primary_url`` / ``maria_replica_url``).

Replication is asynchronous: every wait on the replica polls with a deadline
(:func:`poll`), never asserts at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest
import sqlalchemy as sa

from dbconf.dialects.base import ReplicaMeasurement
from dbconf.dialects.mysql import dialect

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


@contextmanager
def replicated_table(primary: sa.Engine, replica: sa.Engine) -> Iterator[str]:
    """A fresh table ``(id INT PRIMARY KEY, v INT)`` made on the primary, yielded once it has
    reached the replica; dropped after."""
    name = f"rt_{uuid.uuid4().hex[:12]}"
    with primary.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} (id INT PRIMARY KEY, v INT)"))

    def exists() -> bool:
        with replica.connect() as conn:
            return conn.execute(sa.text("SHOW TABLES LIKE :t"), {"t": name}).first() is not None

    try:
        poll(exists, bool, f"table {name} replicated")
        yield name
    finally:
        with primary.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))


def insert(primary: sa.Engine, table: str, row_id: int) -> int:
    """Insert and commit a row on the primary; the write position after the commit."""
    with primary.connect() as conn:
        conn.execute(sa.text(f"INSERT INTO {table} (id, v) VALUES (:i, 0)"), {"i": row_id})
        conn.commit()
        return write_position(conn)


def caught_up(replica: sa.Engine, position: int) -> ReplicaMeasurement:
    """Wait until the replica measures lag 0 at ``position`` or past it."""
    return poll(
        lambda: measure(replica),
        lambda m: m.lag == 0.0 and m.position is not None and m.position >= position,
        f"replica caught up with position {position}",
    )


@contextmanager
def row_locked(replica: sa.Engine, table: str, row_id: int) -> Iterator[None]:
    """Hold row ``row_id``'s lock on the replica (``SELECT … FOR UPDATE``): the replica's SQL
    thread keeps running but waits to apply an update of that row, so its lag grows."""
    with replica.connect() as locker:
        locker.execute(sa.text(f"SELECT v FROM {table} WHERE id = :i FOR UPDATE"), {"i": row_id})
        try:
            yield
        finally:
            locker.rollback()


def refused_as_read_only(exc: BaseException) -> bool:
    """Whether ``exc`` is the server refusing a write in a read-only transaction."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "args", (None,))[0] == READ_ONLY_ERROR
