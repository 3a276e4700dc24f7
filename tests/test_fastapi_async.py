"""``AsyncSessionDep`` through httpx's AsyncClient (ASGITransport) on real async drivers.

What the dependency promises, each proven against the server: the session is committed before
the response starts (a probe reads the row from another connection at ``http.response.start``);
a commit that fails (PostgreSQL's deferred constraint, checked at COMMIT; an ORM insert that
SQLite only flushes at commit) is a 500, never a 200; an ``HTTPException`` rolls back; the
connection always goes back to the pool; requests run concurrently (the event loop is never
blocked); ``lifespan`` disposes the async pools at shutdown and the registry stays usable.
"""

# No ``from __future__ import annotations``: FastAPI resolves string annotations in the
# module's globals, and the aliases below are local to the tests.
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dbconf.config import ProfileConfig
from dbconf.errors import UnknownSessionFlavourError
from dbconf.integrations.fastapi import AsyncSessionDep, SessionDep, lifespan
from dbconf.runtime.registry import Database, Registry

PG_DRIVERS = ["asyncpg", "psycopg_async"]


def registry(url: str, **settings: Any) -> Registry:
    return Registry(ProfileConfig.model_validate({"databases": {"main": {"url": url, **settings}}}))


def client(app: ASGIApp) -> httpx.AsyncClient:
    """An AsyncClient on the app; an unhandled error becomes the 500 a server would send."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def checked_out(db: Database) -> int | None:
    return db.async_pool_status().checked_out


class ProbeAtResponseStart:
    """ASGI middleware: runs ``probe()`` when the app starts its response and records the
    result, so a test sees what another connection saw at the moment the client got the
    status line."""

    def __init__(self, app: ASGIApp, probe: Callable[[], Any]) -> None:
        self.app = app
        self.probe = probe
        self.seen: list[Any] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def probing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.seen.append(self.probe())
            await send(message)

        await self.app(scope, receive, probing_send)


@pytest.fixture
def pg_table(pg_admin: sa.Engine) -> Iterator[str]:
    name = f"app_api_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id int PRIMARY KEY)")
    yield name
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def pg_ids(admin: sa.Engine, table: str) -> list[int]:
    with admin.connect() as conn:
        return list(conn.exec_driver_sql(f"SELECT id FROM {table} ORDER BY id").scalars())


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_committed_before_the_response_rolled_back_on_http_exception(
    pg_url: str, pg_admin: sa.Engine, pg_table: str, driver: str
) -> None:
    dbs = registry(
        pg_url,
        async_driver=driver,
        application_name=f"app_api_{uuid.uuid4().hex[:8]}",
        pool={"size": 1, "max_overflow": 0, "timeout": 2},
    )
    db = dbs["main"]
    api = FastAPI()
    MainSession = AsyncSessionDep(db)  # noqa: N806 (a type alias)

    @api.post("/items/{item}")
    async def create(item: int, session: MainSession) -> dict[str, int]:  # type: ignore[valid-type]
        s: AsyncSession = session
        await s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (:i)"), {"i": item})
        return {"id": item}

    @api.post("/fail/{item}")
    async def fail(item: int, session: MainSession) -> None:  # type: ignore[valid-type]
        s: AsyncSession = session
        await s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (:i)"), {"i": item})
        raise HTTPException(status_code=409, detail="no")

    @api.post("/late/{item}")  # the control: FastAPI's default scope commits after sending
    async def late(item: int, session: AsyncSession = Depends(db.async_dependency())) -> None:  # noqa: B008
        await session.execute(sa.text(f"INSERT INTO {pg_table} VALUES (:i)"), {"i": item})

    probe = ProbeAtResponseStart(api, lambda: pg_ids(pg_admin, pg_table))

    async def main() -> None:
        async with client(probe) as c:
            assert (await c.post("/items/1")).json() == {"id": 1}
            assert probe.seen[-1] == [1]  # visible to another connection before the response
            assert (await c.post("/fail/2")).status_code == 409
            assert probe.seen[-1] == [1]
            assert (await c.post("/items/3")).status_code == 200  # pool of 1: nothing leaked
            assert probe.seen[-1] == [1, 3]
            assert (await c.post("/late/4")).status_code == 200
            assert probe.seen[-1] == [1, 3]  # the probe does see a commit made too late
        assert checked_out(db) == 0
        await dbs.aclose()

    run(main)
    assert pg_ids(pg_admin, pg_table) == [1, 3, 4]


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_a_commit_failing_at_commit_is_a_500(
    pg_url: str, pg_admin: sa.Engine, pg_table: str, driver: str
) -> None:
    """A deferred unique constraint is checked at COMMIT, after the endpoint returned: the
    client gets a 500, nothing is stored, and the next request works on the same pool."""
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {pg_table} DROP CONSTRAINT {pg_table}_pkey")
        conn.exec_driver_sql(
            f"ALTER TABLE {pg_table} ADD CONSTRAINT {pg_table}_u UNIQUE (id) "
            "DEFERRABLE INITIALLY DEFERRED"
        )
    dbs = registry(pg_url, async_driver=driver, pool={"size": 1, "max_overflow": 0})
    db = dbs["main"]
    api = FastAPI()
    MainSession = AsyncSessionDep(db)  # noqa: N806 (a type alias)
    returned: list[int] = []

    @api.post("/insert/{item}/{times}")
    async def insert(item: int, times: int, session: MainSession) -> dict[str, int]:  # type: ignore[valid-type]
        s: AsyncSession = session
        for _ in range(times):
            await s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (:i)"), {"i": item})
        returned.append(item)
        return {"id": item}

    async def main() -> None:
        async with client(api) as c:
            assert (await c.post("/insert/1/2")).status_code == 500
            assert returned == [1]  # the endpoint itself succeeded: the COMMIT failed
            assert (await c.post("/insert/2/1")).status_code == 200
        assert checked_out(db) == 0
        await dbs.aclose()

    run(main)
    assert pg_ids(pg_admin, pg_table) == [2]


def test_requests_run_concurrently_on_the_event_loop(pg_url: str) -> None:
    """Ten requests each sleeping 0.4 s on the server finish together, far below the 4 s they
    take one after another: nothing blocks the loop."""
    dbs = registry(pg_url, pool={"size": 10, "max_overflow": 0})
    db = dbs["main"]
    api = FastAPI()
    MainSession = AsyncSessionDep(db)  # noqa: N806 (a type alias)

    @api.get("/sleep")
    async def sleep(session: MainSession) -> dict[str, str]:  # type: ignore[valid-type]
        s: AsyncSession = session
        await s.execute(sa.text("SELECT pg_sleep(0.4)"))
        return {"ok": "yes"}

    async def main() -> None:
        async with client(api) as c:
            await c.get("/sleep")  # opens the first connection outside the timing
            start = time.perf_counter()
            responses = await asyncio.gather(*(c.get("/sleep") for _ in range(10)))
            elapsed = time.perf_counter() - start
        assert [r.status_code for r in responses] == [200] * 10
        assert elapsed < 2.5, f"10 requests of 0.4 s took {elapsed:.2f} s: requests ran one by one"
        assert checked_out(db) == 0
        await dbs.aclose()

    run(main)


def test_lifespan_disposes_async_pools_and_keeps_the_registry_usable(
    pg_url: str, pg_admin: sa.Engine
) -> None:
    app_name = f"app_life_{uuid.uuid4().hex[:8]}"
    dbs = registry(pg_url, application_name=app_name)
    db = dbs["main"]
    api = FastAPI(lifespan=lifespan(dbs))
    MainSession = AsyncSessionDep(db)  # noqa: N806 (a type alias)

    @api.get("/one")
    async def one(session: MainSession) -> int:  # type: ignore[valid-type]
        s: AsyncSession = session
        return int((await s.execute(sa.text("SELECT 1"))).scalar_one())

    def backends() -> int:
        with pg_admin.connect() as conn:
            query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"
            return int(conn.execute(sa.text(query), {"a": app_name}).scalar_one())

    async def serve_once() -> None:
        async with api.router.lifespan_context(api), client(api) as c:
            assert (await c.get("/one")).json() == 1
            assert backends() == 1  # the pooled connection is open while the app runs

    async def main() -> None:
        await serve_once()
        await wait_for(lambda: backends() == 0, "the pooled connection closed at shutdown")
        await serve_once()  # a second start (tests, reloads) gets a new pool
        await dbs.aclose()

    run(main)


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` (the server updates pg_stat_activity asynchronously)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.05)


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "app_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]


def test_aiosqlite_commit_rollback_and_a_failed_flush_at_commit(tmp_path: Path) -> None:
    """On SQLite (aiosqlite) the ORM insert of an existing key is flushed only at commit,
    after the endpoint returned: a 500, the earlier row intact, the connection returned."""
    dbs = registry(f"sqlite:///{tmp_path / 'api.db'}")
    db = dbs["main"]
    api = FastAPI()
    MainSession = AsyncSessionDep(db)  # noqa: N806 (a type alias)

    @api.post("/notes/{note_id}")
    async def add(note_id: int, body: str, session: MainSession) -> dict[str, int]:  # type: ignore[valid-type]
        s: AsyncSession = session
        s.add(Note(id=note_id, body=body))  # flushed by the dependency's commit
        if body == "refuse":
            raise HTTPException(409, "rolled back")
        return {"id": note_id}

    @api.get("/notes")
    async def notes(session: MainSession) -> list[str]:  # type: ignore[valid-type]
        s: AsyncSession = session
        return list((await s.execute(sa.select(Note.body).order_by(Note.id))).scalars())

    async def main() -> None:
        async with db.async_engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with client(api) as c:
            assert (await c.post("/notes/1", params={"body": "first"})).status_code == 200
            assert (await c.post("/notes/2", params={"body": "refuse"})).status_code == 409
            assert (await c.post("/notes/1", params={"body": "duplicate"})).status_code == 500
            assert (await c.post("/notes/3", params={"body": "third"})).status_code == 200
            assert (await c.get("/notes")).json() == ["first", "third"]
        assert checked_out(db) == 0
        await dbs.aclose()

    run(main)


def test_the_flavour_is_checked_when_the_alias_is_made(tmp_path: Path) -> None:
    dbs = registry(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(UnknownSessionFlavourError, match="batch"):
        AsyncSessionDep(dbs["main"], "batch")


CLASSES_MODULE = "app_fastapi_session_classes"
CLASSES_SOURCE = """
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session


class NoteSession(Session):
    pass


class NoteAsyncSession(AsyncSession):
    sync_session_class = NoteSession
"""


def test_the_aliases_are_typed_with_the_flavours_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flavour with ``class:`` gives ``Annotated[ThatClass, …]``, and the endpoint gets an
    instance of it; the default flavour keeps SQLAlchemy's classes."""
    (tmp_path / f"{CLASSES_MODULE}.py").write_text(CLASSES_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    dbs = registry(
        f"sqlite:///{tmp_path / 'typed.db'}",
        sessions={"notes": {"class": f"{CLASSES_MODULE}:NoteAsyncSession"}},
    )
    db = dbs["main"]
    module = __import__(CLASSES_MODULE)
    assert get_args(AsyncSessionDep(db, "notes"))[0] is module.NoteAsyncSession
    assert get_args(SessionDep(db, "notes"))[0] is module.NoteSession
    assert get_args(AsyncSessionDep(db))[0] is AsyncSession
    assert get_args(SessionDep(db))[0] is Session

    api = FastAPI()
    NotesSession = AsyncSessionDep(db, "notes")  # noqa: N806 (a type alias)

    @api.get("/kind")
    async def kind(session: NotesSession) -> list[str]:  # type: ignore[valid-type]
        s: AsyncSession = session
        return [type(s).__name__, type(s.sync_session).__name__]

    async def main() -> None:
        async with client(api) as c:
            assert (await c.get("/kind")).json() == ["NoteAsyncSession", "NoteSession"]
        await dbs.aclose()

    run(main)
