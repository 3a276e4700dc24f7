"""Routed async sessions on a real streaming standby: the same RoutingSession as the sync
side (its ``sync_session_class``), engines of the running loop; read your writes per task;
the standby stopped under reading tasks."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from replica_support import wait_up
from routed_support import (
    PORT,
    port_of,
    replay_paused,
    replicated_table,
    routed_db,
    scalar,
    standby_stopped_later,
    streaming,
    wait_for,
)
from sqlalchemy.ext.asyncio import AsyncSession

from dbconf.replicas.session import RoutingSession
from dbconf.runtime.database import Database

READ_ONLY = "25006"


@pytest.fixture(params=["asyncpg", "psycopg_async"])
def db(request: pytest.FixtureRequest, pg_url: str, standby_url: str) -> Iterator[Database]:
    wait_for(lambda: streaming(standby_url), "the standby streaming")
    primary = sa.make_url(pg_url).set(drivername=f"postgresql+{request.param}")
    standby = sa.make_url(standby_url).set(drivername=f"postgresql+{request.param}")
    database = routed_db(
        primary.render_as_string(hide_password=False),
        standby.render_as_string(hide_password=False),
        max_lag=60,
    )
    wait_up(database)  # a first probe round may outlast check_interval
    yield database
    database.close()


@pytest.fixture
def table(pg_url: str, standby_url: str) -> Iterator[sa.Table]:
    with replicated_table(pg_url, standby_url) as t:
        yield t


async def count(session: AsyncSession, table: sa.Table) -> int:
    return await session.scalar(sa.select(sa.func.count()).select_from(table)) or 0


def test_async_replica_reads_and_writes(
    db: Database, table: sa.Table, standby_url: str, pg_url: str
) -> None:
    standby, primary = port_of(standby_url), port_of(pg_url)

    async def work() -> None:
        async with db.async_session("reader") as s:
            assert isinstance(s.sync_session, RoutingSession)
            assert await s.scalar(PORT) == standby
        async with db.async_session("reader_ac") as s:
            assert await s.scalar(PORT) == standby
        with pytest.raises(sa.exc.DBAPIError) as info:
            async with db.async_session("reader") as s:
                await s.execute(table.insert().values(note="refused"))
        assert getattr(info.value.orig, "pgcode", None) == READ_ONLY or "read-only" in str(
            info.value
        )
        async with db.async_session("auto") as s:
            assert await s.scalar(PORT) == standby
            await s.execute(table.insert().values(note="auto"))
            assert await s.scalar(PORT) == primary
            assert await count(s, table) == 1
            await s.commit()
            assert await s.scalar(PORT) == primary  # for good

    asyncio.run(work())


def test_async_read_your_writes_per_task(
    server_admin: None, db: Database, table: sa.Table, standby_url: str, pg_url: str
) -> None:
    standby, primary = port_of(standby_url), port_of(pg_url)

    async def read() -> tuple[int, int]:
        async with db.async_session("reader") as s:
            return await s.scalar(PORT) or 0, await count(s, table)

    async def paused() -> None:
        async with db.async_session() as s:
            await s.execute(table.insert().values(note="mine"))
        assert await read() == (primary, 1)  # this task reads its write on the primary
        # a task whose context holds no write reads the stale standby
        other = contextvars.Context().run(asyncio.create_task, read())
        assert await other == (standby, 0)

    async def resumed() -> bool:
        return await read() == (standby, 1)

    async def main() -> None:
        with replay_paused(standby_url):
            await paused()
        deadline = time.monotonic() + 30
        while not await resumed():  # back once the standby replayed the write (by LSN)
            assert time.monotonic() < deadline, "reads never came back to the standby"
            await asyncio.sleep(0.05)

    asyncio.run(main())


def test_async_standby_stopped_under_reading_tasks(
    server_admin: None, db: Database, table: sa.Table, standby_url: str, pg_url: str
) -> None:
    errors: list[BaseException] = []
    ports: list[int] = []
    port_and_count = sa.select(
        sa.func.inet_server_port(), sa.select(sa.func.count()).select_from(table).scalar_subquery()
    )

    async def reader(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with db.async_session("reader") as s:
                    ports.append((await s.execute(port_and_count)).one()[0])
            except Exception as exc:
                errors.append(exc)
            await asyncio.sleep(0)

    async def main(stop_standby: Any) -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(reader(stop)) for _ in range(8)]
        try:
            while port_of(standby_url) not in ports:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(stop_standby)
            await asyncio.sleep(5)  # load on the dead replica (a duration, not an assertion)
            assert port_of(pg_url) in ports[-50:]
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    with standby_stopped_later(standby_url) as stop_standby:
        asyncio.run(main(stop_standby))
    assert errors == []

    async def on_standby() -> bool:
        scalar(pg_url, "select txid_current()")  # see the sync twin
        async with db.async_session("reader") as s:
            return await s.scalar(PORT) == port_of(standby_url)

    wait_for(lambda: asyncio.run(on_standby()), "the standby back")
