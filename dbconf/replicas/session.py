"""Routed sessions: where a session of a database with replicas reads and writes.

The sessionmaker of a flavour (:mod:`dbconf.replicas.makers`) gives these classes only to
databases with ``replicas:``; a database without replicas keeps plain sessions (no cost).

- :class:`WriteTrackingSession` (``role: primary``, with ``routing.read_your_writes``): a
  session that wrote (a flush, or a statement that is not a SELECT) reads the primary's write
  position on its connection after its commit and hands it to
  :meth:`Router.remember_write <dbconf.replicas.router.Router.remember_write>`: replica reads
  of the same thread / asyncio task then go to a replica that replayed it, or to the primary.
- :class:`RoutingSession` (``role: replica`` / ``auto``), through :meth:`get_bind`:

  - ``replica``: every statement of a transaction goes to one replica, chosen at its first
    statement (:meth:`Router.choose <dbconf.replicas.router.Router.choose>`); when none can
    serve and ``fallback: primary``, to the primary in a ``read_only_transaction_sql``
    transaction (an ``autocommit`` flavour too: it reads there in one read-only transaction,
    since an autocommit connection cannot be made read-only portably). A write is refused by
    the server either way.
  - ``auto``: SELECTs without ``FOR UPDATE`` go to a replica; the first other statement or
    flush moves the session to the primary for good (its later reads see its writes).

  **Retry once.** If the first statement of a transaction bound for a replica fails because
  connecting to the replica failed, or because the connection died (``connection_invalidated``,
  or asyncpg's broken client state) before any row reached the caller, the replica is ejected
  (:meth:`Router.eject <dbconf.replicas.router.Router.eject>`) and the statement runs once
  more on the next choice (another replica or the primary). A death mid-statement is retried
  only in an autobegun transaction: rolling back one begun by ``session.begin()`` would end
  the caller's ``with`` block under it. The retry wraps ``execute`` / ``scalar`` /
  ``scalars`` (which ``Query``, ``get()``, lazy loads and ``AsyncSession`` use), not
  ``session.connection().execute``. (A ``do_orm_execute`` hook calling ``invoke_statement()``
  would do the same, but runs SQLAlchemy's execute path twice per first statement: a cost
  the benchmark of a replica scope shows.)

Async sessions use these same classes as their ``sync_session_class``: the routing code runs
in SQLAlchemy's greenlet, the binds are the async engines' ``sync_engine``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.orm.session import SessionTransactionOrigin

from dbconf.replicas.router import Router
from dbconf.runtime.reports import one_line

__all__ = ["AutoRoutingSession", "Route", "RoutingSession", "WriteTrackingSession"]

log = logging.getLogger("dbconf.replicas")

Role = Literal["primary", "replica", "auto"]


@dataclass(frozen=True, slots=True)
class Route:
    """What the sessions of one sessionmaker need to route (built once per sessionmaker)."""

    router: Router
    role: Role
    # replica i's bind (a sync Engine; for async sessions the loop's engine's sync_engine)
    replica: Callable[[int], sa.Engine]
    # the primary's bind for a replica-role read that falls back to it (never AUTOCOMMIT)
    primary_read: Callable[[], sa.Engine]
    read_only_sql: str | None
    write_position: Callable[[sa.Connection], int | None] | None
    # this context's last write through the router (None: none, or read_your_writes off)
    last_write: Callable[[], tuple[int | None, float] | None]


def reads_only(statement: Any) -> bool:
    """A SELECT without FOR UPDATE/SHARE (text() counts as a write: it cannot be told)."""
    return bool(getattr(statement, "is_select", False)) and (
        getattr(statement, "_for_update_arg", None) is None
    )


class _RecordsWrites(Session):
    """What both routed classes share: the route, and recording writes made on the primary
    (the listeners below). The per-session state starts as these class attributes: a
    session sets only what changes (no work per session beyond the route)."""

    _dbconf_route: Route
    _dbconf_wrote = False
    _dbconf_write_conn: sa.Connection | None = None

    def __init__(self, *args: Any, dbconf_route: Route, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._dbconf_route = dbconf_route

    def _dbconf_reset(self) -> None:
        self._dbconf_wrote = False
        self._dbconf_write_conn = None

    def _dbconf_on_the_primary(self) -> bool:
        """Do its statements go to the primary (a write there is worth remembering)?"""
        return True


class WriteTrackingSession(_RecordsWrites):
    """A session on the primary that records its writes for read-your-writes."""


_T = TypeVar("_T")


class RoutingSession(_RecordsWrites):
    """A session whose reads go to a replica (``role: replica`` / ``auto``)."""

    _dbconf_bind: Any = None  # this transaction's read bind
    _dbconf_conn: sa.Connection | None = None  # ... its first connection
    _dbconf_index: int | None = None  # ... its replica (None: the primary)
    _dbconf_read_only = False  # make the next connection begun read-only
    _dbconf_on_primary = False  # auto: wrote, everything goes to the primary now

    def _dbconf_reset(self) -> None:
        self._dbconf_wrote = False
        self._dbconf_write_conn = None
        self._dbconf_bind = self._dbconf_conn = None
        self._dbconf_index = None
        self._dbconf_read_only = False

    def _dbconf_on_the_primary(self) -> bool:
        return self._dbconf_on_primary

    def get_bind(
        self, mapper: Any = None, *, clause: Any = None, bind: Any = None, **kw: Any
    ) -> Any:
        """The replica (or fallback) engine of this transaction for reads; the primary (the
        session's own bind) for ``auto`` once it wrote."""
        if bind is None:
            if self._dbconf_route.role == "replica":
                return self._dbconf_bind or self._dbconf_choose()
            if not self._dbconf_on_primary:
                if reads_only(clause):
                    return self._dbconf_bind or self._dbconf_choose()
                self._dbconf_on_primary = True
            if not reads_only(clause):
                self._dbconf_wrote = True
        return super().get_bind(mapper, clause=clause, bind=bind, **kw)

    def _dbconf_choose(self) -> Any:
        route = self._dbconf_route
        router = route.router
        last = route.last_write()
        i = router.choose() if last is None else router.choose(position=last[0], wrote_at=last[1])
        engine: Any
        if i is not None:
            engine = route.replica(i)
        elif route.role == "replica":
            engine = route.primary_read()
            self._dbconf_read_only = route.read_only_sql is not None
        else:
            engine = super().get_bind()
        self._dbconf_index = i
        self._dbconf_bind = engine
        return engine

    # the ways a statement is run (Query, get(), lazy loads and AsyncSession run theirs
    # through these): the first statement of a transaction may be retried once
    def execute(self, *args: Any, **kw: Any) -> Any:
        if self._dbconf_bind is not None:
            return super().execute(*args, **kw)
        return self._dbconf_first(super().execute, args, kw)

    def scalar(self, *args: Any, **kw: Any) -> Any:
        if self._dbconf_bind is not None:
            return super().scalar(*args, **kw)
        return self._dbconf_first(super().scalar, args, kw)

    def scalars(self, *args: Any, **kw: Any) -> Any:
        if self._dbconf_bind is not None:
            return super().scalars(*args, **kw)
        return self._dbconf_first(super().scalars, args, kw)

    def _dbconf_first(
        self, run: Callable[..., _T], args: tuple[Any, ...], kw: dict[str, Any]
    ) -> _T:
        """Run the first statement of a transaction; if it went to a replica whose
        connection failed before a row reached the caller, once more elsewhere."""
        try:
            return run(*args, **kw)
        except Exception as exc:
            failed = self._dbconf_index
            if failed is None or not (isinstance(exc, sa.exc.DBAPIError) or _connection_died(exc)):
                raise  # on the primary (or never routed), or not the connection's fault
            if self._dbconf_conn is None:
                # connecting failed: the transaction holds no connection, choose again
                self._dbconf_bind = self._dbconf_index = None
            else:
                transaction = self.get_transaction()
                if not _connection_died(exc) or (
                    transaction is not None and transaction.origin is not _AUTOBEGIN
                ):
                    raise
                self._dbconf_discard()
            self._dbconf_failed(failed, exc)
        return run(*args, **kw)

    def _dbconf_discard(self) -> None:
        """End the transaction whose replica connection died (never pooled again)."""
        conn = self._dbconf_conn
        if conn is not None:
            try:
                conn.invalidate()
            except Exception:  # already gone: the rollback below discards it
                log.debug("invalidating a dead replica connection failed", exc_info=True)
        self.rollback()

    def commit(self) -> None:
        """Commit; a read-only transaction whose replica died before its COMMIT loses
        nothing, so that failure is not the caller's: the replica is ejected, the session
        rolled back."""
        i = self._dbconf_index
        try:
            super().commit()
        except Exception as exc:
            if i is None or self._dbconf_on_primary or not _connection_died(exc):
                raise
            self._dbconf_discard()
            self._dbconf_failed(i, exc)

    def _dbconf_failed(self, i: int, exc: BaseException) -> None:
        router = self._dbconf_route.router
        reason = f"a session's connection failed: {one_line(router.config.replica_configs[i], exc)}"
        log.info("database %r replicas[%d]: retrying a read elsewhere", router.database_name, i)
        router.eject(i, reason)


class AutoRoutingSession(RoutingSession):
    """``role: auto``: a :class:`RoutingSession` that may write on the primary, so it records
    its writes too (``role: replica`` sessions never write: they skip those listeners)."""


_AUTOBEGIN = SessionTransactionOrigin.AUTOBEGIN


def _connection_died(exc: BaseException) -> bool:
    """Did the statement fail because its connection is dead? SQLAlchemy invalidated it, or
    asyncpg's client state broke when the server went away (``InternalClientError: cannot
    switch to state …``: SQLAlchemy 2.0.24 raises it unwrapped, later versions wrap it
    without counting it as a disconnect)."""
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig or exc
    cls = type(exc)
    return cls.__name__ == "InternalClientError" and "asyncpg" in cls.__module__


_WRITERS = (WriteTrackingSession, AutoRoutingSession)


@event.listens_for(WriteTrackingSession, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    if not reads_only(state.statement):
        state.session._dbconf_wrote = True  # type: ignore[attr-defined]


def _on_flush(session: Session, _context: Any) -> None:
    session._dbconf_wrote = True  # type: ignore[attr-defined]


@event.listens_for(RoutingSession, "after_begin")
def _on_begin(
    session: Session, _transaction: SessionTransaction, connection: sa.Connection
) -> None:
    assert isinstance(session, RoutingSession)
    if session._dbconf_conn is None:
        session._dbconf_conn = connection
    if session._dbconf_read_only:
        session._dbconf_read_only = False
        sql = session._dbconf_route.read_only_sql
        if sql is not None:
            connection.exec_driver_sql(sql)


def _before_commit(session: Session) -> None:
    assert isinstance(session, _RecordsWrites)
    route = session._dbconf_route
    if (
        session._dbconf_wrote
        and route.write_position is not None
        and session._dbconf_on_the_primary()
        and not session.in_nested_transaction()
    ):
        # the connection the write went through (the primary's), for its position after the
        # commit (auto: get_bind() without a clause is the primary)
        session._dbconf_write_conn = session.connection()


def _after_commit(session: Session) -> None:
    assert isinstance(session, _RecordsWrites)
    if (
        not session._dbconf_wrote
        or not session._dbconf_on_the_primary()
        or session.in_nested_transaction()
    ):
        return
    route = session._dbconf_route
    conn, position = session._dbconf_write_conn, None
    session._dbconf_reset()
    if conn is not None and route.write_position is not None:
        try:
            position = route.write_position(conn)
        except Exception:  # the primary died after the commit: fall back to the time
            log.debug("reading the write position after a commit failed", exc_info=True)
    route.router.remember_write(position)


@event.listens_for(_RecordsWrites, "after_transaction_end")
def _on_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session._dbconf_reset()  # type: ignore[attr-defined]


for _cls in _WRITERS:  # (role: replica sessions never write on the primary: no listeners)
    event.listen(_cls, "after_flush", _on_flush)
    event.listen(_cls, "before_commit", _before_commit)
    event.listen(_cls, "after_commit", _after_commit)
