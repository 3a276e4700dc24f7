"""From a validated :class:`~dbconf.config.DatabaseConfig` to an Engine and sessionmakers.

:func:`engine_kwargs` is pure: it returns exactly what reaches :func:`sqlalchemy.create_engine`,
which is only what the user wrote plus dbconf's documented defaults:

- ``hide_parameters=True`` (the model default), so bound values stay out of errors and logs;
- ``pool_pre_ping=True`` for server backends unless ``pool.pre_ping`` is set;
- SQLite file database: ``check_same_thread=False`` (SQLAlchemy's own default, made explicit);
- SQLite in-memory database: one connection shared through a ``StaticPool`` with
  ``check_same_thread=False``, so every thread sees the same database.

Timeouts and ``application_name`` are translated per dialect:

- PostgreSQL (psycopg2/psycopg): ``timeouts.connect`` → ``connect_timeout`` (whole seconds,
  rounded up); ``statement``/``lock``/``idle_in_transaction`` → ``-c statement_timeout``,
  ``-c lock_timeout``, ``-c idle_in_transaction_session_timeout`` in ``options`` (ms, rounded
  up); ``application_name`` → ``application_name``.
- MariaDB/MySQL (pymysql): ``connect`` → ``connect_timeout``; on each new connection a
  ``SET SESSION`` chosen by the server's version string: ``max_statement_time`` (MariaDB,
  seconds) or ``max_execution_time`` (MySQL, ms, SELECT only), ``innodb_lock_wait_timeout``,
  ``idle_transaction_timeout`` (MariaDB); ``application_name`` → pymysql ``program_name``
  (a connection attribute, visible in ``performance_schema.session_connect_attrs``).
- SQLite (pysqlite): ``connect`` or ``lock`` → ``timeout`` (the busy timeout);
  ``statement`` → a progress handler that aborts a statement running past its deadline
  (``OperationalError: interrupted``); ``application_name`` is ignored (there is no server).

A duration of 0 disables the timeout (as on the servers); for pymysql ``connect: 0`` means
"no connect timeout" (``connect_timeout=None``). A driver argument that the user also gives in
``connect_args`` or the URL query for one of these settings is a :class:`ConfigError`, never a
silent override (found by :mod:`dbconf.conflicts`). ``-c`` options are appended to any
``options`` the user gives.

SQLite connections get the effect of SQLAlchemy's documented pysqlite savepoint workaround:
dbconf emits ``BEGIN`` whenever SQLAlchemy begins a transaction (skipped for AUTOCOMMIT
connections), so reads are transactional and ``begin_nested()`` works. It does so through the
engine's own dialect ``do_begin`` rather than the recipe's ``begin`` event, which would move
every statement onto SQLAlchemy's slower event path.
"""

from __future__ import annotations

import math
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, Pool, QueuePool, SingletonThreadPool, StaticPool

from dbconf.config import (
    SERVER_BACKENDS,
    DatabaseConfig,
    SessionConfig,
    TimeoutsConfig,
    reveal,
)
from dbconf.conflicts import conflicts, given
from dbconf.errors import ConfigError, Problem
from dbconf.forking import register_engine
from dbconf.leaks import install as install_leak_detection
from dbconf.leaks import pool_class_kwargs
from dbconf.resilience import install_error_types

__all__ = [
    "POOL_CLASSES",
    "build_engine",
    "build_sessionmaker",
    "describe_pool",
    "engine_kwargs",
    "mysql_session_sql",
]

POOL_CLASSES: dict[str, type[Pool]] = {
    "queue": QueuePool,
    "null": NullPool,
    "static": StaticPool,
    "singleton": SingletonThreadPool,
}
_PG_DRIVERS = frozenset({"psycopg2", "psycopg", "psycopg2cffi"})
_MYSQL_DRIVERS = frozenset({"pymysql"})
_SQLITE_DRIVERS = frozenset({"pysqlite"})
_DEADLINE = "dbconf.statement_deadline"
_PROGRESS_OPCODES = 1000


def _ms(seconds: float) -> int:
    """Seconds to whole milliseconds, rounded up (1e-6 guards float noise: 0.1 s → 100 ms)."""
    return math.ceil(round(seconds * 1000, 6))


def _whole_seconds(seconds: float) -> int:
    return math.ceil(round(seconds, 6))


def _unsupported(cfg: DatabaseConfig, keys: list[str], drivers: frozenset[str]) -> ConfigError:
    driver = cfg.sqlalchemy_url.get_driver_name()
    return ConfigError(
        [
            Problem(
                "",
                keys[0],
                f"dbconf translates {', '.join(keys)} for the "
                f"{'/'.join(sorted(drivers))} driver of {cfg.backend}, not {driver}; "
                "pass the driver's own options through connect_args instead",
            )
        ]
    )


def _translated(cfg: DatabaseConfig) -> list[str]:
    keys = [f"timeouts.{k}" for k, v in cfg.timeouts.model_dump().items() if v is not None]
    if cfg.application_name is not None and cfg.backend != "sqlite":
        keys.append("application_name")
    return keys


def _driver_args(cfg: DatabaseConfig) -> dict[str, Any]:
    """connect_args for the translated settings (SET statements are done on connect)."""
    t, backend = cfg.timeouts, cfg.backend
    out: dict[str, Any] = {}
    keys = _translated(cfg)
    if not keys:
        return out
    driver = cfg.sqlalchemy_url.get_driver_name()
    if backend == "postgresql":
        if driver not in _PG_DRIVERS:
            raise _unsupported(cfg, keys, _PG_DRIVERS)
        if t.connect is not None:
            out["connect_timeout"] = _whole_seconds(t.connect)
        if cfg.application_name is not None:
            out["application_name"] = cfg.application_name
        gucs = {
            "statement_timeout": t.statement,
            "lock_timeout": t.lock,
            "idle_in_transaction_session_timeout": t.idle_in_transaction,
        }
        options = " ".join(f"-c {k}={_ms(v)}" for k, v in gucs.items() if v is not None)
        if options:
            out["options"] = options
    elif backend in ("mysql", "mariadb"):
        if driver not in _MYSQL_DRIVERS:
            raise _unsupported(cfg, keys, _MYSQL_DRIVERS)
        if t.connect is not None:
            out["connect_timeout"] = _whole_seconds(t.connect) or None
        if cfg.application_name is not None:
            out["program_name"] = cfg.application_name
    elif backend == "sqlite":
        if driver not in _SQLITE_DRIVERS:
            raise _unsupported(cfg, keys, _SQLITE_DRIVERS)
        busy = t.connect if t.connect is not None else t.lock
        if busy is not None:
            out["timeout"] = busy
    return out


def _connect_args(cfg: DatabaseConfig) -> dict[str, Any]:
    user = reveal(cfg.connect_args or {})
    ours = _driver_args(cfg)
    problems = conflicts(cfg, ours)
    if problems:
        raise ConfigError(problems)
    if "options" in ours:
        ours["options"] = " ".join([*given(cfg, "options")[:1], ours["options"]])
    merged = {**user, **ours}
    if cfg.backend == "sqlite":
        memory_static = cfg.is_sqlite_memory and cfg.pool.class_ in (None, "static")
        if not cfg.is_sqlite_memory or memory_static:
            merged.setdefault("check_same_thread", False)
    return merged


def _pool_kwargs(cfg: DatabaseConfig) -> dict[str, Any]:
    pool = cfg.pool
    out: dict[str, Any] = {}
    if pool.class_ is not None:
        out["poolclass"] = POOL_CLASSES[pool.class_]
    elif cfg.is_sqlite_memory:
        out["poolclass"] = StaticPool
    pairs = {
        "pool_size": pool.size,
        "max_overflow": pool.max_overflow,
        "pool_timeout": pool.timeout,
        "pool_recycle": pool.recycle,
        "pool_use_lifo": pool.use_lifo,
        "pool_reset_on_return": pool.reset_on_return,
    }
    out.update({k: v for k, v in pairs.items() if v is not None})
    if pool.pre_ping is not None:
        out["pool_pre_ping"] = pool.pre_ping
    elif cfg.backend in SERVER_BACKENDS:
        out["pool_pre_ping"] = True
    return out


def engine_kwargs(cfg: DatabaseConfig) -> dict[str, Any]:
    """The keyword arguments for ``create_engine(cfg.sqlalchemy_url, **kwargs)``.

    Raises :class:`ConfigError` (paths relative to the database) for a translated setting the
    driver cannot take or that is also given as a raw driver argument.
    """
    kwargs: dict[str, Any] = {"hide_parameters": cfg.hide_parameters}
    if "echo" in cfg.model_fields_set:
        kwargs["echo"] = cfg.echo
    if cfg.isolation_level is not None:
        kwargs["isolation_level"] = cfg.isolation_level
    if cfg.execution_options:
        kwargs["execution_options"] = dict(cfg.execution_options)
    kwargs.update(_pool_kwargs(cfg))
    connect_args = _connect_args(cfg)
    if connect_args:
        kwargs["connect_args"] = connect_args
    return kwargs


def mysql_session_sql(server_version: str, t: TimeoutsConfig) -> str | None:
    """The ``SET SESSION`` statement for the timeouts, chosen by the server's version string."""
    mariadb = "mariadb" in server_version.lower()
    assigns: list[str] = []
    if t.statement is not None:
        if mariadb:
            assigns.append(f"max_statement_time = {round(t.statement, 6)!r}")
        else:
            assigns.append(f"max_execution_time = {_ms(t.statement)}")
    if t.lock is not None:
        assigns.append(f"innodb_lock_wait_timeout = {_whole_seconds(t.lock)}")
    if t.idle_in_transaction is not None:
        assigns.append(f"idle_transaction_timeout = {_whole_seconds(t.idle_in_transaction)}")
    return f"SET SESSION {', '.join(assigns)}" if assigns else None


def _install_mysql(engine: sa.Engine, t: TimeoutsConfig) -> None:
    if t.statement is None and t.lock is None and t.idle_in_transaction is None:
        return

    @event.listens_for(engine, "connect")
    def _set_session(dbapi_connection: Any, _record: Any) -> None:
        sql = mysql_session_sql(str(dbapi_connection.get_server_info()), t)
        if sql:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(sql)
            finally:
                cursor.close()


def _install_sqlite(engine: sa.Engine, cfg: DatabaseConfig) -> None:
    pragmas: list[str] = []
    if cfg.sqlite is not None:
        if cfg.sqlite.journal_mode is not None:
            pragmas.append(f"PRAGMA journal_mode = {cfg.sqlite.journal_mode.upper()}")
        if cfg.sqlite.foreign_keys is not None:
            pragmas.append(f"PRAGMA foreign_keys = {'ON' if cfg.sqlite.foreign_keys else 'OFF'}")
        if cfg.sqlite.synchronous is not None:
            pragmas.append(f"PRAGMA synchronous = {cfg.sqlite.synchronous.upper()}")
    statement = cfg.timeouts.statement or None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()
        if statement is not None:

            def progress() -> int:
                deadline = record.info.get(_DEADLINE)
                return 1 if deadline is not None and time.monotonic() > deadline else 0

            dbapi_connection.set_progress_handler(progress, _PROGRESS_OPCODES)

    # The pysqlite savepoint workaround: emit BEGIN ourselves when SQLAlchemy begins a
    # transaction, so the driver never opens one late (or not at all before a SAVEPOINT).
    # Done by the dialect's do_begin instead of a "begin" event: a connection-level event
    # turns on SQLAlchemy's event dispatch for every statement (about 30% slower scopes).
    # The driver's isolation_level is None only on AUTOCOMMIT connections: no BEGIN there.
    def _do_begin(dbapi_connection: Any) -> None:
        raw = dbapi_connection.dbapi_connection
        if raw.isolation_level is not None and not raw.in_transaction:
            raw.execute("BEGIN")

    engine.dialect.do_begin = _do_begin  # type: ignore[method-assign]

    if statement is None:
        return

    @event.listens_for(engine, "before_cursor_execute")
    def _arm(conn: sa.Connection, *_args: Any) -> None:
        conn.info[_DEADLINE] = time.monotonic() + statement

    def _disarm(conn: sa.Connection) -> None:
        conn.info.pop(_DEADLINE, None)

    event.listen(engine, "commit", _disarm)
    event.listen(engine, "rollback", _disarm)

    @event.listens_for(engine, "reset")
    def _disarm_pool(_dbapi_connection: Any, record: Any, _state: Any) -> None:
        record.info.pop(_DEADLINE, None)


def _install_disconnect_sqlstates(engine: sa.Engine, states: frozenset[str]) -> None:
    @event.listens_for(engine, "handle_error")
    def _classify(context: sa.engine.ExceptionContext) -> None:
        orig = context.original_exception
        code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
        if code in states:
            context.is_disconnect = True


def build_engine(name: str, cfg: DatabaseConfig) -> sa.Engine:
    """Create the engine of database ``name`` (no connection is made until first use)."""
    kwargs = {**engine_kwargs(cfg), **pool_class_kwargs(cfg)}  # QueuePool → leaks.QueuePool
    engine = sa.create_engine(cfg.sqlalchemy_url, **kwargs)
    if cfg.backend == "sqlite":
        _install_sqlite(engine, cfg)
    elif cfg.backend in ("mysql", "mariadb"):
        _install_mysql(engine, cfg.timeouts)
    if cfg.disconnect_sqlstates:
        _install_disconnect_sqlstates(engine, frozenset(cfg.disconnect_sqlstates))
    install_error_types(engine, name, cfg)  # DisconnectError, StatementTimeoutError (resilience)
    install_leak_detection(engine, name, cfg)  # pool naming, leak_detection (dbconf/leaks.py)
    register_engine(engine)  # fresh pool in forked children (dbconf/forking.py)
    return engine


def build_sessionmaker(engine: sa.Engine, flavour: SessionConfig) -> sessionmaker[Session]:
    """A sessionmaker with exactly the flags the flavour sets.

    ``autocommit: true`` binds the sessions to ``engine.execution_options(
    isolation_level="AUTOCOMMIT")``: every statement is committed by the server as it runs
    (SQLAlchemy 2 has no Session-level autocommit).
    """
    kwargs: dict[str, Any] = {}
    for key in ("autoflush", "expire_on_commit", "autobegin", "twophase"):
        value = getattr(flavour, key)
        if value is not None:
            kwargs[key] = value
    if flavour.info is not None:
        kwargs["info"] = dict(flavour.info)
    bind = engine.execution_options(isolation_level="AUTOCOMMIT") if flavour.autocommit else engine
    return sessionmaker(bind=bind, class_=Session, **kwargs)


def describe_pool(pool: Pool) -> dict[str, Any]:
    """The effective pool settings (for ``check`` reports): class, size, overflow, timeouts."""
    out: dict[str, Any] = {"class": type(pool).__name__}
    if isinstance(pool, QueuePool):
        out.update(size=pool.size(), max_overflow=pool._max_overflow, timeout=pool.timeout())
        out["use_lifo"] = bool(pool._pool.use_lifo)
    out.update(recycle=pool._recycle, pre_ping=pool._pre_ping)
    reset = pool._reset_on_return
    out["reset_on_return"] = reset.name.removeprefix("reset_") if reset is not None else "none"
    return out
