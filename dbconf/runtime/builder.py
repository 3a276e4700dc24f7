"""From a validated :class:`~dbconf.config.DatabaseConfig` to an Engine and sessionmakers.

:func:`engine_kwargs` is pure: it returns exactly what reaches :func:`sqlalchemy.create_engine`,
which is only what the user wrote plus dbconf's documented defaults:

- ``hide_parameters=True`` (the model default), so bound values stay out of errors and logs;
- ``pool_pre_ping=True`` for server backends unless ``pool.pre_ping`` is set (a duration also
  sends ``pool_pre_ping=True``; :mod:`dbconf.pooling.pools` skips the ping of a connection checked
  in within that window);
- SQLite file database: ``check_same_thread=False`` (SQLAlchemy's own default, made explicit);
- SQLite in-memory database: one connection shared through a ``StaticPool`` with
  ``check_same_thread=False``, so every thread sees the same database.

Timeouts and ``application_name`` are translated per dialect and driver, sync and async, by the
modules of :mod:`dbconf.dialects` (which also set up each new connection: MariaDB/MySQL ``SET
SESSION``, SQLite pragmas, ``BEGIN`` and statement deadline); ``engine_kwargs(cfg,
use_async=True)`` is what reaches ``create_async_engine`` (asyncpg: ``timeout`` and
``server_settings``). The side of a database whose driver the user did not name (the async
driver of a sync URL, the sync driver of an async one) has its URL query and ``connect_args``
checked here, when built; :func:`build_engine` and :func:`build_async_engine` first call
:func:`dbconf.runtime.drivers.require_driver` (a missing driver or greenlet is a ConfigError naming
the extra). Session flavours' ``class:`` is resolved by :mod:`dbconf.sessions.session_classes`; a
password from ``password_file``, ``password_command`` or ``credentials`` is fetched for each new
connection by :mod:`dbconf.runtime.credentials`.

A duration of 0 disables the timeout (as on the servers); for pymysql ``connect: 0`` means
"no connect timeout" (``connect_timeout=None``). A driver argument that the user also gives in
``connect_args`` or the URL query for one of these settings is a :class:`ConfigError`, never a
silent override (found by :mod:`dbconf.config.conflicts`). ``-c`` options are appended to any
``options`` the user gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, Pool, QueuePool, SingletonThreadPool, StaticPool

from dbconf.config.conflicts import conflicts, given
from dbconf.config.models import DatabaseConfig, SessionConfig, reveal
from dbconf.config.urls import BOTH_SIDES, driver_issues
from dbconf.dialects import dialect_for
from dbconf.dialects.pgbouncer import pooler_connect_args
from dbconf.errors import ConfigError, Problem
from dbconf.pooling.forking import register_engine
from dbconf.pooling.leaks import install as install_leak_detection
from dbconf.pooling.leaks import pool_class_kwargs
from dbconf.pooling.pool_metrics import install as install_pool_metrics
from dbconf.runtime.credentials import install_credentials
from dbconf.runtime.drivers import require_driver
from dbconf.sessions.resilience import install_error_types
from dbconf.sessions.session_classes import async_classes, sync_class

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

    from dbconf.runtime.loop_sessionmaker import LoopSessionmaker
    from dbconf.runtime.loops import LoopEngines

__all__ = [
    "POOL_CLASSES",
    "build_async_engine",
    "build_async_sessionmaker",
    "build_async_sessionmaker_kwargs",
    "build_engine",
    "build_sessionmaker",
    "describe_pool",
    "engine_kwargs",
]

POOL_CLASSES: dict[str, type[Pool]] = {
    "queue": QueuePool,
    "null": NullPool,
    "static": StaticPool,
    "singleton": SingletonThreadPool,
}


def _driver(cfg: DatabaseConfig, use_async: bool) -> str:
    """The driver an engine of ``cfg`` uses: the sync one, or the async one."""
    url = cfg.async_url if use_async else cfg.sqlalchemy_url
    return url.get_driver_name() if url is not None else ""


def _unsupported(cfg: DatabaseConfig, keys: list[str], driver: str, use_async: bool) -> ConfigError:
    dialect = dialect_for(cfg.backend)
    if dialect is None:
        drivers: list[str] = []
    else:
        drivers = sorted(dialect.async_driver_args if use_async else dialect.translated_drivers)
    return ConfigError(
        [
            Problem(
                "",
                keys[0],
                f"dbconf translates {', '.join(keys)} for the "
                f"{'/'.join(drivers)} driver of {cfg.backend}, not {driver}; "
                "pass the driver's own options through connect_args instead",
            )
        ]
    )


def _translated(cfg: DatabaseConfig) -> list[str]:
    keys = [f"timeouts.{k}" for k, v in cfg.timeouts.model_dump().items() if v is not None]
    if cfg.application_name is not None and cfg.backend != "sqlite":
        keys.append("application_name")
    return keys


def _driver_args(cfg: DatabaseConfig, use_async: bool) -> dict[str, Any]:
    """connect_args for the translated settings (SET statements are done on connect)."""
    keys = _translated(cfg)
    dialect = dialect_for(cfg.backend)
    if not keys or dialect is None:
        return {}
    driver = _driver(cfg, use_async)
    translate = dialect.translation(driver)
    if translate is None:
        raise _unsupported(cfg, keys, driver, use_async)
    return translate(cfg)


def _connect_args(cfg: DatabaseConfig, use_async: bool) -> dict[str, Any]:
    user = reveal(cfg.connect_args or {})
    if not cfg.names_driver(use_async):  # the implied side: checked now, not at load
        url = cfg.async_url if use_async else cfg.sqlalchemy_url
        sync, other = cfg.sqlalchemy_url, cfg.async_url
        note = BOTH_SIDES.format(
            sync=sync.get_driver_name(), async_=other.get_driver_name() if other else "none"
        )
        issues = driver_issues(url, user, cfg.query or {}, note) if url is not None else []
        if issues:
            raise ConfigError([Problem("", at, message) for at, message in issues])
    ours = _driver_args(cfg, use_async)
    problems = conflicts(cfg, ours)
    if problems:
        raise ConfigError(problems)
    if "options" in ours:
        ours["options"] = " ".join([*given(cfg, "options")[:1], ours["options"]])
    if "server_settings" in ours and isinstance(user.get("server_settings"), dict):
        ours["server_settings"] = {**user["server_settings"], **ours["server_settings"]}
    dialect = dialect_for(cfg.backend)
    defaults = dialect.connect_defaults(cfg) if dialect is not None else {}
    defaults |= pooler_connect_args(cfg, _driver(cfg, use_async))  # prepared statements off
    return {**defaults, **user, **ours}


def _pool_kwargs(cfg: DatabaseConfig) -> dict[str, Any]:
    pool = cfg.pool
    dialect = dialect_for(cfg.backend)
    out = dialect.pool_defaults(cfg) if dialect is not None else {}  # pre_ping, StaticPool
    if pool.class_ is not None:
        out["poolclass"] = POOL_CLASSES[pool.class_]
    pairs = {
        "pool_size": pool.size,
        "max_overflow": pool.max_overflow,
        "pool_timeout": pool.timeout,
        "pool_recycle": pool.recycle,
        "pool_use_lifo": pool.use_lifo,
        "pool_reset_on_return": pool.reset_on_return,
    }
    out.update({k: v for k, v in pairs.items() if v is not None})
    if pool.pre_ping is not None:  # a window (seconds) pings too: pooling.pools skips in-window
        out["pool_pre_ping"] = bool(pool.pre_ping)
    return out


def engine_kwargs(cfg: DatabaseConfig, *, use_async: bool = False) -> dict[str, Any]:
    """The keyword arguments for ``create_engine(cfg.sqlalchemy_url, **kwargs)`` (with
    ``use_async``: for ``create_async_engine(cfg.async_url, **kwargs)``).

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
    connect_args = _connect_args(cfg, use_async)
    if connect_args:
        kwargs["connect_args"] = connect_args
    return kwargs


def build_engine(name: str, cfg: DatabaseConfig) -> sa.Engine:
    """Create the engine of database ``name`` (no connection is made until first use).
    Raises :class:`ConfigError` naming the extra to install when the sync driver is missing."""
    require_driver(cfg, use_async=False)
    kwargs = {**engine_kwargs(cfg), **pool_class_kwargs(cfg)}  # QueuePool → leaks.QueuePool
    engine = sa.create_engine(cfg.sqlalchemy_url, **kwargs)
    install_credentials(engine, name, cfg)  # password_file, password_command, credentials
    dialect = dialect_for(cfg.backend)
    if dialect is not None:
        dialect.setup(engine, cfg)  # SET SESSION, pragmas, BEGIN, disconnect SQLSTATEs
    install_error_types(engine, name, cfg)  # DisconnectError, StatementTimeoutError (resilience)
    install_leak_detection(engine, name, cfg)  # pool naming, leak_detection (pooling/leaks.py)
    install_pool_metrics(engine, name, cfg)  # when its registry exports metrics
    register_engine(engine)  # fresh pool in forked children (pooling/forking.py)
    return engine


def build_async_engine(name: str, cfg: DatabaseConfig) -> AsyncEngine:
    """Create the async engine of database ``name`` on ``cfg.async_url``: the same pool,
    timeouts, typed errors, leak detection and fork safety as :func:`build_engine`, installed
    on its ``sync_engine`` (no connection is made until first use)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    require_driver(cfg, use_async=True)  # no async driver known, not installed, no greenlet
    url = cfg.async_url
    assert url is not None  # require_driver raised otherwise
    kwargs = {**engine_kwargs(cfg, use_async=True), **pool_class_kwargs(cfg, use_async=True)}
    engine = create_async_engine(url, **kwargs)
    sync = engine.sync_engine
    install_credentials(sync, name, cfg)
    dialect = dialect_for(cfg.backend)
    if dialect is not None:
        dialect.setup(sync, cfg)
    install_error_types(sync, name, cfg)
    install_leak_detection(sync, name, cfg)
    install_pool_metrics(sync, name, cfg)
    register_engine(sync)
    return engine


def build_sessionmaker(
    engine: sa.Engine,
    flavour: SessionConfig,
    *,
    connection: sa.Connection | None = None,
    class_: type[Session] | None = None,
    **extra: Any,
) -> sessionmaker[Session]:
    """A sessionmaker with exactly the flags the flavour sets.

    ``autocommit: true`` binds the sessions to ``engine.execution_options(
    isolation_level="AUTOCOMMIT")``: every statement is committed by the server as it runs
    (SQLAlchemy 2 has no Session-level autocommit).

    With ``connection`` (a test harness's, see :mod:`dbconf.runtime.testhooks`) the sessions are
    bound to it with ``join_transaction_mode="create_savepoint"``, autocommit flavours too:
    they join its transaction and their commits release savepoints.

    ``class_`` replaces the flavour's session class and ``extra`` is passed to it (the routed
    sessions of :mod:`dbconf.replicas.makers`).
    """
    if connection is not None:
        return sessionmaker(
            bind=connection,
            class_=sync_class(flavour),
            join_transaction_mode="create_savepoint",
            **_session_flags(flavour),
        )
    bind = engine.execution_options(isolation_level="AUTOCOMMIT") if flavour.autocommit else engine
    cls = class_ or sync_class(flavour)
    return sessionmaker(bind=bind, class_=cls, **_session_flags(flavour), **extra)


def _session_flags(flavour: SessionConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for key in ("autoflush", "expire_on_commit", "autobegin", "twophase"):
        value = getattr(flavour, key)
        if value is not None:
            kwargs[key] = value
    if flavour.info is not None:
        kwargs["info"] = dict(flavour.info)
    return kwargs


def build_async_sessionmaker_kwargs(flavour: SessionConfig) -> dict[str, Any]:
    """The keyword arguments of ``async_sessionmaker(bind, **kwargs)`` for ``flavour``:
    ``class_`` and ``sync_session_class`` (:func:`dbconf.sessions.session_classes.async_classes`)
    and the same flags as :func:`build_sessionmaker`. The bind is the caller's: for
    ``autocommit: true`` use ``async_engine.execution_options(isolation_level="AUTOCOMMIT")``.
    """
    class_, sync_session_class = async_classes(flavour)
    return {"class_": class_, "sync_session_class": sync_session_class, **_session_flags(flavour)}


def build_async_sessionmaker(
    engines: LoopEngines,
    flavour: SessionConfig,
    *,
    connection: AsyncConnection | None = None,
    sync_session_class: type[Session] | None = None,
    **extra: Any,
) -> LoopSessionmaker[AsyncSession]:
    """An async_sessionmaker with the flavour's class and exactly the flags it sets
    (:func:`build_async_sessionmaker_kwargs`), binding the running loop's engine of
    ``engines`` when called (``autocommit: true``: its AUTOCOMMIT variant).

    With ``connection`` (a test harness's): bound to it with
    ``join_transaction_mode="create_savepoint"``, as :func:`build_sessionmaker`.
    ``sync_session_class`` and ``extra``: as ``class_`` and ``extra`` there."""
    from dbconf.runtime.loop_sessionmaker import LoopSessionmaker

    if connection is not None:
        maker: LoopSessionmaker[AsyncSession] = LoopSessionmaker(
            engines,
            join_transaction_mode="create_savepoint",
            **build_async_sessionmaker_kwargs(flavour),
        )
        maker.configure(bind=connection)  # a bind set: the loop's engine is not used
        return maker
    kwargs = build_async_sessionmaker_kwargs(flavour)
    if sync_session_class is not None:
        kwargs["sync_session_class"] = sync_session_class
    return LoopSessionmaker(engines, autocommit=bool(flavour.autocommit), **kwargs, **extra)


def describe_pool(pool: Pool) -> dict[str, Any]:
    """The effective pool settings (for ``check`` reports): class, size, overflow, timeouts."""
    out: dict[str, Any] = {"class": type(pool).__name__}
    if isinstance(pool, QueuePool):
        out.update(size=pool.size(), max_overflow=pool._max_overflow, timeout=pool.timeout())
        out["use_lifo"] = bool(pool._pool.use_lifo)
    window = getattr(pool, "_dbconf_window", None)  # pool.pre_ping as a duration
    out.update(recycle=pool._recycle, pre_ping=pool._pre_ping if window is None else window)
    reset = pool._reset_on_return
    out["reset_on_return"] = reset.name.removeprefix("reset_") if reset is not None else "none"
    return out
