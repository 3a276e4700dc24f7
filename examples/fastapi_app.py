"""A FastAPI app on dbconf: one session per request, committed or rolled back, always closed.

Run it (from the repository root, on the SQLite development profile):

    pip install -e '.[fastapi]' uvicorn
    uvicorn examples.fastapi_app:app

``create_app`` takes a Registry, so tests (tests/test_examples.py) drive it on their own
database through FastAPI's TestClient.
"""

# No ``from __future__ import annotations``: FastAPI resolves the ``Annotated`` aliases below
# at runtime.
import functools
from pathlib import Path

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException
from sqlalchemy.orm import Session

import dbconf
from dbconf.integrations.fastapi import SessionDep, lifespan


def create_app(dbs: dbconf.Registry) -> FastAPI:
    app = FastAPI(title="notes", lifespan=lifespan(dbs))  # disposes the engines at shutdown
    db = dbs.default
    with db.session() as s:
        s.execute(sa.text("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)"))

    DbSession = SessionDep(db)  # noqa: N806  Annotated[Session, Depends(db.dependency(), …)]
    BatchSession = SessionDep(db, "batch")  # noqa: N806  another flavour of the same database

    @app.post("/notes")
    def add(body: str, session: DbSession) -> dict[str, int]:  # type: ignore[valid-type]
        s: Session = session
        if not body.strip():
            raise HTTPException(422, "empty note")  # the dependency rolls back
        note_id = s.execute(
            sa.text("INSERT INTO notes (body) VALUES (:b) RETURNING id"), {"b": body}
        ).scalar_one()
        if body == "fail after write":
            raise HTTPException(409, "rolled back after the insert")
        return {"id": note_id}  # committed after the endpoint returns

    @app.get("/notes")
    def list_notes(session: BatchSession) -> list[str]:  # type: ignore[valid-type]
        s: Session = session
        return list(s.execute(sa.text("SELECT body FROM notes ORDER BY id")).scalars())

    return app


@functools.cache
def _default_app() -> FastAPI:
    Path("var").mkdir(exist_ok=True)
    return create_app(dbconf.load())  # $DBCONF_PROFILE, else development


def __getattr__(name: str) -> FastAPI:
    """``examples.fastapi_app:app`` is built on first access, so importing builds nothing."""
    if name == "app":
        return _default_app()
    raise AttributeError(name)
