"""run_in_transaction_async retries a real serialization failure / deadlock like its sync twin."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from async_support import PG_DRIVERS, make_registry, table_sql, unique
from sqlalchemy.ext.asyncio import AsyncSession

from dbconf.runtime.database import Database


class Meeting:
    """Two tasks wait for each other once (asyncio.Barrier is Python 3.11+)."""

    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()

    async def wait(self) -> None:
        self.count += 1
        if self.count == 2:
            self.event.set()
        await asyncio.wait_for(self.event.wait(), 10)


def setup(db: Database, driver: str, rows: str | None = None) -> str:
    table = unique("core_r")
    with db.session() as s:
        s.execute(sa.text(table_sql(driver, table)))
        if rows:
            s.execute(sa.text(f"INSERT INTO {table} VALUES {rows}"))
    return table


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_serialization_failure_is_retried(
    driver: str, pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dbs = make_registry(driver, {"pg": pg_url}, tmp_path, isolation_level="SERIALIZABLE")
    db = dbs["main"]
    table = setup(db, driver)
    calls: Counter[str] = Counter()

    async def work(name: str, meeting: Meeting) -> int:
        async def fn(session: AsyncSession) -> int:
            calls[name] += 1
            seen = int((await session.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar())
            if calls[name] == 1:
                await meeting.wait()  # both have read before either writes: write skew
            await session.execute(
                sa.text(f"INSERT INTO {table} VALUES (:id, :v)"), {"id": ord(name), "v": seen}
            )
            return seen

        return await db.run_in_transaction_async(fn, retries=3, backoff=0.01)

    async def both() -> list[int]:
        meeting = Meeting()
        return list(await asyncio.gather(work("a", meeting), work("b", meeting)))

    caplog.set_level(logging.WARNING, logger="dbconf")
    try:
        results = asyncio.run(both())
        with db.session() as s:
            count = s.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
    finally:
        with db.session() as s:
            s.execute(sa.text(f"DROP TABLE {table}"))
        dbs.close()
    assert sorted(results) == [0, 1]  # the retried one saw the other's committed row
    assert count == 2
    assert sum(calls.values()) >= 3
    assert any("(serialization failure)" in r.getMessage() for r in caplog.records)


def test_mariadb_deadlock_is_retried(maria_url: str, tmp_path: Path) -> None:
    dbs = make_registry("aiomysql", {"maria": maria_url}, tmp_path)
    db = dbs["main"]
    table = setup(db, "aiomysql", "(1, 0), (2, 0)")
    calls: Counter[str] = Counter()

    async def work(name: str, meeting: Meeting) -> str:
        order = (1, 2) if name == "a" else (2, 1)

        async def fn(session: AsyncSession) -> str:
            calls[name] += 1
            await session.execute(sa.text(f"UPDATE {table} SET v = v + 1 WHERE id = {order[0]}"))
            if calls[name] == 1:
                await meeting.wait()  # each holds one row and wants the other's
            await session.execute(sa.text(f"UPDATE {table} SET v = v + 1 WHERE id = {order[1]}"))
            return name

        return await db.run_in_transaction_async(fn, backoff=0.01)

    async def both() -> list[str]:
        meeting = Meeting()
        return list(await asyncio.gather(work("a", meeting), work("b", meeting)))

    try:
        assert asyncio.run(both()) == ["a", "b"]
        with db.session() as s:
            values = s.execute(sa.text(f"SELECT v FROM {table} ORDER BY id")).scalars().all()
        assert values == [2, 2]  # both transactions applied exactly once
        assert sum(calls.values()) == 3  # error 1213 rolled one back; it ran again
    finally:
        with db.session() as s:
            s.execute(sa.text(f"DROP TABLE {table}"))
        dbs.close()


def test_exhausted_retries_reraise_with_a_note(pg_url: str, tmp_path: Path) -> None:
    dbs = make_registry("asyncpg", {"pg": pg_url}, tmp_path)
    db = dbs["main"]
    calls = []

    async def always_conflicts(session: AsyncSession) -> None:
        calls.append(1)
        await session.execute(
            sa.text("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$")
        )

    async def work() -> BaseException:
        try:
            await db.run_in_transaction_async(always_conflicts, retries=2, backoff=0)
        except sa.exc.DBAPIError as exc:
            return exc
        raise AssertionError("not raised")

    try:
        exc = asyncio.run(work())
    finally:
        dbs.close()
    assert len(calls) == 3
    if sys.version_info >= (3, 11):  # exceptions have notes from 3.11
        assert "dbconf: gave up after 3 attempts on database 'main'" in exc.__notes__
