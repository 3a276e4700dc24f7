"""Session scopes with the guarantees every caller needs and few write by hand; sync and
async twins, side by side.

- :func:`session_scope` / :func:`async_session_scope`: commit on success; roll back on *any*
  exception, ``BaseException`` included (cancellation, ``KeyboardInterrupt``,
  ``GeneratorExit``), and re-raise it; always close, so the connection goes back to the pool and
  no transaction stays ``idle in transaction``.
- :func:`transaction_scope` / :func:`async_transaction_scope`: ``with factory.begin() as
  session`` style: one explicit transaction; ``session.begin_nested()`` savepoints work inside
  it (SQLite included, through the dialect's BEGIN workaround).

**Cancellation (async).** An async scope can be interrupted at any ``await``: mid-query,
mid-commit, mid-rollback. A connection interrupted mid-operation is in an unknown protocol state
(asyncpg refuses the next command while its cancel request is in flight; aiomysql could read the
interrupted query's reply as the next one's), so on a ``BaseException`` that is not an
``Exception`` (``CancelledError``, ``KeyboardInterrupt``, ``GeneratorExit``) the scope does not
try a ROLLBACK on it: it *invalidates* the session's connections (closed, never pooled again;
the server ends the transaction with the connection). On an ordinary exception it rolls back,
and invalidates if the rollback fails. The cleanup (rollback or invalidate, then close) runs in
its own task awaited through :func:`asyncio.shield` until it is done, so a second cancellation
cannot cut it short; that cancellation is re-raised once the cleanup finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = [
    "SessionScope",
    "async_session_scope",
    "async_transaction_scope",
    "session_scope",
    "transaction_scope",
]

log = logging.getLogger("dbconf.session")
SessionFactory = Callable[[], Session]
AsyncSessionFactory = Callable[[], "AsyncSession"]
T = TypeVar("T")


def _has_work(session: Session) -> bool:
    """Is there anything to commit? (``autobegin: false`` sessions may have begun nothing.)"""
    return bool(session.in_transaction() or session.new or session.dirty or session.deleted)


class SessionScope(AbstractContextManager[Session]):
    """``with session_scope(factory) as session``: a new session; committed if the block
    succeeds, rolled back if it raises, then closed.

    A session whose flavour has ``autobegin: false`` and that never began a transaction has
    nothing to commit and is only closed. A failing commit is rolled back like a failing
    block. If the rollback itself fails (a dead connection), that failure is logged and the
    block's own exception is the one that propagates.

    A class rather than a ``@contextmanager`` generator: every ``db.session()`` goes through
    it, and the generator machinery cost about as much as the rest of dbconf's scope
    (bench cases 1 and 14 compare scopes with ``sessionmaker.begin()``).
    """

    __slots__ = ("_factory", "_session")

    def __init__(self, factory: SessionFactory) -> None:
        self._factory = factory

    def __enter__(self) -> Session:
        self._session = session = self._factory()
        return session

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self._session
        try:
            if exc_type is not None:
                _rollback_after_failure(session)
                return
            try:
                if _has_work(session):
                    session.commit()
            except BaseException:
                _rollback_after_failure(session)
                raise
        finally:
            session.close()


session_scope = SessionScope


def _rollback_after_failure(session: Session) -> None:
    try:
        session.rollback()
    except Exception:
        log.warning("rollback after a failed session scope failed too", exc_info=True)


@contextmanager
def transaction_scope(factory: SessionFactory) -> Iterator[Session]:
    """Yield a session inside ``session.begin()``: committed on success, rolled back on any
    exception, always closed. Use ``session.begin_nested()`` for savepoints inside it."""
    session = factory()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


# --- async twins ---------------------------------------------------------------------------


async def _uninterrupted(make: Callable[[], Awaitable[T]]) -> T:
    """Run ``make()`` to completion in its own task even if the caller is cancelled meanwhile;
    a cancellation that arrived during it is re-raised afterwards."""

    async def run() -> T:
        return await make()

    task = asyncio.ensure_future(run())
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError as exc:
            if task.done():  # the cleanup itself was cancelled (its loop is shutting down)
                raise
            cancelled = exc
    if cancelled is not None:
        raise cancelled
    return result


async def _discard(session: AsyncSession, interrupted: bool) -> None:
    """After a failed block: roll back, or invalidate the connections when the block was
    interrupted (see the module doc) or the rollback fails; then close."""
    try:
        if not interrupted:
            try:
                await session.rollback()
                return
            except Exception:
                log.warning(
                    "rollback after a failed session scope failed; invalidating its connection",
                    exc_info=True,
                )
        await session.invalidate()
    except Exception:
        log.warning("discarding an interrupted session's connection failed", exc_info=True)
    finally:
        await session.close()


async def _close(session: AsyncSession) -> None:
    try:
        await session.close()
    except Exception:
        log.warning("closing a session failed; invalidating its connection", exc_info=True)
        await session.invalidate()


@asynccontextmanager
async def async_session_scope(factory: AsyncSessionFactory) -> AsyncIterator[AsyncSession]:
    """The async twin of :func:`session_scope`: commit if the block succeeds; on any exception
    roll back (or invalidate, see the module doc), re-raise; always close."""
    session = factory()
    try:
        yield session
        if _has_work(session.sync_session):
            await session.commit()
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)
        await _uninterrupted(lambda: _discard(session, interrupted))
        raise
    await _uninterrupted(lambda: _close(session))


@asynccontextmanager
async def async_transaction_scope(factory: AsyncSessionFactory) -> AsyncIterator[AsyncSession]:
    """The async twin of :func:`transaction_scope`: the block runs inside ``session.begin()``;
    committed on success, rolled back (or invalidated) on any exception, always closed.
    ``await session.begin_nested()`` savepoints work inside it."""
    session = factory()
    try:
        await session.begin()
        yield session
        await session.commit()
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)
        await _uninterrupted(lambda: _discard(session, interrupted))
        raise
    await _uninterrupted(lambda: _close(session))
