"""The pytest plugin's async twin through ``pytester``: ``async_db_session`` under
pytest-asyncio (strict mode) and anyio; the app's async sessions, savepoints,
``run_in_transaction_async`` with a forced retry and FastAPI async endpoints join the test's
transaction, on PostgreSQL (asyncpg), MariaDB (aiomysql) and SQLite (aiosqlite)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from plugin_support import BACKENDS, backend_url, server_databases, write_project

pytest_plugins = ["pytester"]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    yield from backend_url(request)


ASYNC_TESTS = """
import httpx
import pytest
import sqlalchemy as sa

import app_plugin as app
import fastapi_async_plugin

SERVER = app.db.config.backend != "sqlite"
COUNT = sa.select(sa.func.count()).select_from(app.Note)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.asyncio
async def test_1_app_async_sessions_join_the_test_transaction(async_db_session):
    await app.add_note_async("a")
    await app.add_with_savepoint_async("kept", "dropped")
    assert await app.count_async() == 2
    texts = sorted((await async_db_session.scalars(sa.select(app.Note.text))).all())
    assert texts == ["a", "kept"]
    async_db_session.add(app.Note(text="b"))
    await async_db_session.commit()                     # releases a savepoint only
    assert await app.count_async() == 3


@pytest.mark.asyncio
async def test_2_previous_data_is_gone(async_db_session):
    assert await app.count_async() == 0


@pytest.mark.skipif(not SERVER, reason="SQLite has no retryable error to force")
@pytest.mark.asyncio
async def test_3_run_in_transaction_async_retries(async_db_session):
    assert await app.add_with_retry_async("r") == 2
    assert (await async_db_session.scalars(sa.select(app.Note.text))).all() == ["r2"]


@pytest.mark.asyncio
async def test_4_fastapi_async_endpoints(async_db_session):
    transport = httpx.ASGITransport(app=fastapi_async_plugin.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/notes/x")).status_code == 200
        assert (await client.post("/notes/y")).status_code == 200
        assert (await client.get("/count")).json() == 2
    assert await async_db_session.scalar(COUNT) == 2


@pytest.mark.anyio
async def test_5_under_anyio(async_db_session):
    await app.add_note_async("anyio")
    assert await app.count_async() == 1


@pytest.mark.asyncio
async def test_6_an_async_session_with_only_the_sync_fixture_is_refused(db_session):
    with pytest.raises(pytest.fail.Exception, match="request `async_db_session`"):
        await app.add_note_async("nowhere")


@pytest.mark.dbconf(transaction=True)
@pytest.mark.asyncio
async def test_7_real_async_commits():
    await app.add_note_async("committed")
    with app.db.engine.connect() as conn:               # another connection sees it
        assert conn.scalar(COUNT) == 1


def test_8_after_the_async_tests_dbconf_is_itself_again():
    maker = app.db.async_sessionmaker()
    assert maker is app.db.async_sessionmaker()
    assert maker.kw.get("bind") is None
    assert "join_transaction_mode" not in maker.kw
    with app.db.engine.connect() as conn:
        assert conn.scalar(COUNT) == 0
"""


def test_async_rollback_per_test(pytester: pytest.Pytester, url: str) -> None:
    write_project(pytester, url, ini="asyncio_mode = strict\n", test_async=ASYNC_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-v")
    sqlite = url.startswith("sqlite")
    result.assert_outcomes(passed=7 if sqlite else 8, skipped=1 if sqlite else 0)
    assert server_databases(url) == []
