"""Event loops: an async engine per loop (two asyncio.run() calls, a loop per thread), engines
of finished loops disposed and forgotten, no engine outside a loop; the registry's async close."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
import weakref
from pathlib import Path

import pytest
import sqlalchemy as sa
from async_support import DRIVERS, PG_DRIVERS, backends, kind, make_registry, tag, unique, wait_for

import dbconf
from dbconf.runtime.registry import Registry

UNREACHABLE = "postgresql+psycopg2://app:s3cr3t-pw@127.0.0.1:1/nowhere"


@pytest.fixture
def urls(request: pytest.FixtureRequest) -> dict[str, str]:
    driver = request.node.callspec.params["driver"]
    k = kind(driver)
    if k == "pg":
        return {"pg": request.getfixturevalue("pg_url")}
    if k == "maria":
        return {"maria": request.getfixturevalue("maria_url")}
    return {}


async def select_one(dbs: Registry) -> int:
    async with dbs["main"].async_session() as s:
        return int((await s.execute(sa.text("SELECT 1"))).scalar_one())


@pytest.mark.parametrize("driver", DRIVERS)
def test_two_asyncio_runs_use_the_same_registry_without_warnings(
    driver: str, urls: dict[str, str], tmp_path: Path
) -> None:
    dbs = make_registry(driver, urls, tmp_path)
    maker = dbs["main"].async_sessionmaker()  # made outside any loop, used in both

    async def through_maker() -> int:
        async with maker() as s:
            return int((await s.execute(sa.text("SELECT 2"))).scalar_one())

    gc.collect()  # garbage of earlier tests (their transports) must not warn in this block
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for _ in range(2):
                assert asyncio.run(select_one(dbs)) == 1
                assert asyncio.run(through_maker()) == 2
            gc.collect()
        finally:
            dbs.close()
    noise = [w for w in caught if issubclass(w.category, ResourceWarning | RuntimeWarning)]
    assert noise == []


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_a_finished_loop_closes_its_connections(
    driver: str, pg_url: str, pg_admin: sa.Engine, tmp_path: Path
) -> None:
    app = unique("core_loop")
    dbs = make_registry(driver, {"pg": pg_url}, tmp_path, app)
    db = dbs["main"]

    async def work() -> int:
        tag(db, app)
        await asyncio.gather(*(select_one(dbs) for _ in range(3)))
        return backends(pg_admin, app)

    try:
        assert asyncio.run(work()) >= 1
        # asyncio.run's shutdown_asyncgens disposed the loop's engine: its backends go away
        assert wait_for(lambda: backends(pg_admin, app) == 0)
        assert asyncio.run(work()) >= 1  # the next loop builds its own engine
    finally:
        dbs.close()
    assert wait_for(lambda: backends(pg_admin, app) == 0)


def test_engines_of_closed_loops_are_pruned_and_do_not_keep_loops_alive(tmp_path: Path) -> None:
    dbs = make_registry("aiosqlite", {}, tmp_path)
    db = dbs["main"]
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(select_one(dbs)) == 1
    first = loop.run_until_complete(_engine(dbs))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    gone = weakref.ref(loop)
    del loop
    second = asyncio.new_event_loop()
    try:
        assert second.run_until_complete(select_one(dbs)) == 1
        assert second.run_until_complete(_engine(dbs)) is not first
        assert db.async_engines_built == 1  # the closed loop's engine was pruned
        second.run_until_complete(second.shutdown_asyncgens())
    finally:
        second.close()
    gc.collect()
    assert gone() is None
    dbs.close()


async def _engine(dbs: Registry) -> object:
    return dbs["main"].async_engine


@pytest.mark.parametrize("driver", ["asyncpg", "aiomysql"])
def test_two_threads_each_with_its_own_loop_at_once(
    driver: str, urls: dict[str, str], tmp_path: Path
) -> None:
    dbs = make_registry(driver, urls, tmp_path)
    db = dbs["main"]
    barrier = threading.Barrier(2)
    engines: list[object] = []
    errors: list[BaseException] = []
    sleep = "SELECT pg_sleep(0.3)" if kind(driver) == "pg" else "SELECT SLEEP(0.3)"

    async def work() -> None:
        engines.append(db.async_engine)
        await asyncio.to_thread(barrier.wait, 10)  # both loops are running now
        for _ in range(3):
            async with db.async_session() as s:
                await s.execute(sa.text(sleep))

    def thread() -> None:
        try:
            asyncio.run(work())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        dbs.close()
    assert errors == []
    assert len(engines) == 2
    assert engines[0] is not engines[1]


def test_no_async_engine_outside_a_running_loop(tmp_path: Path) -> None:
    dbs = make_registry("aiosqlite", {}, tmp_path)
    db = dbs["main"]
    with pytest.raises(dbconf.NoEventLoopError, match="needs a running event loop"):
        _ = db.async_engine
    maker = db.async_sessionmaker()
    with pytest.raises(dbconf.NoEventLoopError):
        maker()
    dbs.close()


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_async_with_registry_closes_and_refuses_further_use(
    driver: str, pg_url: str, pg_admin: sa.Engine, tmp_path: Path
) -> None:
    app = unique("core_close")
    dbs = make_registry(driver, {"pg": pg_url}, tmp_path, app)
    db = dbs["main"]
    held: list[int] = []

    async def work() -> None:
        async with dbs:
            tag(db, app)
            assert await select_one(dbs) == 1
            async with db.async_session() as s:  # checked out while the registry closes
                await s.execute(sa.text("SELECT 1"))
                await dbs.aclose()
                held.append(backends(pg_admin, app))
                await s.execute(sa.text("SELECT 1"))  # the open session still finishes
        with pytest.raises(dbconf.RegistryClosedError):
            await select_one(dbs)
        with pytest.raises(dbconf.RegistryClosedError):
            _ = db.async_engine

    asyncio.run(work())
    assert held == [1]  # the idle one was closed at once, the checked-out one stayed
    assert wait_for(lambda: backends(pg_admin, app) == 0)  # and was closed when returned


def test_sync_close_inside_a_running_loop_disposes_the_async_engine(
    pg_url: str, pg_admin: sa.Engine, tmp_path: Path
) -> None:
    app = unique("core_sclose")
    dbs = make_registry("asyncpg", {"pg": pg_url}, tmp_path)
    db = dbs["main"]

    async def work() -> None:
        tag(db, app)
        await asyncio.gather(*(select_one(dbs) for _ in range(3)))
        dbs.close()  # synchronous: schedules the dispose on this loop
        await asyncio.sleep(0)
        assert await asyncio.to_thread(wait_for, lambda: backends(pg_admin, app) == 0)

    asyncio.run(work())
    with pytest.raises(dbconf.RegistryClosedError):
        asyncio.run(select_one(dbs))


def test_async_check_reports_and_never_raises(pg_url: str, maria_url: str, tmp_path: Path) -> None:
    from dbconf.config import ProfileConfig

    dbs = Registry(
        ProfileConfig.model_validate(
            {
                "databases": {
                    "pg": {"url": pg_url},
                    "pg3": {"url": pg_url, "async_driver": "psycopg_async"},
                    "maria": {"url": maria_url},
                    "lite": {"url": f"sqlite:///{tmp_path}/c.db"},
                    "down": {"url": UNREACHABLE},
                }
            }
        )
    )

    async def check() -> dict[str, dbconf.DatabaseReport]:
        async with dbs:
            return {r.name: r for r in await dbs.async_check()}

    reports = asyncio.run(check())
    assert {n: r.ok for n, r in reports.items()} == {
        "pg": True,
        "pg3": True,
        "maria": True,
        "lite": True,
        "down": False,
    }
    assert reports["pg"].driver == "asyncpg"
    assert reports["pg"].url.startswith("postgresql+asyncpg://")
    assert reports["pg3"].driver == "psycopg_async"
    assert reports["maria"].driver == "aiomysql"
    assert reports["lite"].driver == "aiosqlite"
    assert reports["pg"].pool["class"] == "AsyncQueuePool"  # dbconf's (PoolExhaustedError)
    assert (reports["pg"].server_version or "").startswith("15")
    down = reports["down"]
    assert down.error is not None
    assert "\n" not in down.error
    assert "s3cr3t-pw" not in down.error + down.render() + down.url
