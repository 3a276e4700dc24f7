"""What every dialect module provides, and the registry :func:`dialect_for`.

A :class:`Dialect` is everything dbconf knows about one family of backends: its drivers and the
extra of pyproject.toml that installs each, the drivers whose timeouts dbconf translates, the
default port, the per-connection setup, the error codes it classifies and the server-limit
query. The modules of this package import only SQLAlchemy and each other (never the config
models or any layer above): they read a database's settings through the small protocols
below, which :class:`dbconf.config.DatabaseConfig` satisfies. Adding a driver means editing the
one module of its dialect.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

__all__ = [
    "TIMEOUT_KEYS",
    "Dialect",
    "ReplicaMeasurement",
    "Settings",
    "Timeouts",
    "dialect_for",
    "ms",
    "register",
    "whole_seconds",
]


TIMEOUT_KEYS = ("connect", "statement", "lock", "idle_in_transaction")


class Timeouts(Protocol):
    @property
    def connect(self) -> float | None: ...
    @property
    def statement(self) -> float | None: ...
    @property
    def lock(self) -> float | None: ...
    @property
    def idle_in_transaction(self) -> float | None: ...


class Settings(Protocol):
    """The part of a database's configuration the dialects read."""

    @property
    def timeouts(self) -> Timeouts: ...
    @property
    def application_name(self) -> str | None: ...
    @property
    def sqlite(self) -> Any: ...
    @property
    def disconnect_sqlstates(self) -> Sequence[str] | None: ...
    @property
    def pool(self) -> Any: ...
    @property
    def is_sqlite_memory(self) -> bool: ...
    @property
    def pooler(self) -> Any: ...  # a declared pooler (.mode, see dialects/pgbouncer.py) or None


def ms(seconds: float) -> int:
    """Seconds to whole milliseconds, rounded up (1e-6 guards float noise: 0.1 s → 100 ms)."""
    return math.ceil(round(seconds * 1000, 6))


def whole_seconds(seconds: float) -> int:
    return math.ceil(round(seconds, 6))


def _no_setup(engine: sa.Engine, cfg: Settings) -> None:
    return None


def _nothing(cfg: Settings) -> dict[str, Any]:
    return {}


def _pre_ping(cfg: Settings) -> dict[str, Any]:
    return {"pool_pre_ping": True}


def _no_lock_failure(orig: BaseException | None, said: str, cfg: Settings) -> str | None:
    return None


@dataclass(frozen=True)
class ReplicaMeasurement:
    """One probe of a read replica, made through a connection to it."""

    # seconds the replica's data is behind its primary; None: it is not replicating
    lag: float | None
    # the position it has replayed up to (PostgreSQL: the replay LSN as an int); None: unknown
    position: int | None = None
    # why it cannot serve (not replicating, not a replica, …); None: it can
    reason: str | None = None


@dataclass(frozen=True)
class Dialect:
    """One family of backends (``backends``: the SQLAlchemy backend names it covers)."""

    name: str
    backends: tuple[str, ...]
    # sync driver → the pyproject extra that installs it (None: dbconf ships no extra for it)
    drivers: Mapping[str, str | None]
    # the drivers dbconf translates timeouts/application_name for
    translated_drivers: frozenset[str]
    # driver arguments (connect_args) for the translated settings
    driver_args: Callable[[Settings], dict[str, Any]]
    # engine pool arguments dbconf sets when the user does not (a server: pre_ping on)
    pool_defaults: Callable[[Settings], dict[str, Any]] = _pre_ping
    # driver arguments dbconf sets unless the user gives them in connect_args
    connect_defaults: Callable[[Settings], dict[str, Any]] = _nothing
    default_port: int | None = None
    # setup of a new engine (SET SESSION, pragmas, BEGIN, disconnect SQLSTATEs)
    setup: Callable[[sa.Engine, Settings], None] = _no_setup
    # what a lock that was not available means and what to do, from the driver's exception
    # (``said``: its first line); None: that exception is not a failure to get a lock
    lock_failure: Callable[[BaseException | None, str, Settings], str | None] = _no_lock_failure
    # (max_connections, reserved) read through a connection; None: no server limit
    server_limit: Callable[[sa.Connection], tuple[int, int]] | None = None
    # a URL scheme without a driver → the backend+driver dbconf uses for it
    default_drivers: Mapping[str, str] = field(default_factory=dict)
    # per driver: the URL query parameters it takes, the connect_args it takes (a driver not
    # listed is not checked), the query parameters that name a URL part (→ the URL field)
    query_keys: Mapping[str, frozenset[str]] = field(default_factory=dict)
    connect_args: Mapping[str, frozenset[str]] = field(default_factory=dict)
    query_parts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # the drivers (sync and async) that take several hosts and target_session_attrs
    # (dbconf.config.failover); empty: the dialect has no failover URLs
    multi_host_drivers: frozenset[str] = frozenset()
    # async driver → the pyproject extra that installs it (with SQLAlchemy's asyncio extra)
    async_drivers: Mapping[str, str | None] = field(default_factory=dict)
    # the async driver a database uses when neither its URL nor async_driver names one
    default_async_driver: str | None = None
    # drivers of one package that pair up (psycopg ↔ psycopg_async): a URL naming one gets the
    # other for its other side instead of the dialect's default, so one extra serves both
    twins: Mapping[str, str] = field(default_factory=dict)
    # async driver → its driver arguments for the translated settings (a driver not listed
    # cannot honour them: a ConfigError)
    async_driver_args: Mapping[str, Callable[[Settings], dict[str, Any]]] = field(
        default_factory=dict
    )
    # --- read replicas (None: the dialect has no replicas) ---
    # measure a replica through a connection to it (lag, replayed position, or why not)
    measure_replica: Callable[[sa.Connection], ReplicaMeasurement] | None = None
    # the write position reached by a primary connection that just committed (read your
    # writes); None here: the dialect has no positions, read-your-writes goes by measured lag
    write_position: Callable[[sa.Connection], int | None] | None = None
    # SQL making every transaction of a connection read-only (run once per new connection of a
    # replica engine), and SQL making the next transaction read-only (a replica-role session
    # that fell back to the primary)
    read_only_session_sql: str | None = None
    read_only_transaction_sql: str | None = None

    def is_async(self, driver: str) -> bool:
        """Whether ``driver`` (a name without the backend) is one of this dialect's async
        drivers."""
        return driver in self.async_drivers

    def translation(self, driver: str) -> Callable[[Settings], dict[str, Any]] | None:
        """The driver arguments function of ``driver`` (sync or async), None: not translated."""
        if driver in self.translated_drivers:
            return self.driver_args
        return self.async_driver_args.get(driver)

    def extra_for(self, driver: str) -> str | None:
        """The pyproject extra that installs ``driver`` (sync or async), None: no extra."""
        return self.drivers.get(driver) or self.async_drivers.get(driver)

    def sync_drivername(self, backend: str, async_driver: str | None = None) -> str:
        """``backend+driver`` of the sync driver dbconf uses when a URL names none (or names
        ``async_driver``: its twin, if it has one)."""
        twin = self.twins.get(async_driver or "")
        return f"{backend}+{twin}" if twin else self.default_drivers.get(backend, backend)

    def async_driver_for(self, sync_driver: str) -> str | None:
        """The async driver dbconf uses beside ``sync_driver`` when none is named: its twin,
        else the dialect's default."""
        return self.twins.get(sync_driver) or self.default_async_driver

    @property
    def known_drivers(self) -> tuple[str, ...]:
        """Every ``backend[+driver]`` spelling of the drivers dbconf knows."""
        return tuple(
            name
            for backend in self.backends
            for name in (
                backend,
                *(f"{backend}+{d}" for d in self.drivers),
                *(f"{backend}+{d}" for d in self.async_drivers),
            )
        )


# Filled by the dialect modules as dbconf/dialects/__init__.py imports them (a package's
# __init__ runs before any import of its modules completes, so users see it full).
_REGISTRY: dict[str, Dialect] = {}


def register(dialect: Dialect) -> Dialect:
    for backend in dialect.backends:
        _REGISTRY[backend] = dialect
    return dialect


def dialect_for(backend: str) -> Dialect | None:
    """The dialect of a SQLAlchemy backend name (``"mariadb"`` → the MySQL dialect), or None."""
    return _REGISTRY.get(backend)
