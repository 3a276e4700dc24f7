"""One :class:`~sqlalchemy.ext.asyncio.AsyncEngine` per event loop, and a sessionmaker that
binds the running loop's engine (:mod:`dbconf.runtime.loop_sessionmaker`).

**Why an engine per loop.** asyncpg, psycopg async and aiomysql connections, and SQLAlchemy's
``AsyncAdaptedQueue`` pool, belong to the event loop that created them: used from another loop
they fail with "attached to a different loop" / "Future ... attached to a different loop", or
hang. A process can have several loops over time (two ``asyncio.run()`` calls, a test
framework's loop per test) or at once (one per thread). A fresh pool swapped in on loop change
would break the loop still using the old one (two threads), so each loop gets its own engine,
built lazily on first use in that loop from the same config; each engine has the database's
full pool settings (``size`` is per loop).

**Lifetime.** The first use in a loop also starts a small async generator on that loop;
``loop.shutdown_asyncgens()`` — which ``asyncio.run``, ``asyncio.Runner`` and pytest-asyncio
call before closing a loop — closes it, and it disposes the loop's engine gracefully, inside the
loop, so connections are closed without "Event loop is closed" noise. Engines are held in a
dict keyed by loop identity with only a weak reference to the loop (an engine's pool refers to
its loop, so a ``WeakKeyDictionary`` would keep both alive); entries of loops that are closed or
gone are pruned on every new build, their pool dropped without touching the dead loop (close
loops through ``shutdown_asyncgens`` to have their connections closed cleanly).

**Outside a running loop** there is no engine to give: :meth:`LoopEngines.current` raises
:class:`~dbconf.errors.NoEventLoopError`. :class:`LoopSessionmaker` may be created anywhere
(at import time); it only needs a running loop when it is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.pool import ConnectionPoolEntry

from dbconf.errors import NoEventLoopError

if TYPE_CHECKING:  # importing sqlalchemy.ext.asyncio needs greenlet (the async extras)
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["LoopEngines", "close_returned"]


@dataclass
class _Entry:
    loop: weakref.ref[asyncio.AbstractEventLoop]
    engine: AsyncEngine
    guard: AsyncGenerator[None, None] | None = None
    autocommit: AsyncEngine | None = None
    abandoned: bool = False
    tasks: set[asyncio.Future[Any]] = field(default_factory=set)


async def _dispose_at_shutdown(entry: _Entry) -> AsyncGenerator[None, None]:
    """Closed by ``loop.shutdown_asyncgens()``: dispose the loop's engine inside the loop."""
    try:
        yield
    finally:
        if not entry.abandoned:
            await entry.engine.dispose()


def close_returned(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    """A connection returned to a closed database's pool: close it instead of pooling it."""
    record.invalidate()


class LoopEngines:
    """The async engines of one database, one per event loop (see the module doc)."""

    def __init__(self, name: str, build: Callable[[], AsyncEngine]) -> None:
        self.name = name
        self._build = build
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}

    def _running(self) -> asyncio.AbstractEventLoop:
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            raise NoEventLoopError(self.name) from None

    def _entry(self) -> _Entry:
        loop = self._running()
        entry = self._entries.get(id(loop))
        if entry is not None and entry.loop() is loop:
            return entry
        with self._lock:
            entry = self._entries.get(id(loop))
            if entry is not None and entry.loop() is loop:
                return entry
            self._prune()
            entry = _Entry(weakref.ref(loop), self._build())
            guard = _dispose_at_shutdown(entry)
            # the first step runs the loop's firstiter hook (registering the generator for
            # shutdown_asyncgens) and stops at the yield without awaiting anything
            try:
                guard.asend(None).send(None)
            except StopIteration:
                entry.guard = guard
            self._entries[id(loop)] = entry
        return entry

    def current(self, *, autocommit: bool = False) -> AsyncEngine:
        """The running loop's engine (with ``autocommit``: its AUTOCOMMIT variant)."""
        entry = self._entry()
        if not autocommit:
            return entry.engine
        if entry.autocommit is None:
            entry.autocommit = entry.engine.execution_options(isolation_level="AUTOCOMMIT")
        return entry.autocommit

    def current_or_none(self) -> AsyncEngine | None:
        """The running loop's engine if it was built (None outside a loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        entry = self._entries.get(id(loop))
        return entry.engine if entry is not None and entry.loop() is loop else None

    def __iter__(self) -> Iterator[AsyncEngine]:
        with self._lock:
            return iter([e.engine for e in self._entries.values()])

    def __len__(self) -> int:
        return len(self._entries)

    def _prune(self) -> None:
        for key, entry in list(self._entries.items()):
            loop = entry.loop()
            if loop is None or loop.is_closed():
                del self._entries[key]
                self._abandon(entry)

    @staticmethod
    def _abandon(entry: _Entry) -> None:
        """Forget an engine whose loop is gone: finish its guard without running a dispose
        (its loop cannot run one) and drop the pool's connections without closing them."""
        entry.abandoned = True
        guard, entry.guard = entry.guard, None
        if guard is not None:
            with contextlib.suppress(StopIteration, RuntimeError):
                guard.aclose().send(None)
        entry.engine.sync_engine.dispose(close=False)

    def dispose_all(self, *, close: bool = False) -> asyncio.Future[Any] | None:
        """Dispose every engine (``close``: and close returned connections from now on).

        The running loop's engine is disposed by the returned future (await it); engines of
        other running loops are disposed in their loop (thread-safe); engines of loops that are
        not running are left to their loop's ``shutdown_asyncgens`` (a stopped loop cannot run
        a dispose now), those of closed loops are dropped.
        """
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        mine: asyncio.Future[Any] | None = None
        with self._lock:
            entries = list(self._entries.items())
        for key, entry in entries:
            loop = entry.loop()
            if close:
                event.listen(entry.engine.sync_engine.pool, "checkin", close_returned)
            if loop is None or loop.is_closed():
                with self._lock:
                    self._entries.pop(key, None)
                self._abandon(entry)
            elif loop is running:
                mine = asyncio.ensure_future(entry.engine.dispose())
                entry.tasks.add(mine)
                mine.add_done_callback(entry.tasks.discard)
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(entry.engine.dispose(), loop)
        return mine
