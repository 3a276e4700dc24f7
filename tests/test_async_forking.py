"""Fork safety for async engines: dbconf registers an async engine's ``sync_engine``, so a
forked child that runs its own event loop gets fresh connections (a different server backend),
and the parent's connections, checked out or idle, keep working afterwards.

The parent's event loop runs in a background thread for the whole test (its connections stay
bound to it); the main thread forks, and the child runs ``asyncio.run`` on the same engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dbconf.config import DatabaseConfig
from dbconf.pooling import forking
from dbconf.runtime.builder import build_async_engine

T = TypeVar("T")
PID_SQL = {"aiomysql": "SELECT CONNECTION_ID()", "asyncpg": "SELECT pg_backend_pid()"}
PID_SQL["psycopg_async"] = PID_SQL["asyncpg"]

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


class LoopThread:
    """An event loop running in a daemon thread; ``run(coro)`` waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


def in_child(engine: AsyncEngine, sql: str) -> dict[str, Any]:
    """Fork; the child reports its backend pids (two scopes) and pool status as JSON."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(read)

            async def child() -> dict[str, Any]:
                pids = []
                for _ in range(2):
                    async with engine.connect() as conn:
                        pids.append((await conn.execute(sa.text(sql))).scalar_one())
                await engine.dispose()
                return {
                    "pids": pids,
                    "registered": engine.sync_engine in forking.registered_engines(),
                }

            result = asyncio.run(child())
        except BaseException as e:  # report anything to the parent
            result, code = {"error": f"{type(e).__name__}: {e}"}, 1
        os.write(write, json.dumps(result).encode())
        os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(b"".join(chunks) or b"{}")
    assert os.waitstatus_to_exitcode(status) == 0, result
    return result


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg_async", "aiomysql"])
def test_forked_child_with_its_own_loop_gets_fresh_connections(
    driver: str, request: pytest.FixtureRequest, loop_thread: LoopThread
) -> None:
    base = "mysql" if driver == "aiomysql" else "postgresql"
    server = request.getfixturevalue("maria_url" if driver == "aiomysql" else "pg_url")
    url = sa.make_url(server).set(drivername=f"{base}+{driver}")
    cfg = DatabaseConfig.model_validate(
        {"url": url.render_as_string(False), "pool": {"size": 2, "max_overflow": 0}}
    )
    engine = build_async_engine("pool_fork", cfg)
    sql = PID_SQL[driver]
    held: list[AsyncConnection] = []

    async def warm() -> tuple[int, int]:
        conn = await engine.connect()  # checked out across the fork
        held.append(conn)
        held_pid = (await conn.execute(sa.text(sql))).scalar_one()
        async with engine.connect() as idle:  # back in the pool: idle at fork time
            idle_pid = (await idle.execute(sa.text(sql))).scalar_one()
        return idle_pid, held_pid

    async def parent_pids() -> tuple[int, int]:
        again = (await held[0].execute(sa.text(sql))).scalar_one()
        async with engine.connect() as conn:
            idle_again = (await conn.execute(sa.text(sql))).scalar_one()
        return idle_again, again

    async def finish() -> None:
        await held[0].close()
        await engine.dispose()

    try:
        parents = loop_thread.run(warm())
        assert engine.sync_engine in forking.registered_engines()
        child = in_child(engine, sql)
        assert "error" not in child, child
        assert child["registered"]
        assert not set(child["pids"]) & set(parents), (child, parents)
        time.sleep(0.2)  # had the child closed a parent connection, the server would end it
        assert loop_thread.run(parent_pids()) == parents  # the parent's sessions live on
    finally:
        loop_thread.run(finish())
