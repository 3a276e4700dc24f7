"""The FastAPI app on the settings' databases: ``uvicorn app.main:app`` from ``backend/``."""

import functools

import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.orm import Session

from app.core.config import Settings, get_settings
from dbconf.integrations.fastapi import SessionDep, lifespan
from dbconf.integrations.pydantic_settings import registry


def create_app(settings: Settings) -> FastAPI:
    dbs = registry(settings.databases)  # keeps the profile name and every value's origin
    app = FastAPI(title=settings.PROJECT_NAME, lifespan=lifespan(dbs))
    table = sa.table(settings.ITEMS_TABLE, sa.column("id"), sa.column("title"))
    with dbs.default.session() as s:
        s.execute(
            sa.text(
                f"CREATE TABLE IF NOT EXISTS {settings.ITEMS_TABLE} "
                "(id SERIAL PRIMARY KEY, title TEXT NOT NULL)"
            )
        )

    DbSession = SessionDep(dbs.default)  # noqa: N806

    @app.get("/api/v1/utils/health-check/")
    def health(session: DbSession) -> dict[str, str]:  # type: ignore[valid-type]
        s: Session = session
        s.execute(sa.text("SELECT 1"))
        return {"environment": settings.ENVIRONMENT, "profile": dbs.profile}

    @app.post("/api/v1/items/")
    def create_item(title: str, session: DbSession) -> dict[str, int]:  # type: ignore[valid-type]
        s: Session = session
        new_id = s.execute(table.insert().values(title=title).returning(table.c.id)).scalar_one()
        return {"id": new_id}

    @app.get("/api/v1/items/")
    def read_items(session: DbSession) -> list[str]:  # type: ignore[valid-type]
        s: Session = session
        return list(s.execute(sa.select(table.c.title).order_by(table.c.id)).scalars())

    return app


@functools.cache
def _default_app() -> FastAPI:
    return create_app(get_settings())


def __getattr__(name: str) -> FastAPI:
    """``app.main:app`` is built on first access, so importing builds nothing."""
    if name == "app":
        return _default_app()
    raise AttributeError(name)
