"""FastAPI helpers (needs the ``fastapi`` extra; importing :mod:`dbconf` never imports FastAPI).

.. code-block:: python

    from fastapi import FastAPI
    from dbconf.integrations.fastapi import AsyncSessionDep, SessionDep, lifespan

    dbs = dbconf.load("production")
    app = FastAPI(lifespan=lifespan(dbs))
    PrimarySession = SessionDep(dbs["primary"])            # sync endpoints (threadpool)
    PrimaryAsyncSession = AsyncSessionDep(dbs["primary"])  # async endpoints (asyncpg, …)

    @app.post("/items")
    async def create(session: PrimaryAsyncSession) -> dict[str, str]: ...

``SessionDep`` is ``Annotated[Session, Depends(db.dependency(flavour), scope="function")]`` and
``AsyncSessionDep`` is ``Annotated[AsyncSession, Depends(db.async_dependency(flavour),
scope="function")]``, each typed with the flavour's own class when it sets ``class:``
(``sqlmodel:Session``; :mod:`dbconf.sessions.session_classes`). The session is committed when the
endpoint returns and *before the response is sent* (so a failed commit is a 500, never a 200
for work that was lost), rolled back when it raises (``HTTPException`` included), and always
closed. Writing ``Depends(db.dependency())`` by hand, pass ``scope="function"`` too (FastAPI
≥ 0.121.1): FastAPI's default runs the code after ``yield`` once the response has gone out.
With ``from __future__ import annotations`` FastAPI resolves the alias by name in the
module's globals, so define it at module level.

``app.get("/ready")(readiness(dbs))`` is a readiness probe: :meth:`Registry.health` as JSON,
200 when every database is up, else 503 (no password in it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dbconf.runtime.registry import Database, Registry
from dbconf.sessions.session_classes import async_classes, sync_class

__all__ = ["AsyncSessionDep", "SessionDep", "lifespan", "readiness"]


def SessionDep(db: Database, flavour: str = "default") -> Any:  # noqa: N802 (a type alias)
    """``Annotated[Session, Depends(db.dependency(flavour), scope="function")]``, typed with
    the flavour's session class (its ``class:``, e.g. SQLModel's ``Session``)."""
    dependency = db.dependency(flavour)  # checks the flavour
    cls = sync_class(db.config.sessions[flavour])
    return Annotated[cls, Depends(dependency, scope="function")]


def AsyncSessionDep(db: Database, flavour: str = "default") -> Any:  # noqa: N802 (a type alias)
    """``Annotated[AsyncSession, Depends(db.async_dependency(flavour), scope="function")]``,
    typed with the flavour's async session class (its ``class:``)."""
    dependency = db.async_dependency(flavour)  # checks the flavour
    cls, _sync = async_classes(db.config.sessions[flavour])
    return Annotated[cls, Depends(dependency, scope="function")]


def lifespan(registry: Registry) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI ``lifespan`` that disposes every engine of ``registry`` at shutdown: the sync
    engines, and the async engine of the app's event loop, awaited, so its connections are
    closed before the server's loop stops (``await db.adispose()``).

    It disposes rather than closes: the registry stays usable, and an app started again (a
    second ``TestClient``, a reload) gets new pools. Close the registry yourself (``with`` /
    ``async with dbconf.load(...)``, ``await dbs.aclose()``) when nothing will use it again.
    """

    @asynccontextmanager
    async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await asyncio.gather(*(db.adispose() for db in registry))

    return _lifespan


def readiness(
    registry: Registry, *, names: list[str] | None = None, use_async: bool = False
) -> Callable[[], Awaitable[JSONResponse]]:
    """A readiness endpoint: ``app.get("/ready")(readiness(dbs))``. It answers
    :meth:`Registry.health` as JSON (per database ``up``/``down``, round trip, pool counts,
    the masked URL, never the password) with status 200 when every database (or those named)
    is up, else 503. The sync engines are checked in the threadpool; with ``use_async`` the
    async engines on the app's event loop instead."""

    async def ready() -> JSONResponse:
        if use_async:
            health = await registry.async_health(names)
        else:
            health = await run_in_threadpool(registry.health, names)
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    return ready
