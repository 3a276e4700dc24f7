"""Cross-field rules of a database's configuration that depend on its dialect.

Which pool options a pool class can take, and which timeouts a dialect can honour: checked when
the model is validated (:mod:`dbconf.config` calls these), so a bad profile fails at load with
the key's origin, not inside ``create_engine``. Each issue is (key path within the database,
message).
"""

from __future__ import annotations

from typing import Protocol

from dbconf.dialects.base import TIMEOUT_KEYS, Settings

__all__ = ["Checked", "check_dialect_options", "check_pool"]

Issue = tuple[str, str]


class Checked(Settings, Protocol):
    """The part of a database's configuration these rules read."""

    @property
    def backend(self) -> str: ...
    @property
    def isolation_level(self) -> str | None: ...


def check_pool(db: Checked) -> list[Issue]:
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
    window = pool.pre_ping is not None and not isinstance(pool.pre_ping, bool)
    if pool.class_ == "null" and pool.pre_ping:
        issues.append(
            (
                "pool.pre_ping",
                "pool.pre_ping cannot be used with pool.class null: every checkout opens a new "
                "connection, which is never pinged; remove pool.pre_ping or use class: queue",
            )
        )
    elif window and (pool.class_ in ("static", "singleton") or db.is_sqlite_memory):
        issues.append(
            (
                "pool.pre_ping",
                f"a pool.pre_ping window ({pool.pre_ping:g}s) needs the queue pool, which "
                "times each connection's idle period; with pool.class "
                f"{pool.class_ or 'static'} use pre_ping: true or false",
            )
        )
    return issues


def check_dialect_options(db: Checked) -> list[Issue]:
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
            off = key == "idle_in_transaction" and value == 0  # 0: no timeout (the default)
            if value is not None and not off and (value < 1 or value != int(value)):
                unsupported(
                    f"timeouts.{key}",
                    "MariaDB/MySQL take this timeout in whole seconds (at least 1s)",
                )
    elif backend != "postgresql":
        given = [k for k in TIMEOUT_KEYS if getattr(t, k) is not None]
        if given or db.application_name is not None:
            unsupported(
                "timeouts/application_name",
                "dbconf translates these for PostgreSQL, MariaDB/MySQL and SQLite only; pass "
                "driver options through connect_args",
            )
    return issues
