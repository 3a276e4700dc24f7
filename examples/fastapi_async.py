"""An async FastAPI app on dbconf: one AsyncSession per request, committed before the response,
rolled back on any exception, always closed; the event loop is never blocked by the database.

Run it (from the repository root, on the SQLite development profile, through aiosqlite):

    pip install -e '.[fastapi,aiosqlite]' uvicorn
    uvicorn examples.fastapi_async:app

The same code runs on PostgreSQL with ``DATABASE_URL=postgresql://…`` and ``dbconf[asyncpg]``
(the async driver is the dialect's default unless the profile sets ``async_driver``).
``create_app`` takes a Registry, so tests (tests/test_examples.py) drive it on their own
database through httpx's AsyncClient.
"""

# No ``from __future__ import annotations``: FastAPI resolves the ``Annotated`` aliases below
# at runtime.
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException
from sqlalchemy.ext.asyncio import AsyncSession

import dbconf
from dbconf.integrations.fastapi import AsyncSessionDep, lifespan


def create_app(dbs: dbconf.Registry) -> FastAPI:
    db = dbs.default
    dispose_at_shutdown = lifespan(dbs)  # disposes the engines, sync and async, at shutdown

    @asynccontextmanager
    async def startup(app: FastAPI) -> AsyncIterator[None]:
        async with db.async_session() as s:  # committed when the block ends
            await s.execute(
                sa.text("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
            )
        async with dispose_at_shutdown(app):
            yield

    app = FastAPI(title="notes (async)", lifespan=startup)
    DbSession = AsyncSessionDep(db)  # noqa: N806  Annotated[AsyncSession, Depends(db.async_dependency(), …)]
    BatchSession = AsyncSessionDep(db, "batch")  # noqa: N806  another flavour of the same database

    @app.post("/notes")
    async def add(body: str, session: DbSession) -> dict[str, int]:  # type: ignore[valid-type]
        s: AsyncSession = session
        if not body.strip():
            raise HTTPException(422, "empty note")  # the dependency rolls back
        result = await s.execute(
            sa.text("INSERT INTO notes (body) VALUES (:b) RETURNING id"), {"b": body}
        )
        note_id = result.scalar_one()
        if body == "fail after write":
            raise HTTPException(409, "rolled back after the insert")
        return {"id": note_id}  # committed after the endpoint returns, before the response

    @app.get("/notes")
    async def list_notes(session: BatchSession) -> list[str]:  # type: ignore[valid-type]
        s: AsyncSession = session
        return list((await s.execute(sa.text("SELECT body FROM notes ORDER BY id"))).scalars())

    return app


@functools.cache
def _default_app() -> FastAPI:
    Path("var").mkdir(exist_ok=True)
    return create_app(dbconf.load())  # $DBCONF_PROFILE, else development


def __getattr__(name: str) -> FastAPI:
    """``examples.fastapi_async:app`` is built on first access, so importing builds nothing."""
    if name == "app":
        return _default_app()
    raise AttributeError(name)
