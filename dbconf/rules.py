"""Cross-field rules of a database's configuration that depend on its dialect.

Which pool options a pool class can take, and which timeouts a dialect can honour: checked when
the model is validated, so a bad profile fails at load with the key's origin, not inside
``create_engine``. Each error's context carries ``at``, the key path the loader points at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic_core import PydanticCustomError
from sqlalchemy.exc import NoSuchModuleError

from dbconf.errors import ConfigError, Problem, did_you_mean
from dbconf.origin import KeyPath, Origin, find_origin

if TYPE_CHECKING:
    from dbconf.config import DatabaseConfig

__all__ = ["build_problems", "check_dialect_options", "check_pool"]

KNOWN_DRIVERS = (
    "postgresql",
    "postgresql+psycopg2",
    "postgresql+psycopg",
    "mysql",
    "mysql+pymysql",
    "mariadb",
    "mariadb+pymysql",
    "sqlite",
    "sqlite+pysqlite",
)
_EXTRAS = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}


def build_problems(
    databases: Mapping[str, DatabaseConfig], origins: Mapping[KeyPath, Origin], profile: str
) -> list[Problem]:
    """What would fail when building these databases: unknown or missing drivers, and
    translation conflicts (a setting given twice). Imports drivers; connects to nothing."""
    from dbconf.builder import engine_kwargs  # builder imports config, which imports us

    problems: list[Problem] = []

    def problem(name: str, key: str, message: str, fallback: str = "") -> None:
        path = ("databases", name, *key.split(".")) if key else ("databases", name)
        origin = find_origin(origins, path)
        where = ".".join(("profiles", profile, *path))
        problems.append(Problem(str(origin) if origin else fallback, where, message))

    for name, db in databases.items():
        url = db.sqlalchemy_url
        key = "driver" if db.driver else "url"
        try:
            url.get_dialect().import_dbapi()
        except NoSuchModuleError:
            hint = did_you_mean(url.drivername, KNOWN_DRIVERS)
            problem(
                name,
                key,
                f"unknown database driver {url.drivername!r}{hint}; dbconf "
                "supports postgresql+psycopg2, mariadb+pymysql, mysql+pymysql and sqlite",
            )
            continue
        except ImportError as e:
            extra = _EXTRAS.get(url.get_backend_name(), url.get_backend_name())
            problem(
                name,
                key,
                f"the driver for {url.drivername} is not installed ({e.name}); "
                f"pip install 'dbconf[{extra}]'",
            )
            continue
        try:
            engine_kwargs(db)
        except ConfigError as e:
            for p in e.problems:
                problem(name, p.path, p.message, p.origin)
    return problems


def check_pool(db: DatabaseConfig) -> None:
    pool = db.pool
    sized = [
        k for k in ("size", "max_overflow", "timeout", "use_lifo") if getattr(pool, k) is not None
    ]
    if pool.class_ in ("null", "static", "singleton") and sized:
        raise PydanticCustomError(
            "pool",
            "pool.{keys} cannot be used with pool.class {cls}: only the queue pool has a size, "
            "overflow, timeout or LIFO order; remove them or use class: queue",
            {"keys": "/".join(sized), "cls": pool.class_, "at": f"pool.{sized[0]}"},
        )
    if db.is_sqlite_memory and (sized or pool.class_ in ("queue", "null")):
        raise PydanticCustomError(
            "pool",
            "an in-memory SQLite database lives in one connection, which dbconf shares through a "
            "static pool; remove pool.{keys} (or use a file database for a sized pool)",
            {"keys": "/".join(sized) or "class", "at": f"pool.{(sized or ['class'])[0]}"},
        )


def check_dialect_options(db: DatabaseConfig) -> None:
    backend, t = db.backend, db.timeouts
    if db.disconnect_sqlstates is not None and backend != "postgresql":
        raise _dialect_error(
            "disconnect_sqlstates",
            backend,
            "only PostgreSQL errors carry a SQLSTATE that dbconf can match",
        )
    if backend == "sqlite" and db.isolation_level in ("READ COMMITTED", "REPEATABLE READ"):
        raise _dialect_error(
            "isolation_level",
            backend,
            "SQLite offers SERIALIZABLE, READ UNCOMMITTED and AUTOCOMMIT",
        )
    if backend == "sqlite":
        if t.idle_in_transaction is not None:
            raise _dialect_error(
                "timeouts.idle_in_transaction", backend, "SQLite has no server session to time out"
            )
        if t.connect is not None and t.lock is not None and t.connect != t.lock:
            raise _dialect_error(
                "timeouts.connect and timeouts.lock",
                backend,
                "both are the busy timeout on SQLite; set only one",
            )
        return
    if db.sqlite is not None:
        raise _dialect_error("sqlite", backend, "the sqlite: pragmas apply to SQLite only")
    if backend in ("mysql", "mariadb"):
        if t.idle_in_transaction is not None and backend == "mysql":
            raise _dialect_error(
                "timeouts.idle_in_transaction",
                backend,
                "MySQL has no such timeout; MariaDB "
                "does (idle_transaction_timeout): use a mariadb+pymysql:// URL for MariaDB",
            )
        for key in ("lock", "idle_in_transaction"):
            value = getattr(t, key)
            if value is not None and (value < 1 or value != int(value)):
                raise _dialect_error(
                    f"timeouts.{key}",
                    backend,
                    "MariaDB/MySQL take this timeout in whole seconds (at least 1s)",
                )
        return
    if backend != "postgresql":
        given = [k for k, v in t.model_dump().items() if v is not None]
        if given or db.application_name is not None:
            raise _dialect_error(
                "timeouts/application_name",
                backend,
                "dbconf translates these for PostgreSQL, "
                "MariaDB/MySQL and SQLite only; pass driver options through connect_args",
            )


def _dialect_error(key: str, backend: str, why: str) -> PydanticCustomError:
    """An error about ``key``; the context's ``at`` lets the loader point at its origin."""
    at = key.split(" ")[0].split("/")[0]
    return PydanticCustomError(
        "dialect",
        "{key} is not supported for {backend}: {why}",
        {"key": key, "backend": backend, "why": why, "at": at},
    )
