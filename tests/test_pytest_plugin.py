"""The pytest plugin through ``pytester``: rollback per test, app code unchanged, on the real
PostgreSQL, MariaDB and SQLite; the transaction=True marker; the blocker; a run that does not
use the plugin is left alone."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from plugin_support import (
    BACKENDS,
    backend_url,
    drop_leftovers,
    project_url,
    server_databases,
    write_project,
)

pytest_plugins = ["pytester"]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The test profile's URL on one backend (a fresh database name); leftovers dropped."""
    yield from backend_url(request)


ROLLBACK_TESTS = """
import os
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import app_plugin as app
import fastapi_plugin

SERVER = app.db.config.backend != "sqlite"


def texts(session):
    return sorted(session.scalars(sa.select(app.Note.text)))


def test_1_app_code_joins_the_test_transaction(db_session):
    database = db_session.get_bind().engine.url.database
    if SERVER:
        assert database.startswith("dbconf_plugin_") and database.endswith("_test")
    else:
        assert database.endswith("primary_test.db") and not database.endswith("var/plugin.db")
    app.add_note("a")                                   # commits in `with db.session()`
    app.add_with_savepoint("kept", "dropped")           # begin_nested() inside db.transaction()
    assert app.count() == 2
    assert texts(db_session) == ["a", "kept"]           # the fixture sees the app's writes
    db_session.add(app.Note(text="b"))
    db_session.commit()                                 # releases a savepoint only
    assert app.count() == 3


def test_2_previous_data_is_gone(db_session):
    assert app.count() == 0
    assert texts(db_session) == []


@pytest.mark.skipif(not SERVER, reason="SQLite has no retryable error to force")
def test_3_run_in_transaction_retries_inside_the_test_transaction(db_session):
    assert app.add_with_retry("r") == 2                 # a real 40001 / 1213 from the server
    assert texts(db_session) == ["r2"]                  # the failed attempt was rolled back


def test_4_fastapi_sync_and_async_endpoints(db_session):
    client = TestClient(fastapi_plugin.app)
    assert client.post("/notes/x").status_code == 200
    assert client.post("/async-notes/y").status_code == 200
    assert client.get("/count").json() == 2
    assert texts(db_session) == ["x", "y"]


@pytest.mark.dbconf
def test_5_marker_without_a_session():
    app.add_note("m")
    assert app.count() == 1


def test_6_after_the_rolled_back_tests_dbconf_is_itself_again():
    maker = app.db.sessionmaker()
    assert maker is app.db.sessionmaker()               # the cached maker, unchanged
    assert maker.kw["bind"] is app.db.engine
    assert "join_transaction_mode" not in maker.kw
    with app.db.engine.connect() as conn:               # nothing was committed
        assert conn.scalar(sa.select(sa.func.count()).select_from(app.Note)) == 0
    assert os.environ["DBCONF_PROFILE"] == "test"
"""


def test_rollback_per_test(pytester: pytest.Pytester, url: str) -> None:
    write_project(pytester, url, test_rollback=ROLLBACK_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-v")
    sqlite = url.startswith("sqlite")
    result.assert_outcomes(passed=5 if sqlite else 6, skipped=1 if sqlite else 0)
    assert server_databases(url) == []  # created for the run, dropped at its end
    assert not (pytester.path / "var").exists()  # the declared SQLite file was never used


TRANSACTION_TESTS = """
import pytest
import sqlalchemy as sa

import app_plugin as app


def count_elsewhere():
    with app.db.engine.connect() as conn:               # another connection, not the test's
        return conn.scalar(sa.select(sa.func.count()).select_from(app.Note))


@pytest.mark.dbconf(transaction=True)
def test_1_real_commits():
    app.add_note("t1")
    app.add_note("t2")
    assert count_elsewhere() == 2                       # committed for real


def test_2_touched_tables_were_emptied(db_session):
    assert app.count() == 0
    assert count_elsewhere() == 0
    app.add_note("ids")
    assert db_session.scalar(sa.select(app.Note.id)) == 1   # identity restarted
"""


def test_transaction_marker_commits_then_truncates(pytester: pytest.Pytester, url: str) -> None:
    write_project(pytester, url, test_transaction=TRANSACTION_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert server_databases(url) == []


BLOCKED_TESTS = """
import pytest
import app_plugin as app


def test_1_without_fixture():
    app.add_note("no")


def test_2_with_fixture(db_session):
    app.add_note("yes")
    assert app.count() == 1


@pytest.mark.dbconf(transaction=True)
def test_3_with_marker():
    app.add_note("yes")
    assert app.count() == 1


@pytest.mark.asyncio
async def test_4_async_without_fixture():
    await app.add_note_async("no")


@pytest.mark.asyncio
async def test_5_async_with_fixture(async_db_session):
    await app.add_note_async("yes")
    assert await app.count_async() == 1
"""


@pytest.mark.postgres
def test_blocker_names_the_fixture_to_add(pytester: pytest.Pytester, pg_url: str) -> None:
    url = project_url("postgresql", pg_url, None)
    try:
        write_project(pytester, url, ini="dbconf_block = true\n", test_blocked=BLOCKED_TESTS)
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
        result.assert_outcomes(passed=3, failed=2)
        for test in ("test_1_without_fixture", "test_4_async_without_fixture"):
            result.stdout.fnmatch_lines(
                [
                    f"*{test} opened a dbconf session on database 'primary' "
                    "without the database fixture: add the `db_session` fixture*"
                ]
            )
        assert server_databases(url) == []
    finally:
        drop_leftovers(url)


UNUSED_TESTS = """
import os

from dbconf.runtime import testhooks


def test_nothing_installed():
    assert testhooks.get() == (None, None, None)
    assert "DBCONF_PROFILE" not in os.environ
"""


def test_a_run_that_does_not_use_the_plugin_is_left_alone(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBCONF_PROFILE", raising=False)
    pytester.makepyfile(test_unused=UNUSED_TESTS)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


LATE_TESTS = """
import os

import sqlalchemy as sa


def test_1_plain():
    assert "DBCONF_PROFILE" not in os.environ


def test_2_first_use(db_session):
    path = db_session.get_bind().engine.url.database
    assert path.endswith("primary_test.db")             # the test database, not var/plugin.db
    db_session.execute(sa.text("CREATE TABLE late_t (x INTEGER)"))
    db_session.execute(sa.text("INSERT INTO late_t VALUES (1)"))
    assert "DBCONF_PROFILE" not in os.environ           # a late first use leaves env alone


def test_3_rolled_back(db_session):
    assert not sa.inspect(db_session.connection()).has_table("late_t")
"""


def test_a_first_use_in_an_unconfigured_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBCONF_PROFILE", raising=False)
    write_project(pytester, "sqlite:///var/plugin.db", test_late=LATE_TESTS)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)
    assert not (pytester.path / "var").exists()


def test_importing_the_plugin_loads_only_its_entry_module() -> None:
    code = (
        "import sys, dbconf.integrations.pytest_plugin as p\n"
        "heavy = [m for m in sys.modules if m.startswith('dbconf.integrations.pytest_plugin.')"
        " or m in ('fastapi', 'alembic')]\n"
        "assert heavy == [], heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


SCHEMA_CALLABLE = """
import pathlib

import app_plugin


def setup_schema(registry):
    calls = pathlib.Path("schema-calls")
    calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
    app_plugin.Base.metadata.create_all(registry.default.engine)
"""

CALLABLE_TESTS = """
import pathlib

import app_plugin as app


def test_1(db_session):
    app.add_note("one")
    assert app.count() == 1


def test_2(db_session):
    assert app.count() == 0
    assert pathlib.Path("schema-calls").read_text() == "x"      # built once for the run
"""


def test_schema_from_a_callable_taking_the_registry(pytester: pytest.Pytester) -> None:
    write_project(pytester, "sqlite:///var/plugin.db", test_callable=CALLABLE_TESTS)
    pytester.makepyfile(app_schema=SCHEMA_CALLABLE)
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "dbconf_schema = app_schema:setup_schema\n"
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_bad_schema_entry_says_what_to_write(pytester: pytest.Pytester) -> None:
    write_project(pytester, "sqlite:///var/plugin.db", test_bad="def test(db_session): pass\n")
    pytester.makeini("[pytest]\ndbconf_schema = app_plugin.Base.metadata\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*write module:attribute (myapp.models:Base.metadata*"])
