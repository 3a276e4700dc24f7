"""The pytest plugin on a database with replicas: under rollback per test every role (replica,
auto, primary; sync and async) reads through the test's connection, so replica-role reads see
the test's uncommitted rows (through ``pytester``, with the real standby configured)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from plugin_support import drop_leftovers, project_url, server_databases, write_project

pytest_plugins = ["pytester"]


@pytest.fixture
def url(pg_url: str) -> Iterator[str]:
    url = project_url("postgresql", pg_url, None)
    yield url
    drop_leftovers(url)


REPLICA_TESTS = """
import pytest
import sqlalchemy as sa

import app_plugin as app

COUNT = sa.select(sa.func.count()).select_from(app.Note)
PORT = sa.select(sa.func.inet_server_port())


@pytest.mark.parametrize("flavour", ["reader", "auto", "default"])
def test_every_role_reads_the_test_transaction(db_session, flavour):
    app.add_note("uncommitted")                     # a savepoint of the test's transaction
    with app.db.session(flavour) as s:
        assert s.scalar(COUNT) == 1
        assert s.scalar(PORT) == PRIMARY_PORT        # the test's connection, not the standby


@pytest.mark.asyncio
async def test_async_replica_reads_the_test_transaction(async_db_session):
    await app.add_note_async("uncommitted")
    async with app.db.async_session("reader") as s:
        assert await s.scalar(COUNT) == 1
        assert await s.scalar(PORT) == PRIMARY_PORT
"""


def test_replica_roles_read_through_the_test_connection(
    pytester: pytest.Pytester, url: str, standby_url: str
) -> None:
    standby = sa.make_url(standby_url)
    write_project(
        pytester,
        url,
        ini="asyncio_mode = strict\n",
        test_replicas=REPLICA_TESTS.replace("PRIMARY_PORT", str(sa.make_url(url).port)),
    )
    pytester.makefile(  # the project's config again, with a replica and routed flavours
        ".yaml",
        **{
            "config/databases": textwrap.dedent(
                f"""
                profiles:
                  test:
                    databases:
                      primary:
                        url: "{url}"
                        replicas: [{{host: "{standby.host}", port: {standby.port}}}]
                        sessions:
                          default: {{}}
                          reader: {{role: replica}}
                          auto: {{role: auto}}
                """
            )
        },
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=4)
    assert server_databases(url) == []
