"""The async half of :class:`~dbconf.runtime.database.Database`: the twins of its sync methods.

``db.async_engine`` is the running event loop's :class:`~sqlalchemy.ext.asyncio.AsyncEngine`
(one per loop, built lazily from the same config on ``async_url``: see :mod:`dbconf.runtime.loops`
for why and for its lifetime); ``db.async_sessionmaker(flavour)`` is built once per flavour and
binds the running loop's engine when called, so it can be created at import time and used from
any loop. The scopes are those of :mod:`dbconf.sessions.session` (commit / rollback or invalidate on
any exception, cancellation included / always close); :meth:`run_in_transaction_async` shares the
retry decision and backoff of the sync loop (:mod:`dbconf.sessions.resilience`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from dbconf.config import DatabaseConfig, SessionConfig
from dbconf.pooling.leaks import PoolStatus, pool_status
from dbconf.replicas.makers import async_route, maker_kwargs
from dbconf.runtime import testhooks
from dbconf.runtime.builder import build_async_engine, build_async_sessionmaker, describe_pool
from dbconf.runtime.health import database_health
from dbconf.runtime.loops import LoopEngines
from dbconf.runtime.reports import (
    DatabaseReport,
    make_report,
    one_line,
    pooler_status,
    server_version,
)
from dbconf.sessions import resilience, retry_loops
from dbconf.sessions.session import async_session_scope, async_transaction_scope
from dbconf.sessions.session_classes import async_classes

__all__ = ["AsyncDatabase"]

if TYPE_CHECKING:  # importing sqlalchemy.ext.asyncio needs greenlet (the async extras)
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from dbconf.replicas.router import Router
    from dbconf.replicas.state import ReplicaStatus
    from dbconf.runtime.loop_sessionmaker import LoopSessionmaker

R = TypeVar("R")


class AsyncDatabase:
    """Mixin of :class:`~dbconf.runtime.database.Database`: everything ``async``."""

    name: str
    config: DatabaseConfig
    _lock: threading.Lock
    _async_engines: LoopEngines
    _async_makers: dict[str, LoopSessionmaker[AsyncSession]]

    if TYPE_CHECKING:

        def _require_open(self) -> None: ...

        @property
        def router(self) -> Router | None: ...

        def _flavour(self, flavour: str) -> SessionConfig: ...

        def _policy(
            self,
            flavour: str,
            origin: str,
            retries: int | None,
            backoff: float | None,
            max_backoff: float | None,
        ) -> resilience.RetryPolicy: ...

        def _dispose(self) -> asyncio.Future[Any] | None: ...

        def _close(self) -> asyncio.Future[Any] | None: ...

        def _check_replicas(self) -> tuple[ReplicaStatus, ...]: ...

    def _init_async(self) -> None:
        self._async_engines = LoopEngines(self.name, self._build_async_engine)
        self._async_makers = {}

    def _build_async_engine(self) -> AsyncEngine:
        self._require_open()
        return build_async_engine(self.name, self.config)

    @property
    def async_engine(self) -> AsyncEngine:
        """The running event loop's async engine, built on first access in that loop (that
        does not connect). Outside a running loop: :class:`~dbconf.errors.NoEventLoopError`."""
        self._require_open()
        return self._async_engines.current()

    @property
    def async_engines_built(self) -> int:
        """How many async engines (one per event loop still alive) exist now."""
        return len(self._async_engines)

    def async_sessionmaker(self, flavour: str = "default") -> LoopSessionmaker[AsyncSession]:
        """The async_sessionmaker of ``flavour``, built once; its sessions bind the running
        loop's engine (so it may be created outside any loop, and serves every loop).

        While a test harness binds this database (:mod:`dbconf.runtime.testhooks`), one bound to the
        harness's async connection instead; the cached one is untouched. On a database with
        ``replicas:`` the sessions route through the same sync session classes as
        :meth:`~dbconf.runtime.database.Database.sessionmaker` (their ``sync_session_class``)."""
        self._require_open()
        connection = testhooks.async_binding_for(self.name, self.config)
        if connection is not None:
            settings = self._flavour(flavour)
            return build_async_sessionmaker(self._async_engines, settings, connection=connection)
        maker = self._async_makers.get(flavour)
        if maker is None:
            settings = self._flavour(flavour)
            router = self.router
            route = None if router is None else async_route(router, settings, self._async_engines)
            routed: dict[str, Any] = {}
            if route is not None:
                kwargs = maker_kwargs(route, async_classes(settings)[1], flavour)
                routed = {"sync_session_class": kwargs.pop("class_"), **kwargs}
            with self._lock:
                maker = self._async_makers.get(flavour)
                if maker is None:
                    maker = build_async_sessionmaker(self._async_engines, settings, **routed)
                    self._async_makers[flavour] = maker
        return maker

    def async_session(self, flavour: str = "default") -> AbstractAsyncContextManager[AsyncSession]:
        """``async with db.async_session() as s``: a real AsyncSession; commit on success, roll
        back (or invalidate, when interrupted) on any exception, always close."""
        self._flavour(flavour)
        return async_session_scope(lambda: self.async_sessionmaker(flavour)())

    def async_transaction(
        self, flavour: str = "default"
    ) -> AbstractAsyncContextManager[AsyncSession]:
        """An ``await session.begin()`` scope; ``await s.begin_nested()`` savepoints inside."""
        self._flavour(flavour)
        return async_transaction_scope(lambda: self.async_sessionmaker(flavour)())

    async def run_in_transaction_async(
        self,
        fn: Callable[[AsyncSession], Awaitable[R]],
        *,
        retries: int | None = None,
        backoff: float | None = None,
        max_backoff: float | None = None,
        flavour: str = "default",
    ) -> R:
        """``await fn(session)`` in one transaction, commit, return its result; re-run it on
        serialization failure, deadlock or disconnect: the rules and knobs of
        :meth:`~dbconf.runtime.database.Database.run_in_transaction`."""
        origin = "db.run_in_transaction_async() arguments in code"
        policy = self._policy(flavour, origin, retries, backoff, max_backoff)
        return await retry_loops.run_in_transaction_async(
            lambda: self.async_sessionmaker(flavour)(), fn, policy=policy, database=self.name
        )

    def async_dependency(
        self, flavour: str = "default"
    ) -> Callable[[], AsyncGenerator[AsyncSession, None]]:
        """An async generator dependency (FastAPI ``Depends``) with :meth:`async_session`'s
        guarantees. The flavour is checked now; the engine is built on the first request."""
        self._flavour(flavour)

        async def get_session() -> AsyncGenerator[AsyncSession, None]:
            async with self.async_session(flavour) as session:
                yield session

        get_session.__name__ = f"get_{self.name}_{flavour}_async_session"
        get_session.__qualname__ = get_session.__name__
        return get_session

    def async_pool_status(self) -> PoolStatus:
        """:meth:`~dbconf.runtime.database.Database.pool_status` of the running loop's async
        pool."""
        return pool_status(self.name, self.async_engine.sync_engine)

    async def async_health(self) -> dict[str, Any]:
        """:meth:`~dbconf.runtime.database.Database.health` through the running loop's async
        engine."""
        report = await self.async_check()
        engine = self._async_engines.current_or_none()
        pool = pool_status(self.name, engine.sync_engine) if engine is not None else None
        return database_health(report, pool)

    async def async_check(self) -> DatabaseReport:
        """Connect through the async driver, run a round trip, and report; never raises for an
        unreachable server. Replicas are probed as :meth:`~dbconf.runtime.database.Database.check`
        does, in a worker thread."""
        self._require_open()
        url = self.config.async_url
        try:
            engine = self.async_engine
            pool = describe_pool(engine.sync_engine.pool)
            async with engine.connect() as conn:
                start = time.perf_counter()
                (await conn.execute(sa.text("SELECT 1"))).scalar_one()
                latency = (time.perf_counter() - start) * 1000
                version = server_version(conn.dialect.server_version_info)
        except Exception as exc:
            error = one_line(self.config, exc)
            replicas = await asyncio.to_thread(self._check_replicas)
            return make_report(self.name, self.config, url, False, error=error, replicas=replicas)
        return make_report(
            self.name,
            self.config,
            url,
            True,
            server_version=version,
            latency_ms=round(latency, 3),
            pool=pool,
            replicas=await asyncio.to_thread(self._check_replicas),  # sync probes, off the loop
            pooler=await asyncio.to_thread(pooler_status, self.config),
        )

    async def adispose(self) -> None:
        """:meth:`~dbconf.runtime.database.Database.dispose`, awaiting the running loop's engine."""
        pending = self._dispose()
        if pending is not None:
            await pending

    async def aclose(self) -> None:
        """:meth:`~dbconf.runtime.database.Database.close`, awaiting the running loop's engine."""
        pending = self._close()
        if pending is not None:
            await pending
