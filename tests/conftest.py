"""Shared fixtures: real PostgreSQL and MariaDB servers, and tmp config files.

Server tests need the servers named by TEST_POSTGRES_URL and TEST_MARIADB_URL (not DBCONF_*: that prefix is read as configuration)
(defaults: the loopback servers of the dev machine). Without a server they skip with a message
saying how to point them at one; under CI=true they fail instead, so a green CI means they ran.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("TEST_MARIADB_URL", "mariadb+pymysql://root@127.0.0.1:3306/test")
_reachable: dict[str, str | None] = {}


def _probe(url: str) -> str | None:
    """None if the server answers, else a one-line reason."""
    if url not in _reachable:
        engine = sa.create_engine(url, poolclass=sa.NullPool, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
            _reachable[url] = None
        except Exception as e:  # any failure means "not usable here"
            _reachable[url] = str(e).splitlines()[0]
        finally:
            engine.dispose()
    return _reachable[url]


def _require(url: str, env_var: str) -> str:
    reason = _probe(url)
    if reason is None:
        return url
    masked = sa.make_url(url).render_as_string(hide_password=True)
    message = f"server {masked} unreachable ({reason}); set {env_var} to a reachable server"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the test PostgreSQL server (superuser, trust auth)."""
    return _require(POSTGRES_URL, "TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def maria_url() -> str:
    """URL of the test MariaDB server (root)."""
    return _require(MARIADB_URL, "TEST_MARIADB_URL")


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a YAML config (dedented) into a tmp dir and return its path."""

    def write(text: str, name: str = "databases.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write


@pytest.fixture
def pg_admin(pg_url: str) -> Iterator[sa.Engine]:
    """An AUTOCOMMIT engine on the test server, for inspecting pg_stat_activity and cleanup."""
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    yield engine
    engine.dispose()
