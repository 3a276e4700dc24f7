"""The MariaDB read-only SQL of replica sessions, on both drivers (PyMySQL, aiomysql), against
the replication pair of .ci/mariadb-replica: on the primary and on the replica (whose
``read_only=1`` does not bind root: the session SQL does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from mariadb_pair import refused_as_read_only, replicated_table
from sqlalchemy import event

from dbconf.dialects.mysql import dialect

pytestmark = pytest.mark.mariadb


@pytest.fixture(scope="module")
def primary(maria_primary_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(maria_primary_url)
    yield engine
    engine.dispose()


@pytest.fixture
def table(primary: sa.Engine, maria_replica_url: str) -> Iterator[str]:
    replica = sa.create_engine(maria_replica_url, poolclass=sa.NullPool)
    try:
        with replicated_table(primary, replica) as name:
            yield name
    finally:
        replica.dispose()


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
                    assert refused_as_read_only(caught.value), caught.value
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
                    assert refused_as_read_only(caught.value), caught.value
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
        assert refused_as_read_only(caught.value), caught.value
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
                assert refused_as_read_only(caught.value), caught.value
                await conn.rollback()
                await conn.execute(sa.text(f"INSERT INTO {table} VALUES (2, 0)"))
                await conn.commit()
                ids = await conn.execute(sa.text(f"SELECT id FROM {table}"))
                assert ids.scalars().all() == [2]
        finally:
            await engine.dispose()

    asyncio.run(main())
