"""Cancellation anywhere inside an async scope (waiting for the pool, connecting, mid-query,
mid-commit, between statements) never leaks a connection nor leaves a transaction open."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import sqlalchemy as sa
from async_support import (
    DRIVERS,
    PG_DRIVERS,
    backends,
    kind,
    make_registry,
    sleep_sql,
    sqlite_sleep,
    table_sql,
    tag,
    unique,
    wait_for,
)

from dbconf.runtime.database import Database
from dbconf.runtime.registry import Registry

RATE = 0.5
# SQLAlchemy 2.0.24 loses the pool's count of a few connections when a cancellation interrupts
# its own pool code (seen with aiomysql on single cancellations, with asyncpg when a task is
# cancelled again while SQLAlchemy handles the first one; the same happens with a naive scope,
# and garbage collection does not give them back); 2.1 does not. On 2.0 those cases are run
# without the second cancellations, and for aiomysql without the pool-count assertion (the
# DROP TABLE with a short lock wait at the end still proves no transaction stayed open).
SA21 = tuple(int(p) for p in sa.__version__.split(".")[:2]) >= (2, 1)
TWICE = SA21


async def stress(
    db: Database, driver: str, table: str, scopes: int, seed: int, twice: bool = True
) -> dict[str, int]:
    """``scopes`` scopes, 50 at a time (over a pool of 10 + 10), about half of them cancelled
    after a random delay (``twice``: some cancelled again, maybe during their cleanup); returns
    counts, and checks every completed scope's row committed."""
    rng = random.Random(seed)
    sleep = sa.text(sleep_sql(driver, 0.01))
    done: list[int] = []

    async def scope(i: int, mode: int) -> None:
        async with db.async_session() as s:
            await s.execute(sa.text(f"INSERT INTO {table} VALUES ({i}, {mode})"))
            if mode == 0:
                await s.execute(sleep)  # cancelled mid-query
            elif mode == 1:
                await asyncio.sleep(0)  # between statements
                await s.execute(sa.text(f"UPDATE {table} SET v = v + 1 WHERE id = {i}"))
            # mode 2: straight to COMMIT
        done.append(i)

    counts = {"cancelled": 0, "completed": 0}
    for batch in range(0, scopes, 50):
        tasks = [
            asyncio.ensure_future(scope(i, rng.randrange(3)))
            for i in range(batch, min(batch + 50, scopes))
        ]
        victims = [t for t in tasks if rng.random() < RATE]
        for task in victims:
            await asyncio.sleep(rng.uniform(0, 0.004))
            task.cancel()
            if twice and rng.random() < 0.3:  # and again, maybe while it cleans up
                await asyncio.sleep(rng.uniform(0, 0.002))
                task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, asyncio.CancelledError):
                counts["cancelled"] += 1
            elif result is None:
                counts["completed"] += 1
            else:
                raise result
    async with db.async_session() as s:
        rows = set((await s.execute(sa.text(f"SELECT id FROM {table}"))).scalars())
    assert set(done) <= rows  # every scope that finished had committed
    status = db.async_pool_status()
    counts["checked_out"] = status.checked_out or 0
    return counts


def registry(driver: str, urls: dict[str, str], tmp_path: Path, app: str | None = None) -> Registry:
    # SQLite has one writer at a time: a pool of one connection (many connections would only
    # wait on each other's write lock, and time out with "database is locked")
    pool = {"size": 1, "max_overflow": 0} if kind(driver) == "lite" else {"size": 10}
    return make_registry(driver, urls, tmp_path, app, pool={"max_overflow": 10, **pool})


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_1000_randomly_cancelled_scopes_postgresql(
    driver: str, pg_url: str, pg_admin: sa.Engine, tmp_path: Path
) -> None:
    app = unique("core_cancel")
    table = unique("core_c")
    dbs = registry(driver, {"pg": pg_url}, tmp_path, app)
    db = dbs["main"]
    with db.session() as s:
        s.execute(sa.text(table_sql(driver, table)))

    async def work() -> dict[str, int]:
        tag(db, app)
        counts = await stress(db, driver, table, 1000, seed=len(driver), twice=TWICE)
        # nothing of ours is idle in transaction (the server notices terminated connections
        # asynchronously: poll)
        idle = await asyncio.to_thread(
            wait_for, lambda: backends(pg_admin, app, "idle in transaction") == 0
        )
        assert idle, "a backend stayed idle in transaction"
        return counts

    try:
        counts = asyncio.run(work())
        assert counts["checked_out"] == 0
        assert counts["cancelled"] > 50
        assert counts["completed"] > 50
        # (not asserted: that no connection at all outlives the loop. A connect cancelled
        # mid-handshake can leave the driver's socket open until garbage collection.)
    finally:
        with db.session() as s:
            s.execute(sa.text(f"DROP TABLE {table}"))
        dbs.close()


@pytest.mark.parametrize("driver", ["aiomysql", "aiosqlite"])
def test_randomly_cancelled_scopes_mariadb_and_sqlite(
    driver: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    urls = {"maria": request.getfixturevalue("maria_url")} if kind(driver) == "maria" else {}
    table = unique("core_c")
    dbs = registry(driver, urls, tmp_path)
    db = dbs["main"]
    with db.session() as s:
        s.execute(sa.text(table_sql(driver, table)))

    async def work() -> dict[str, int]:
        if kind(driver) == "lite":
            sqlite_sleep(db)
        # SQLite: no second cancellation (see the report: aiosqlite can hold the write lock
        # of a connection cancelled twice for seconds, "database is locked" for the others)
        return await stress(db, driver, table, 300, seed=7, twice=TWICE and kind(driver) != "lite")

    try:
        counts = asyncio.run(work())
        if SA21 or kind(driver) == "lite":
            assert counts["checked_out"] == 0
        assert counts["cancelled"] > 15
        assert counts["completed"] > 15
    finally:
        with db.session() as s:
            if kind(driver) == "maria":  # an open transaction would hold a metadata lock
                s.execute(sa.text("SET SESSION lock_wait_timeout = 5"))
            s.execute(sa.text(f"DROP TABLE {table}"))
        dbs.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_tasks_cancelled_while_connecting_see_cancelled_error(
    driver: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Fresh engines (the first connect runs the dialect's setup queries too), six tasks each,
    cancelled one after another at random points of their connect: each task either completed
    or raised CancelledError (on SQLAlchemy 2.0 aiomysql's "Cancelled during execution" from
    the rollback after a cancelled first connect used to surface as ConnectError: about one
    engine in two here), and no connection stays checked out."""
    fixture = {"pg": "pg_url", "maria": "maria_url"}.get(kind(driver))
    urls = {kind(driver): request.getfixturevalue(fixture)} if fixture else {}
    if "maria" in urls:  # the mysql dialect's first connect: where 2.0 failed most often
        urls["maria"] = (
            sa.make_url(urls["maria"])
            .set(drivername="mysql+pymysql")
            .render_as_string(hide_password=False)
        )
    rng = random.Random(len(driver))
    counts = {"cancelled": 0, "completed": 0}

    async def engine_storm() -> None:
        dbs = make_registry(driver, urls, tmp_path, pool={"size": 3, "max_overflow": 3})
        db = dbs["main"]

        async def scope() -> None:
            async with db.async_session() as s:
                await s.execute(sa.text("SELECT 1"))

        try:
            tasks = [asyncio.ensure_future(scope()) for _ in range(6)]
            for task in tasks:
                await asyncio.sleep(rng.uniform(0, 0.003))
                task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, asyncio.CancelledError):
                    counts["cancelled"] += 1
                elif result is None:
                    counts["completed"] += 1
                else:
                    raise result
            checked_out = db.async_pool_status().checked_out
            await db.async_engine.dispose()
        finally:
            dbs.close()
        # SQLAlchemy 2.0 loses the pool's count of some cancelled checkouts (see the top of
        # the module; here seen with aiomysql and aiosqlite), 2.1 does not
        assert checked_out == 0 or not SA21

    async def work() -> None:
        for _ in range(40):
            await engine_storm()

    asyncio.run(work())
    assert counts["cancelled"] > 40
