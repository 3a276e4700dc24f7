"""Cross-field rules of a database's configuration that depend on its dialect.

Which pool options a pool class can take, and which timeouts a dialect can honour: checked when
the model is validated, so a bad profile fails at load with the key's origin, not inside
``create_engine``. Each error's context carries ``at``, the key path the loader points at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlalchemy.exc import NoSuchModuleError

from dbconf.errors import ConfigError, Problem, did_you_mean
from dbconf.origin import KeyPath, Origin, find_origin
from dbconf.urls import Issue

if TYPE_CHECKING:
    from dbconf.config import DatabaseConfig

__all__ = ["build_problems", "check_dialect_options", "check_pool", "missing_driver_hint"]

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
# The pyproject extra that installs the driver dbconf supports for a backend.
EXTRAS = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}


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
            problem(name, key, missing_driver_hint(url.drivername, url.get_driver_name(), e.name))
            continue
        except Exception:  # SQLAlchemy's plugin lookup fails in other ways on odd names
            problem(
                name,
                key,
                "unknown database driver; dbconf supports postgresql+psycopg2, "
                "mariadb+pymysql, mysql+pymysql and sqlite",
            )
            continue
        try:
            engine_kwargs(db)
        except ConfigError as e:
            for p in e.problems:
                problem(name, p.path, p.message, p.origin)
    return problems


def missing_driver_hint(drivername: str, driver: str, module: str | None) -> str:
    """What to install for a driver that is not installed: an extra of dbconf only for the
    drivers dbconf ships (a real extra of pyproject.toml), else the driver itself."""
    backend = drivername.partition("+")[0]
    extra = EXTRAS.get(backend)
    if extra is not None and driver in ("psycopg2", "pymysql"):
        how = f"pip install 'dbconf[{extra}]'"
    else:
        how = f"dbconf ships no extra for it: install the {driver} driver itself"
    return f"the driver for {drivername} is not installed ({module}); {how}"


def check_pool(db: DatabaseConfig) -> list[Issue]:
    pool = db.pool
    issues: list[Issue] = []
    sized = [
        k for k in ("size", "max_overflow", "timeout", "use_lifo") if getattr(pool, k) is not None
    ]
    if pool.class_ in ("null", "static", "singleton") and sized:
        issues.append(
            (
                f"pool.{sized[0]}",
                f"pool.{'/'.join(sized)} cannot be used with pool.class {pool.class_}: only the "
                "queue pool has a size, overflow, timeout or LIFO order; remove them or use "
                "class: queue",
            )
        )
    elif db.is_sqlite_memory and (sized or pool.class_ in ("queue", "null")):
        issues.append(
            (
                f"pool.{(sized or ['class'])[0]}",
                "an in-memory SQLite database lives in one connection, which dbconf shares "
                f"through a static pool; remove pool.{'/'.join(sized) or 'class'} (or use a "
                "file database for a sized pool)",
            )
        )
    return issues


def check_dialect_options(db: DatabaseConfig) -> list[Issue]:
    backend, t = db.backend, db.timeouts
    issues: list[Issue] = []

    def unsupported(key: str, why: str) -> None:
        at = key.split(" ")[0].split("/")[0]
        issues.append((at, f"{key} is not supported for {backend}: {why}"))

    if db.disconnect_sqlstates is not None and backend != "postgresql":
        unsupported(
            "disconnect_sqlstates", "only PostgreSQL errors carry a SQLSTATE that dbconf can match"
        )
    if backend == "sqlite":
        if db.isolation_level in ("READ COMMITTED", "REPEATABLE READ"):
            unsupported(
                "isolation_level", "SQLite offers SERIALIZABLE, READ UNCOMMITTED and AUTOCOMMIT"
            )
        if t.idle_in_transaction is not None:
            unsupported("timeouts.idle_in_transaction", "SQLite has no server session to time out")
        if t.connect is not None and t.lock is not None and t.connect != t.lock:
            unsupported(
                "timeouts.connect and timeouts.lock",
                "both are the busy timeout on SQLite; set only one",
            )
        return issues
    if db.sqlite is not None:
        unsupported("sqlite", "the sqlite: pragmas apply to SQLite only")
    if backend in ("mysql", "mariadb"):
        if t.idle_in_transaction is not None and backend == "mysql":
            unsupported(
                "timeouts.idle_in_transaction",
                "MySQL has no such timeout; MariaDB does (idle_transaction_timeout): use a "
                "mariadb+pymysql:// URL for MariaDB",
            )
        for key in ("lock", "idle_in_transaction"):
            value = getattr(t, key)
            if value is not None and (value < 1 or value != int(value)):
                unsupported(
                    f"timeouts.{key}",
                    "MariaDB/MySQL take this timeout in whole seconds (at least 1s)",
                )
    elif backend != "postgresql":
        given = [k for k, v in t.model_dump().items() if v is not None]
        if given or db.application_name is not None:
            unsupported(
                "timeouts/application_name",
                "dbconf translates these for PostgreSQL, MariaDB/MySQL and SQLite only; pass "
                "driver options through connect_args",
            )
    return issues
