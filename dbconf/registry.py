"""The runtime objects: a :class:`Registry` of named :class:`Database` objects.

Nothing connects and no engine is created until first use: ``Database.engine`` is built once,
lazily and thread-safely; sessionmakers are cached per flavour.

Leaving a ``with Registry`` block closes it (:meth:`Registry.close`): every idle pooled
connection is closed, a connection still checked out (a thread mid-scope) is closed when it is
returned instead of going back to a pool, and any further use of the registry or of its
databases raises :class:`~dbconf.errors.RegistryClosedError` instead of building a new pool.
:meth:`Registry.dispose` only empties the pools; the registry stays usable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from dbconf import resilience, testhooks
from dbconf.builder import build_engine, build_sessionmaker, describe_pool
from dbconf.config import DatabaseConfig, ProfileConfig, SessionConfig
from dbconf.errors import (
    ConfigError,
    Problem,
    RegistryClosedError,
    UnknownDatabaseError,
    UnknownSessionFlavourError,
)
from dbconf.leaks import PoolStatus, pool_status
from dbconf.loader import load_profile
from dbconf.origin import KeyPath, Origin
from dbconf.rules import build_problems
from dbconf.session import session_scope, transaction_scope

__all__ = ["Database", "DatabaseReport", "Registry", "load"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class DatabaseReport:
    """The result of :meth:`Registry.check` for one database. Nothing in it holds a password."""

    name: str
    ok: bool
    dialect: str
    driver: str
    url: str
    server_version: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    pool: Mapping[str, Any] = field(default_factory=dict)
    timeouts: Mapping[str, float] = field(default_factory=dict)

    def render(self) -> str:
        """Human-readable lines for ``dbconf check`` (the URL is masked)."""
        head = f"{self.name}: {self.dialect}+{self.driver} {self.url}"
        if not self.ok:
            return f"{head}\n  UNREACHABLE: {self.error}"
        pool = " ".join(f"{k}={v}" for k, v in self.pool.items())
        timeouts = " ".join(f"{k}={v:g}s" for k, v in self.timeouts.items()) or "(driver defaults)"
        return (
            f"{head}\n  ok: server {self.server_version}, round trip {self.latency_ms:.1f} ms"
            f"\n  pool: {pool}\n  timeouts: {timeouts}"
        )


class Database:
    """One named database of a profile: its config, its engine, its session flavours."""

    def __init__(self, name: str, config: DatabaseConfig) -> None:
        self.name = name
        self.config = config
        self._lock = threading.Lock()
        self._engine: sa.Engine | None = None
        self._makers: dict[str, sessionmaker[Session]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<Database {self.name} {self.config.masked_url()}>"

    @property
    def engine(self) -> sa.Engine:
        """The engine, created on first access (creating it does not connect)."""
        self._require_open()
        engine = self._engine
        if engine is None:
            with self._lock:
                self._require_open()
                if self._engine is None:
                    self._engine = build_engine(self.name, self.config)
                engine = self._engine
        return engine

    def _require_open(self) -> None:
        if self._closed:
            raise RegistryClosedError(self.name)

    @property
    def engine_built(self) -> bool:
        return self._engine is not None

    @property
    def flavours(self) -> tuple[str, ...]:
        return tuple(self.config.sessions)

    def _flavour(self, flavour: str) -> SessionConfig:
        self._require_open()
        try:
            return self.config.sessions[flavour]
        except KeyError:
            raise UnknownSessionFlavourError(flavour, self.flavours, self.name) from None

    def sessionmaker(self, flavour: str = "default") -> sessionmaker[Session]:
        """The sessionmaker of ``flavour`` (``sessions:`` in the config), built once.

        While a test harness binds this database (:mod:`dbconf.testhooks`, the pytest
        plugin's rollback per test), a sessionmaker bound to the harness's connection instead;
        the cached one is untouched and used again once the binding ends.
        """
        self._require_open()
        binding = testhooks.binding_for(self.name, self.config)
        if binding is not None:
            return build_sessionmaker(
                self.engine, self._flavour(flavour), connection=binding.connection
            )
        maker = self._makers.get(flavour)
        if maker is None:
            settings = self._flavour(flavour)
            engine = self.engine
            with self._lock:
                maker = self._makers.get(flavour)
                if maker is None:
                    maker = self._makers[flavour] = build_sessionmaker(engine, settings)
        return maker

    def session(self, flavour: str = "default") -> AbstractContextManager[Session]:
        """A session scope: commit on success, rollback on any exception, always close."""
        self._flavour(flavour)
        return session_scope(lambda: self.sessionmaker(flavour)())

    def transaction(self, flavour: str = "default") -> AbstractContextManager[Session]:
        """A ``session.begin()`` scope; ``begin_nested()`` savepoints work inside it."""
        self._flavour(flavour)
        return transaction_scope(lambda: self.sessionmaker(flavour)())

    def run_in_transaction(
        self,
        fn: Callable[[Session], R],
        *,
        retries: int | None = None,
        backoff: float | None = None,
        max_backoff: float | None = None,
        flavour: str = "default",
    ) -> R:
        """Run ``fn(session)`` in one transaction, commit, return its result; re-run it in a new
        transaction on serialization failure, deadlock or disconnect, with jittered backoff.

        Defaults come from the database's ``retry:`` block, then 3 retries, 50 ms, 2 s. A
        disconnect during COMMIT leaves the outcome unknown: ``fn`` must be idempotent.
        See :mod:`dbconf.resilience`.
        """
        if self._flavour(flavour).autocommit:
            problem = "is autocommit: it has no transaction to retry"
            raise ConfigError([Problem("", f"sessions.{flavour}", problem)])
        policy = resilience.RetryPolicy.resolve(
            self.config.retry,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            origin="db.run_in_transaction() arguments in code",
        )
        return resilience.run_in_transaction(
            lambda: self.sessionmaker(flavour)(), fn, policy=policy, database=self.name
        )

    def retrying(
        self,
        *,
        retries: int | None = None,
        backoff: float | None = None,
        max_backoff: float | None = None,
        flavour: str = "default",
    ) -> Callable[[Callable[Concatenate[Session, P], R]], Callable[P, R]]:
        """Decorator form of :meth:`run_in_transaction` for ``fn(session, *args, **kwargs)``;
        the decorated function is called without the session."""
        self._flavour(flavour)
        resilience.RetryPolicy.resolve(  # bad arguments fail here, where the decorator is used
            self.config.retry,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            origin="db.retrying() arguments in code",
        )
        return resilience.retrying(
            lambda fn: self.run_in_transaction(
                fn, retries=retries, backoff=backoff, max_backoff=max_backoff, flavour=flavour
            )
        )

    def dependency(self, flavour: str = "default") -> Callable[[], Generator[Session, None, None]]:
        """A generator dependency (FastAPI ``Depends``) with :meth:`session`'s guarantees.

        The flavour is checked now, so a typo fails when the app is defined; the engine is
        still only built on the first request.
        """
        self._flavour(flavour)

        def get_session() -> Generator[Session, None, None]:
            with self.session(flavour) as session:
                yield session

        get_session.__name__ = f"get_{self.name}_{flavour}_session"
        get_session.__qualname__ = get_session.__name__
        return get_session

    @asynccontextmanager
    async def async_session(self, flavour: str = "default") -> AsyncIterator[Session]:
        """``async with db.async_session() as s``: the same scope for async code.

        The session is a synchronous :class:`~sqlalchemy.orm.Session`: its queries, commit and
        rollback block the event loop while they run (fine for short queries; use an async
        driver and ``sqlalchemy.ext.asyncio`` for heavy async workloads).
        """
        with self.session(flavour) as session:
            yield session

    def pool_status(self) -> PoolStatus:
        """The pool now: size, checked_out, overflow (beyond size), idle, timeout, holders.

        ``holders`` (thread, acquiring file:line, age, transaction age) is filled only when
        ``leak_detection`` is set for this database; without it checkouts are not recorded and
        ``holders`` is empty. Counts are None for pools that keep none (null, static,
        singleton). Builds the engine if needed (that does not connect).
        """
        return pool_status(self.name, self.engine)

    def dispose(self) -> None:
        """Close every pooled connection (checked-out ones close when they are returned)."""
        with self._lock:
            engine = self._engine
        if engine is not None:
            engine.dispose()

    def close(self) -> None:
        """Close for good: idle pooled connections now, checked-out ones when they are returned
        (never pooled again); from now on every use raises :class:`RegistryClosedError`."""
        with self._lock:
            self._closed = True
            engine = self._engine
        if engine is not None:
            # pool listeners pass to the pool dispose() makes, which a session that was
            # already open may still check a connection out of
            event.listen(engine.pool, "checkin", _close_returned)
            engine.dispose()

    @property
    def closed(self) -> bool:
        return self._closed

    def check(self) -> DatabaseReport:
        """Connect, run a round trip, and report; never raises for an unreachable server."""
        self._require_open()
        url = self.config.sqlalchemy_url

        def report(ok: bool, **kw: Any) -> DatabaseReport:
            return DatabaseReport(
                name=self.name,
                ok=ok,
                dialect=url.get_backend_name(),
                driver=url.get_driver_name(),
                url=self.config.masked_url(),
                timeouts=self.config.timeouts.model_dump(exclude_none=True),
                **kw,
            )

        try:
            engine = self.engine
            pool = describe_pool(engine.pool)
            with engine.connect() as conn:
                start = time.perf_counter()
                conn.execute(sa.text("SELECT 1")).scalar_one()
                latency = (time.perf_counter() - start) * 1000
                info = conn.dialect.server_version_info
                version = ".".join(str(part) for part in info) if info else None
        except Exception as exc:
            return report(False, error=self._one_line(exc))
        return report(True, server_version=version, latency_ms=round(latency, 3), pool=pool)

    def _one_line(self, exc: BaseException) -> str:
        orig = getattr(exc, "orig", None) or exc
        name = type(orig).__name__
        if not str(orig).strip():
            return name
        password = self.config.sqlalchemy_url.password
        return f"{name}: {resilience.first_line(orig, str(password) if password else None)}"


def _close_returned(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    """A connection returned to a closed database's pool: close it instead of pooling it."""
    record.invalidate()


class Registry:
    """The databases of one loaded profile, by name. A context manager that closes them."""

    def __init__(
        self,
        config: ProfileConfig,
        *,
        profile: str = "default",
        origins: Mapping[KeyPath, Origin] | None = None,
    ) -> None:
        self.profile = profile
        self.config = config
        self.origins: Mapping[KeyPath, Origin] = origins or {}
        # The loader has run these checks already; a Registry built from a model runs them
        # too (they only import drivers and translate settings: well under 1 ms a database).
        problems = build_problems(config.databases, self.origins, profile)
        if problems:
            raise ConfigError(problems)
        self._databases = {name: Database(name, db) for name, db in config.databases.items()}
        self._closed = False

    def __repr__(self) -> str:
        return f"<Registry profile={self.profile!r} databases={list(self._databases)}>"

    @property
    def names(self) -> tuple[str, ...]:
        """Database names in declaration order."""
        return tuple(self._databases)

    @property
    def default(self) -> Database:
        return self[self.config.default_name]

    def __getitem__(self, name: str) -> Database:
        try:
            db = self._databases[name]
        except KeyError:
            raise UnknownDatabaseError(name, self.names, self.profile) from None
        if self._closed:
            raise RegistryClosedError(name)
        return db

    def __contains__(self, name: object) -> bool:
        return name in self._databases

    def __iter__(self) -> Iterator[Database]:
        return iter(self._databases.values())

    def __len__(self) -> int:
        return len(self._databases)

    def check(self, names: list[str] | None = None) -> list[DatabaseReport]:
        """Connect to each database (or those named) and report; see :meth:`Database.check`."""
        return [self[name].check() for name in (names or self.names)]

    def dispose(self) -> None:
        """Dispose every engine that was built (the registry stays usable: new pools)."""
        for db in self._databases.values():
            db.dispose()

    def close(self) -> None:
        """Close every database (:meth:`Database.close`); what ``with`` does at the end."""
        self._closed = True
        for db in self._databases.values():
            db.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def load(
    profile: str | None = None,
    *,
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Registry:
    """Load ``profile`` (validated now; no engine, no connection until first use).

    During a test run of dbconf's pytest plugin, the test profile's databases are pointed at
    the test databases here (:func:`dbconf.testhooks.load_overrides`).
    """
    loaded = load_profile(profile, path=path, environ=environ, overrides=overrides)
    if loaded.path is not None:
        extra = testhooks.load_overrides(loaded.name, loaded.path)
        if extra:
            combined = {**(overrides or {}), **extra}
            loaded = load_profile(loaded.name, path=path, environ=environ, overrides=combined)
    return Registry(loaded.config, profile=loaded.name, origins=loaded.origins)
