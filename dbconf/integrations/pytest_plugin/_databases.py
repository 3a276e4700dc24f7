"""Test databases: their names, where they live, and creating, fingerprinting and dropping them.

A server database (PostgreSQL, MariaDB/MySQL) of the test profile named ``app`` gets a test
database ``app_test`` (``app_test_gw0``, ``app_test_gw1`` … under pytest-xdist) on the same
server; a SQLite file database a file in pytest's temporary directory (one per worker); an
in-memory SQLite database stays as declared. Databases of the profile that point at the same
place (a primary and its replica in a test profile) share one test database.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from dbconf.config import DatabaseConfig

SERVER_BACKENDS = ("postgresql", "mysql", "mariadb")
_COMMENT = "dbconf-test-fingerprint:"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_$-]{1,63}$")

LocationKey = tuple[str, str | None, int | None, str | None]


def location_key(name: str, config: DatabaseConfig) -> LocationKey:
    """What identifies "the same database" across registries: backend, host, port, database
    (in-memory SQLite: the dbconf database name, each registry having its own)."""
    url = config.sqlalchemy_url
    backend = "mysql" if url.get_backend_name() == "mariadb" else url.get_backend_name()
    if config.is_sqlite_memory:
        return ("sqlite-memory", None, None, name)
    return (backend, url.host, url.port, url.database)


@dataclass(frozen=True)
class Target:
    """One test database: the dbconf databases using it, and where it is."""

    names: tuple[str, ...]  # dbconf database names of the profile that point at it
    backend: str  # postgresql, mysql, sqlite, sqlite-memory
    test_database: str | None  # server database name or SQLite file path; None: in memory
    original: str | None  # the profile's own database name (server) or path (SQLite)

    @property
    def is_server(self) -> bool:
        return self.backend in SERVER_BACKENDS


def plan(databases: dict[str, DatabaseConfig], worker: str | None, tmp: Path) -> list[Target]:
    """The test databases for ``databases`` (the test profile as loaded, not redirected)."""
    grouped: dict[LocationKey, list[str]] = {}
    for name, config in databases.items():
        grouped.setdefault(location_key(name, config), []).append(name)
    suffix = f"_{worker}" if worker else ""
    targets = []
    for key, names in grouped.items():
        backend, _host, _port, database = key
        if backend == "sqlite-memory":
            targets.append(Target(tuple(names), backend, None, None))
        elif backend == "sqlite":
            file = tmp / f"{names[0]}_test{suffix}.db"
            targets.append(Target(tuple(names), backend, str(file), database))
        elif backend in SERVER_BACKENDS:
            if not database:
                raise ValueError(
                    f"dbconf test database {names[0]!r}: its URL names no database, so no "
                    "test database name can be made from it; add one (…/myapp)"
                )
            test_name = f"{database}_test{suffix}"
            if not _SAFE_NAME.match(test_name):
                raise ValueError(
                    f"dbconf test database {names[0]!r}: {test_name!r} is not a name the "
                    "plugin creates (letters, digits, _ $ -, at most 63 characters)"
                )
            targets.append(Target(tuple(names), backend, test_name, database))
        else:
            targets.append(Target(tuple(names), backend, None, None))  # unknown: left alone
    return targets


def _quote(conn: sa.Connection, name: str) -> str:
    return str(conn.dialect.identifier_preparer.quote_identifier(name))


def exists(conn: sa.Connection, target: Target) -> bool:
    if target.backend == "postgresql":
        query = "SELECT 1 FROM pg_database WHERE datname = :n"
    else:
        query = "SELECT 1 FROM information_schema.schemata WHERE schema_name = :n"
    return conn.execute(sa.text(query), {"n": target.test_database}).first() is not None


def fingerprint_of(conn: sa.Connection, target: Target) -> str | None:
    """The fingerprint stored on the test database by :func:`store_fingerprint`, if any."""
    if target.backend == "postgresql":
        query = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"
    else:  # MariaDB keeps a database comment (10.5+); MySQL has none: never reused
        query = "SELECT schema_comment FROM information_schema.schemata WHERE schema_name = :n"
    try:
        comment = conn.execute(sa.text(query), {"n": target.test_database}).scalar()
    except sa.exc.DBAPIError:
        return None
    if isinstance(comment, str) and comment.startswith(_COMMENT):
        return comment[len(_COMMENT) :]
    return None


def store_fingerprint(conn: sa.Connection, target: Target, fingerprint: str) -> None:
    assert target.test_database is not None
    name = _quote(conn, target.test_database)
    comment = _COMMENT + fingerprint
    if target.backend == "postgresql":
        conn.exec_driver_sql(f"COMMENT ON DATABASE {name} IS '{comment}'")
    else:
        # MySQL has no database comments: its test database is rebuilt every run
        with contextlib.suppress(sa.exc.DBAPIError):
            conn.exec_driver_sql(f"ALTER DATABASE {name} COMMENT '{comment}'")


def create(conn: sa.Connection, target: Target) -> None:
    assert target.test_database is not None
    conn.exec_driver_sql(f"CREATE DATABASE {_quote(conn, target.test_database)}")


def drop(conn: sa.Connection, target: Target) -> None:
    """Drop the test database; on PostgreSQL terminating what is still connected to it."""
    assert target.test_database is not None
    name = _quote(conn, target.test_database)
    if target.backend == "postgresql":
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    else:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")


def admin_url(config: DatabaseConfig, fallback: bool) -> sa.URL:
    """Where to run CREATE/DROP DATABASE: the profile's own database (``fallback``: the
    server's ``postgres`` database, or none on MariaDB, for when that one does not exist)."""
    url = config.sqlalchemy_url
    if not fallback:
        return url
    if url.get_backend_name() == "postgresql":
        return url.set(database="postgres")
    return url._replace(database=None)  # URL.set() ignores None
