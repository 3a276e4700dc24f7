"""From a validated :class:`~dbconf.config.DatabaseConfig` to an Engine and sessionmakers.

:func:`engine_kwargs` is pure: it returns exactly what reaches :func:`sqlalchemy.create_engine`,
which is only what the user wrote plus dbconf's documented defaults:

- ``hide_parameters=True`` (the model default), so bound values stay out of errors and logs;
- ``pool_pre_ping=True`` for server backends unless ``pool.pre_ping`` is set;
- SQLite file database: ``check_same_thread=False`` (SQLAlchemy's own default, made explicit);
- SQLite in-memory database: one connection shared through a ``StaticPool`` with
  ``check_same_thread=False``, so every thread sees the same database.

Timeouts and ``application_name`` are translated per dialect, by the modules of
:mod:`dbconf.dialects` (which also set up each new connection: MariaDB/MySQL ``SET SESSION``,
SQLite pragmas, ``BEGIN`` and statement deadline).

A duration of 0 disables the timeout (as on the servers); for pymysql ``connect: 0`` means
"no connect timeout" (``connect_timeout=None``). A driver argument that the user also gives in
``connect_args`` or the URL query for one of these settings is a :class:`ConfigError`, never a
silent override (found by :mod:`dbconf.conflicts`). ``-c`` options are appended to any
``options`` the user gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, Pool, QueuePool, SingletonThreadPool, StaticPool

from dbconf.config import DatabaseConfig, SessionConfig, reveal
from dbconf.conflicts import conflicts, given
from dbconf.dialects import dialect_for
from dbconf.errors import ConfigError, Problem
from dbconf.forking import register_engine
from dbconf.leaks import install as install_leak_detection
from dbconf.leaks import pool_class_kwargs
from dbconf.resilience import install_error_types

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from dbconf.loops import LoopEngines, LoopSessionmaker

__all__ = [
    "POOL_CLASSES",
    "build_async_engine",
    "build_async_sessionmaker",
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


def _unsupported(cfg: DatabaseConfig, keys: list[str], driver: str) -> ConfigError:
    dialect = dialect_for(cfg.backend)
    drivers = dialect.translated_drivers if dialect is not None else frozenset()
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


def _driver_args(cfg: DatabaseConfig, use_async: bool) -> dict[str, Any]:
    """connect_args for the translated settings (SET statements are done on connect)."""
    keys = _translated(cfg)
    dialect = dialect_for(cfg.backend)
    if not keys or dialect is None:
        return {}
    driver = _driver(cfg, use_async)
    if driver not in dialect.translated_drivers:
        raise _unsupported(cfg, keys, driver)
    return dialect.driver_args(cfg)


def _connect_args(cfg: DatabaseConfig, use_async: bool) -> dict[str, Any]:
    user = reveal(cfg.connect_args or {})
    ours = _driver_args(cfg, use_async)
    problems = conflicts(cfg, ours)
    if problems:
        raise ConfigError(problems)
    if "options" in ours:
        ours["options"] = " ".join([*given(cfg, "options")[:1], ours["options"]])
    dialect = dialect_for(cfg.backend)
    defaults = dialect.connect_defaults(cfg) if dialect is not None else {}
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
    if pool.pre_ping is not None:
        out["pool_pre_ping"] = pool.pre_ping
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
    """Create the engine of database ``name`` (no connection is made until first use)."""
    kwargs = {**engine_kwargs(cfg), **pool_class_kwargs(cfg)}  # QueuePool → leaks.QueuePool
    engine = sa.create_engine(cfg.sqlalchemy_url, **kwargs)
    dialect = dialect_for(cfg.backend)
    if dialect is not None:
        dialect.setup(engine, cfg)  # SET SESSION, pragmas, BEGIN, disconnect SQLSTATEs
    install_error_types(engine, name, cfg)  # DisconnectError, StatementTimeoutError (resilience)
    install_leak_detection(engine, name, cfg)  # pool naming, leak_detection (dbconf/leaks.py)
    register_engine(engine)  # fresh pool in forked children (dbconf/forking.py)
    return engine


def build_async_engine(name: str, cfg: DatabaseConfig) -> AsyncEngine:
    """Create the async engine of database ``name`` on ``cfg.async_url``: the same pool,
    timeouts, typed errors, leak detection and fork safety as :func:`build_engine`, installed
    on its ``sync_engine`` (no connection is made until first use)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    url = cfg.async_url
    if url is None:
        raise ConfigError(
            [
                Problem(
                    "",
                    "async_driver",
                    f"dbconf knows no async driver for {cfg.backend}; set async_driver to the "
                    "name of one SQLAlchemy supports",
                )
            ]
        )
    kwargs = {**engine_kwargs(cfg, use_async=True), **pool_class_kwargs(cfg, use_async=True)}
    engine = create_async_engine(url, **kwargs)
    sync = engine.sync_engine
    dialect = dialect_for(cfg.backend)
    if dialect is not None:
        dialect.setup(sync, cfg)
    install_error_types(sync, name, cfg)
    install_leak_detection(sync, name, cfg)
    register_engine(sync)
    return engine


def build_sessionmaker(
    engine: sa.Engine, flavour: SessionConfig, *, connection: sa.Connection | None = None
) -> sessionmaker[Session]:
    """A sessionmaker with exactly the flags the flavour sets.

    ``autocommit: true`` binds the sessions to ``engine.execution_options(
    isolation_level="AUTOCOMMIT")``: every statement is committed by the server as it runs
    (SQLAlchemy 2 has no Session-level autocommit).

    With ``connection`` (a test harness's, see :mod:`dbconf.testhooks`) the sessions are
    bound to it with ``join_transaction_mode="create_savepoint"``, autocommit flavours too:
    they join its transaction and their commits release savepoints.
    """
    kwargs: dict[str, Any] = {}
    for key in ("autoflush", "expire_on_commit", "autobegin", "twophase"):
        value = getattr(flavour, key)
        if value is not None:
            kwargs[key] = value
    if flavour.info is not None:
        kwargs["info"] = dict(flavour.info)
    if connection is not None:
        return sessionmaker(
            bind=connection, class_=Session, join_transaction_mode="create_savepoint", **kwargs
        )
    bind = engine.execution_options(isolation_level="AUTOCOMMIT") if flavour.autocommit else engine
    return sessionmaker(bind=bind, class_=Session, **kwargs)


def _async_sessionmaker_kwargs(flavour: SessionConfig) -> dict[str, Any]:
    """The async_sessionmaker flags of ``flavour``: those of :func:`build_sessionmaker`."""
    kwargs: dict[str, Any] = {}
    for key in ("autoflush", "expire_on_commit", "autobegin", "twophase"):
        value = getattr(flavour, key)
        if value is not None:
            kwargs[key] = value
    if flavour.info is not None:
        kwargs["info"] = dict(flavour.info)
    return kwargs


def build_async_sessionmaker(
    engines: LoopEngines, flavour: SessionConfig
) -> LoopSessionmaker[AsyncSession]:
    """An async_sessionmaker with exactly the flags the flavour sets, binding the running
    loop's engine of ``engines`` when called (``autocommit: true``: its AUTOCOMMIT variant)."""
    from sqlalchemy.ext.asyncio import AsyncSession

    from dbconf.loops import LoopSessionmaker

    return LoopSessionmaker(
        engines,
        autocommit=bool(flavour.autocommit),
        class_=AsyncSession,
        **_async_sessionmaker_kwargs(flavour),
    )


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
