"""The pytest plugin's test databases: one per xdist worker, dropped after; --dbconf-reuse-db
keeps them and rebuilds when the metadata changes; several databases and a replica."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from plugin_support import (
    SERVERS,
    backend_url,
    drop_leftovers,
    project_url,
    server_databases,
    write_project,
)

pytest_plugins = ["pytester"]


@pytest.fixture(params=SERVERS)
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    yield from backend_url(request)


WORKER_TESTS = """
import os
import pathlib
import time

import pytest
import sqlalchemy as sa

import app_plugin as app


@pytest.mark.parametrize("n", range(6))
def test_worker_database(db_session, n):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    name = app.db.config.sqlalchemy_url.database
    if app.db.config.backend == "sqlite":                # a file in the worker's tmp dir
        assert name.endswith(f"popen-{worker}/primary_test_{worker}.db")
    else:
        assert name.endswith(f"_test_{worker}")
        pg = app.db.config.backend == "postgresql"
        current = "SELECT current_database()" if pg else "SELECT database()"
        assert db_session.scalar(sa.text(current)) == name
    app.add_note(f"{worker}-{n}")
    assert app.count() == 1                  # the other tests' notes were rolled back
    pathlib.Path(f"seen-{worker}").write_text(name)
    time.sleep(0.2)
"""


def test_a_database_per_xdist_worker(pytester: pytest.Pytester, url: str) -> None:
    write_project(pytester, url, test_workers=WORKER_TESTS)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    database = sa.make_url(url).database
    seen = {p.name: p.read_text() for p in pytester.path.glob("seen-*")}
    assert seen == {"seen-gw0": f"{database}_test_gw0", "seen-gw1": f"{database}_test_gw1"}
    assert server_databases(url) == []  # each worker dropped its own


def test_a_sqlite_file_per_xdist_worker(pytester: pytest.Pytester) -> None:
    write_project(pytester, "sqlite:///var/plugin.db", test_workers=WORKER_TESTS)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    seen = {p.name: Path(p.read_text()) for p in pytester.path.glob("seen-*")}
    assert {name: path.name for name, path in seen.items()} == {
        "seen-gw0": "primary_test_gw0.db",
        "seen-gw1": "primary_test_gw1.db",
    }
    assert not any(path.exists() for path in seen.values())  # removed at the end
    assert not (pytester.path / "var").exists()


REUSE_TESTS = """
import json
import pathlib

import sqlalchemy as sa

import app_plugin as app


def test_tables(db_session):
    tables = sa.inspect(db_session.connection()).get_table_names()
    pathlib.Path("tables.json").write_text(json.dumps(sorted(tables)))
"""

EXTRA_TABLE = """

class Tag(Base):
    __tablename__ = "plugin_tags"
    id: Mapped[int] = mapped_column(primary_key=True)
"""


def _tables(pytester: pytest.Pytester, *args: str) -> list[str]:
    pytester.runpytest_inprocess("-p", "no:cacheprovider", *args).assert_outcomes(passed=1)
    tables: list[str] = json.loads((pytester.path / "tables.json").read_text())
    return tables


def test_reuse_db_keeps_the_database_and_rebuilds_it_on_a_schema_change(
    pytester: pytest.Pytester, url: str
) -> None:
    write_project(pytester, url, test_reuse=REUSE_TESTS)
    test_db = f"{sa.make_url(url).database}_test"
    assert _tables(pytester, "--dbconf-reuse-db") == ["plugin_notes"]
    assert server_databases(url) == [test_db]  # kept

    # Something only a kept database still has: a table the schema does not create.
    engine = sa.create_engine(sa.make_url(url).set(database=test_db), poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE plugin_sentinel (id INTEGER)")
    engine.dispose()
    assert _tables(pytester, "--dbconf-reuse-db") == ["plugin_notes", "plugin_sentinel"]

    # --dbconf-create-db forces a new database even with --dbconf-reuse-db.
    assert _tables(pytester, "--dbconf-reuse-db", "--dbconf-create-db") == ["plugin_notes"]
    engine = sa.create_engine(sa.make_url(url).set(database=test_db), poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE plugin_sentinel (id INTEGER)")
    engine.dispose()

    # The metadata changes (another branch, a new model): the fingerprint differs, rebuilt.
    app = (pytester.path / "app_plugin.py").read_text()
    (pytester.path / "app_plugin.py").write_text(app + EXTRA_TABLE)
    assert _tables(pytester, "--dbconf-reuse-db") == ["plugin_notes", "plugin_tags"]

    # Without --dbconf-reuse-db the run drops it at the end.
    assert _tables(pytester) == ["plugin_notes", "plugin_tags"]
    assert server_databases(url) == []


MULTI_CONFIG = """
profiles:
  test:
    default_database: primary
    databases:
      primary: {{url: "{pg}", application_name: dbconf-plugin-tests}}
      replica: {{url: "{pg}", application_name: dbconf-plugin-tests}}
      analytics: {{url: "{maria}"}}
      cache: {{url: "sqlite://"}}
"""

MULTI_TESTS = """
import sqlalchemy as sa

import app_plugin as app


def count(name):
    with app.dbs[name].session() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(app.Note))


def test_1_several_databases(db_session, dbconf_session):
    app.add_note("p")                                   # primary (PostgreSQL)
    assert count("replica") == 1                        # the replica reads the test's writes
    analytics = dbconf_session("analytics")             # MariaDB, its own transaction
    analytics.add(app.Note(text="a"))
    analytics.commit()
    assert count("analytics") == 1
    with app.dbs["cache"].session() as s:               # in-memory SQLite, as declared
        s.add(app.Note(text="c"))
    assert count("cache") == 1


def test_2_all_rolled_back(dbconf_session):
    assert [count(n) for n in ("primary", "replica", "analytics", "cache")] == [0, 0, 0, 0]
"""


@pytest.mark.postgres
@pytest.mark.mariadb
def test_several_databases_and_a_replica(
    pytester: pytest.Pytester, pg_url: str, maria_url: str
) -> None:
    pg = project_url("postgresql", pg_url, None)
    maria = project_url("mariadb", None, maria_url)
    try:
        schema = "app_plugin:Base.metadata"
        write_project(
            pytester,
            pg,
            ini=f"    analytics={schema}\n    cache={schema}\n",
            test_multi=MULTI_TESTS,
        )
        (pytester.path / "config" / "databases.yaml").write_text(
            textwrap.dedent(MULTI_CONFIG.format(pg=pg, maria=maria))
        )
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
        result.assert_outcomes(passed=2)
        assert server_databases(pg) == []
        assert server_databases(maria) == []
    finally:
        drop_leftovers(pg)
        drop_leftovers(maria)
