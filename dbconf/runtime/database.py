"""One named database of a profile: :class:`Database`, its lazy engine and session scopes.

Nothing connects and no engine is created until first use: ``Database.engine`` is built once,
lazily and thread-safely; sessionmakers are cached per flavour. The async half (the
``async_*`` methods, an engine per event loop) lives in :mod:`dbconf.runtime.async_database`.

:meth:`Database.close` closes for good: idle pooled connections now, checked-out ones when they
are returned, and every later use raises :class:`~dbconf.errors.RegistryClosedError`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from dbconf.config import DatabaseConfig, SessionConfig
from dbconf.errors import ConfigError, Problem, RegistryClosedError, UnknownSessionFlavourError
from dbconf.pooling.leaks import PoolStatus, pool_status
from dbconf.replicas.makers import maker_kwargs, sync_route
from dbconf.replicas.router import Router
from dbconf.replicas.state import ReplicaStatus
from dbconf.runtime import testhooks
from dbconf.runtime.async_database import AsyncDatabase
from dbconf.runtime.builder import build_engine, build_sessionmaker, describe_pool
from dbconf.runtime.health import database_health
from dbconf.runtime.loops import close_returned
from dbconf.runtime.reports import (
    DatabaseReport,
    make_report,
    one_line,
    pooler_status,
    server_version,
)
from dbconf.sessions import resilience, retry_loops
from dbconf.sessions.session import session_scope, transaction_scope
from dbconf.sessions.session_classes import sync_class

__all__ = ["Database"]

P = ParamSpec("P")
R = TypeVar("R")


class Database(AsyncDatabase):
    """One named database of a profile: its config, its engine, its session flavours."""

    def __init__(self, name: str, config: DatabaseConfig) -> None:
        self.name = name
        self.config = config
        self._lock = threading.Lock()
        self._engine: sa.Engine | None = None
        self._makers: dict[str, sessionmaker[Session]] = {}
        self._closed = False
        self._router: Router | None = None
        self._init_async()

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

    @property
    def router(self) -> Router | None:
        """The read-replica router (:mod:`dbconf.replicas`), built on first access; None for a
        database without ``replicas:``. Building it neither connects nor starts the probe."""
        if not self.config.replicas:
            return None
        self._require_open()
        router = self._router
        if router is None:
            with self._lock:
                self._require_open()
                if self._router is None:
                    self._router = Router(self.name, self.config, lambda: self.engine)
                router = self._router
        return router

    def replica_status(self) -> list[ReplicaStatus]:
        """Each replica as last probed: name, masked url, state (up / ejected / unknown), lag,
        why it is out, when it was checked; [] without replicas. No I/O here: the probe
        thread measures (this call starts it if no routed session did yet)."""
        router = self.router
        return router.status() if router is not None else []

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

        While a test harness binds this database (:mod:`dbconf.runtime.testhooks`, the pytest
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
            router = self.router
            route = None if router is None else sync_route(router, settings, lambda: engine)
            routed = {} if route is None else maker_kwargs(route, sync_class(settings), flavour)
            with self._lock:
                maker = self._makers.get(flavour)
                if maker is None:
                    maker = self._makers[flavour] = build_sessionmaker(engine, settings, **routed)
        return maker

    def session(self, flavour: str = "default") -> AbstractContextManager[Session]:
        """A session scope: commit on success, rollback on any exception, always close."""
        self._flavour(flavour)
        return session_scope(lambda: self.sessionmaker(flavour)())

    def transaction(self, flavour: str = "default") -> AbstractContextManager[Session]:
        """A ``session.begin()`` scope; ``begin_nested()`` savepoints work inside it."""
        self._flavour(flavour)
        return transaction_scope(lambda: self.sessionmaker(flavour)())

    def _policy(
        self,
        flavour: str,
        origin: str,
        retries: int | None,
        backoff: float | None,
        max_backoff: float | None,
    ) -> resilience.RetryPolicy:
        """The retry policy of a run_in_transaction call (sync or async); an autocommit
        flavour is refused: it has no transaction to retry."""
        if self._flavour(flavour).autocommit:
            problem = "is autocommit: it has no transaction to retry"
            raise ConfigError([Problem("", f"sessions.{flavour}", problem)])
        return resilience.RetryPolicy.resolve(
            self.config.retry,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            origin=origin,
        )

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
        See :mod:`dbconf.sessions.resilience`.
        """
        origin = "db.run_in_transaction() arguments in code"
        policy = self._policy(flavour, origin, retries, backoff, max_backoff)
        return retry_loops.run_in_transaction(
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
        return retry_loops.retrying(
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

    def pool_status(self) -> PoolStatus:
        """The sync pool now: size, checked_out, overflow (beyond size), idle, timeout, holders.

        ``holders`` (thread, acquiring file:line, age, transaction age) is filled only when
        ``leak_detection`` is set for this database; without it checkouts are not recorded and
        ``holders`` is empty. Counts are None for pools that keep none (null, static,
        singleton). Builds the engine if needed (that does not connect). For the async pool of
        the running event loop see :meth:`async_pool_status`.
        """
        return pool_status(self.name, self.engine)

    def dispose(self) -> None:
        """Close every pooled connection (checked-out ones close when they are returned); the
        async engines' too, as :meth:`close` says (``await db.adispose()`` in async code)."""
        self._dispose()

    def _dispose(self) -> asyncio.Future[Any] | None:
        with self._lock:
            engine, router = self._engine, self._router
        if engine is not None:
            engine.dispose()
        pending = self._async_engines.dispose_all()
        return _both(pending, router.dispose() if router is not None else None)

    def close(self) -> None:
        """Close for good: idle pooled connections now, checked-out ones when they are returned
        (never pooled again); from now on every use raises :class:`RegistryClosedError`.

        Async engines: that of a loop running in another thread is disposed in that loop,
        that of the loop running this call by a task scheduled on it (``await db.aclose()``
        waits for it instead), that of a stopped loop when the loop shuts down
        (``shutdown_asyncgens``); all close their checked-out connections when returned."""
        self._close()

    def _close(self) -> asyncio.Future[Any] | None:
        with self._lock:
            self._closed = True
            engine, router = self._engine, self._router
        if engine is not None:
            # pool listeners pass to the pool dispose() makes, which a session that was
            # already open may still check a connection out of
            sa.event.listen(engine.pool, "checkin", close_returned)
            engine.dispose()
        pending = self._async_engines.dispose_all(close=True)
        return _both(pending, router.close() if router is not None else None)

    @property
    def closed(self) -> bool:
        return self._closed

    def health(self) -> dict[str, Any]:
        """:meth:`check` and the pool counts as JSON-ready data, for readiness probes
        (:func:`dbconf.runtime.health.database_health`: ``status`` is ``up`` or ``down``; no
        password in it). Never raises for an unreachable server."""
        report = self.check()
        return database_health(report, self.pool_status() if self.engine_built else None)

    def check(self) -> DatabaseReport:
        """Connect, run a round trip, and report; never raises for an unreachable server.
        Each replica is probed once, in this thread (``replicas`` of the report)."""
        self._require_open()
        url = self.config.sqlalchemy_url
        try:
            engine = self.engine
            pool = describe_pool(engine.pool)
            with engine.connect() as conn:
                start = time.perf_counter()
                conn.execute(sa.text("SELECT 1")).scalar_one()
                latency = (time.perf_counter() - start) * 1000
                version = server_version(conn.dialect.server_version_info)
        except Exception as exc:
            error = one_line(self.config, exc)
            return make_report(
                self.name, self.config, url, False, error=error, replicas=self._check_replicas()
            )
        return make_report(
            self.name,
            self.config,
            url,
            True,
            server_version=version,
            latency_ms=round(latency, 3),
            pool=pool,
            replicas=self._check_replicas(),
            pooler=pooler_status(self.config),
        )

    def _check_replicas(self) -> tuple[ReplicaStatus, ...]:
        """Each replica probed now (for :meth:`check`); () without replicas."""
        router = self.router
        return tuple(router.probe_now()) if router is not None else ()


def _both(
    first: asyncio.Future[Any] | None, second: asyncio.Future[Any] | None
) -> asyncio.Future[Any] | None:
    """One future for two pending disposals (either may be None)."""
    if first is None or second is None:
        return first or second
    return asyncio.gather(first, second)
