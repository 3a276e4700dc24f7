"""A small app project for the pytest plugin's tests, written into a ``pytester`` directory.

Its ``config/databases.yaml`` has a ``test`` profile whose database is on the server (or the
SQLite file) under test, named ``dbconf_plugin_<random>`` so that the test database the plugin
makes (``…_test``, ``…_test_gw0``) cannot collide with another run's.
"""

from __future__ import annotations

import contextlib
import importlib
import secrets
import textwrap
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

# pytester's in-process runs drop the modules a run imported; a C extension (asyncpg's,
# greenlet's) imported again in the next run can crash the interpreter. Import them here, in
# the outer process, so every run finds them already loaded.
for _module in (
    "asyncpg",
    "aiomysql",
    "aiosqlite",
    "psycopg2",
    "pymysql",
    "greenlet",
    "sqlalchemy.ext.asyncio",
    "fastapi",
    "fastapi.testclient",
    "httpx",
):
    with contextlib.suppress(ImportError):
        importlib.import_module(_module)

APP = '''
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import dbconf


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "plugin_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(50))


dbs = dbconf.load()  # no profile named: the plugin sets DBCONF_PROFILE to the test profile
db = dbs.default


def add_note(text: str) -> None:
    with db.session() as s:
        s.add(Note(text=text))


def count() -> int:
    with db.session() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(Note))


def add_with_savepoint(keep: str, drop: str) -> None:
    with db.transaction() as s:
        s.add(Note(text=keep))
        savepoint = s.begin_nested()
        s.add(Note(text=drop))
        s.flush()
        savepoint.rollback()


FORCED = {
    "postgresql": (
        "DO $$BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = 'serialization_failure'; END$$"
    ),
    "mysql": "SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'forced'",
    "mariadb": "SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'forced'",
}


def add_with_retry(text: str) -> int:
    """Insert; the first attempt fails with a real serialization failure from the server."""
    attempts = []

    def work(s):
        attempts.append(1)
        s.add(Note(text=f"{text}{len(attempts)}"))
        s.flush()
        if len(attempts) == 1:
            s.execute(sa.text(FORCED[db.config.backend]))
        return len(attempts)

    return db.run_in_transaction(work, backoff=0.001)


async def add_note_async(text: str) -> None:
    async with db.async_session() as s:
        s.add(Note(text=text))


async def count_async() -> int:
    async with db.async_session() as s:
        return await s.scalar(sa.select(sa.func.count()).select_from(Note))


async def add_with_savepoint_async(keep: str, drop: str) -> None:
    async with db.async_transaction() as s:
        s.add(Note(text=keep))
        savepoint = await s.begin_nested()
        s.add(Note(text=drop))
        await s.flush()
        await savepoint.rollback()


async def add_with_retry_async(text: str) -> int:
    attempts = []

    async def work(s):
        attempts.append(1)
        s.add(Note(text=f"{text}{len(attempts)}"))
        await s.flush()
        if len(attempts) == 1:
            await s.execute(sa.text(FORCED[db.config.backend]))
        return len(attempts)

    return await db.run_in_transaction_async(work, backoff=0.001)
'''

FASTAPI_APP = """
from fastapi import FastAPI
import sqlalchemy as sa

from dbconf.integrations.fastapi import SessionDep
from app_plugin import Note, db

app = FastAPI()
DbSession = SessionDep(db)


@app.post("/notes/{text}")
def add(text: str, session: DbSession) -> dict:
    session.add(Note(text=text))
    return {"ok": True}


@app.post("/async-notes/{text}")
async def add_async(text: str, session: DbSession) -> dict:
    session.add(Note(text=text))
    return {"ok": True}


@app.get("/count")
def count(session: DbSession) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(Note))
"""


FASTAPI_ASYNC_APP = """
from fastapi import FastAPI
import sqlalchemy as sa

from dbconf.integrations.fastapi import AsyncSessionDep
from app_plugin import Note, db

app = FastAPI()
DbSession = AsyncSessionDep(db)


@app.post("/notes/{text}")
async def add(text: str, session: DbSession) -> dict:
    session.add(Note(text=text))
    return {"ok": True}


@app.get("/count")
async def count(session: DbSession) -> int:
    return await session.scalar(sa.select(sa.func.count()).select_from(Note))
"""


def project_url(backend: str, pg_url: str | None, maria_url: str | None) -> str:
    """The ``test`` profile's URL for ``backend``, with a database name unique to the run."""
    name = f"dbconf_plugin_{secrets.token_hex(4)}"
    if backend == "sqlite":
        return "sqlite:///var/plugin.db"
    base = pg_url if backend == "postgresql" else maria_url
    assert base is not None
    return sa.make_url(base).set(database=name).render_as_string(hide_password=False)


def write_project(pytester: pytest.Pytester, url: str, ini: str = "", **files: str) -> None:
    """Config, app module, pytest.ini and test files (``files``: module name → source)."""
    pytester.makefile(
        ".yaml",
        **{
            "config/databases": textwrap.dedent(
                f"""
                profiles:
                  development:
                    databases:
                      primary: {{url: "sqlite:///var/dev-never-used.db"}}
                  test:
                    databases:
                      primary:
                        url: "{url}"
                        application_name: dbconf-plugin-tests
                """
            )
        },
    )
    pytester.makepyfile(
        app_plugin=APP, fastapi_plugin=FASTAPI_APP, fastapi_async_plugin=FASTAPI_ASYNC_APP
    )
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "dbconf_schema = app_plugin:Base.metadata\n" + ini
    )
    pytester.makepyfile(**{name: textwrap.dedent(src) for name, src in files.items()})
    pytester.syspathinsert()


def server_databases(url: str) -> list[str]:
    """Databases on ``url``'s server whose name starts with its database name."""
    parsed = sa.make_url(url)
    prefix = parsed.database or ""
    if parsed.get_backend_name() == "sqlite":
        return []
    if parsed.get_backend_name() == "postgresql":
        admin, query = parsed.set(database="postgres"), "SELECT datname FROM pg_database"
    else:
        admin, query = parsed._replace(database=None), "SHOW DATABASES"
    engine = sa.create_engine(admin, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.text(query)) if r[0].startswith(prefix))
    finally:
        engine.dispose()


def drop_leftovers(url: str) -> None:
    """Drop what a failed run left behind (test databases of this URL)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return
    names = server_databases(url)
    if parsed.get_backend_name() == "postgresql":
        admin = parsed.set(database="postgres")
    else:
        admin = parsed._replace(database=None)
    engine = sa.create_engine(admin, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for name in names:
                quoted = conn.dialect.identifier_preparer.quote_identifier(name)
                force = " WITH (FORCE)" if parsed.get_backend_name() == "postgresql" else ""
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}{force}")
    finally:
        engine.dispose()


# The backends a plugin test runs on (SERVERS: those with a server, where databases are made).
SERVERS = [
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]
BACKENDS = [*SERVERS, "sqlite"]


def backend_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The body of a ``url`` fixture parametrized over backends: the test profile's URL on
    ``request.param`` (a fresh database name); leftovers dropped after the test."""
    backend = request.param
    pg = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    maria = request.getfixturevalue("maria_url") if backend == "mariadb" else None
    url = project_url(backend, pg, maria)
    yield url
    drop_leftovers(url)
