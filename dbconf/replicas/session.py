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

  **Retry once.** The first statement of a transaction bound for a replica runs inside a
  ``do_orm_execute`` hook: if connecting to the replica fails, or the statement fails because
  the connection died (``connection_invalidated``, or asyncpg's broken client state) before
  any row reached the caller, the
  replica is ejected (:meth:`Router.eject <dbconf.replicas.router.Router.eject>`) and the
  statement runs once more on the next choice (another replica or the primary). A death
  mid-statement is retried only in an autobegun transaction: rolling back one begun by
  ``session.begin()`` would end the caller's ``with`` block under it. Only ORM-level
  ``session.execute`` / ``scalars`` / queries pass through the hook, not
  ``session.connection().execute``.

Async sessions use these same classes as their ``sync_session_class``: the routing code runs
in SQLAlchemy's greenlet, the binds are the async engines' ``sync_engine``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.orm.session import SessionTransactionOrigin

from dbconf.replicas.router import Router
from dbconf.reports import one_line

__all__ = ["Route", "RoutingSession", "WriteTrackingSession"]

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


def reads_only(statement: Any) -> bool:
    """A SELECT without FOR UPDATE/SHARE (text() counts as a write: it cannot be told)."""
    return bool(getattr(statement, "is_select", False)) and (
        getattr(statement, "_for_update_arg", None) is None
    )


class WriteTrackingSession(Session):
    """A session on the primary that records its writes for read-your-writes."""

    _dbconf_route: Route

    def __init__(self, *args: Any, dbconf_route: Route, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._dbconf_route = dbconf_route
        self._dbconf_wrote = False
        self._dbconf_write_conn: sa.Connection | None = None

    def _dbconf_reset(self) -> None:
        self._dbconf_wrote = False
        self._dbconf_write_conn = None

    def _dbconf_on_the_primary(self) -> bool:
        """Do its statements go to the primary (a write there is worth remembering)?"""
        return True


class RoutingSession(WriteTrackingSession):
    """A session whose reads go to a replica (``role: replica`` / ``auto``)."""

    def __init__(self, *args: Any, dbconf_route: Route, **kw: Any) -> None:
        super().__init__(*args, dbconf_route=dbconf_route, **kw)
        self._dbconf_bind: Any = None  # this transaction's read bind
        self._dbconf_conn: sa.Connection | None = None  # ... and its connection
        self._dbconf_index: int | None = None  # ... and its replica (None: the primary)
        self._dbconf_read_only = False  # make the next transaction begun read-only
        self._dbconf_on_primary = False  # auto: wrote, everything goes to the primary now

    def _dbconf_reset(self) -> None:
        super()._dbconf_reset()
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
        return super().get_bind(mapper, clause=clause, bind=bind, **kw)

    def _dbconf_choose(self) -> Any:
        route = self._dbconf_route
        router = route.router
        last = router.last_write()
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

    def _dbconf_first_read(self, state: ORMExecuteState) -> Any:
        """Run the first statement of a transaction bound for a replica; retry it once
        elsewhere if the replica's connection fails before a row reached the caller."""
        try:
            self._dbconf_conn = self.connection(bind_arguments=state.bind_arguments)
        except Exception as exc:
            failed = self._dbconf_index
            if failed is None or not (  # the primary: nothing to retry on
                isinstance(exc, sa.exc.DBAPIError) or _connection_died(exc)
            ):
                raise
            # a failed connect leaves the transaction without a connection: choose again
            self._dbconf_bind = self._dbconf_index = None
            self._dbconf_failed(failed, exc)
            return None  # SQLAlchemy runs the statement on the next choice
        failed = self._dbconf_index
        if failed is None:
            return None
        try:
            return state.invoke_statement()
        except Exception as exc:
            transaction = self.get_transaction()
            if not _connection_died(exc) or (
                transaction is not None and transaction.origin is not _AUTOBEGIN
            ):
                raise
            self._dbconf_discard()
            self._dbconf_failed(failed, exc)
        return state.invoke_statement()

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


_AUTOBEGIN = SessionTransactionOrigin.AUTOBEGIN


def _connection_died(exc: BaseException) -> bool:
    """Did the statement fail because its connection is dead? SQLAlchemy invalidated it, or
    asyncpg's client state broke when the server went away (``InternalClientError: cannot
    switch to state …``: SQLAlchemy 2.0 before 2.0.30 or so raises it unwrapped, later ones
    wrap it without counting it as a disconnect)."""
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig or exc
    cls = type(exc)
    return cls.__name__ == "InternalClientError" and "asyncpg" in cls.__module__


@event.listens_for(WriteTrackingSession, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> Any:
    session = state.session
    statement = state.statement
    if not reads_only(statement):
        session._dbconf_wrote = True  # type: ignore[attr-defined]
    if not isinstance(session, RoutingSession) or session._dbconf_bind is not None:
        return None  # on the primary, or not the first statement of the transaction
    if session._dbconf_route.role == "auto" and (
        session._dbconf_on_primary or not reads_only(statement)
    ):
        return None
    return session._dbconf_first_read(state)


@event.listens_for(WriteTrackingSession, "after_flush")
def _on_flush(session: Session, _context: Any) -> None:
    session._dbconf_wrote = True  # type: ignore[attr-defined]


@event.listens_for(WriteTrackingSession, "after_begin")
def _on_begin(
    session: Session, _transaction: SessionTransaction, connection: sa.Connection
) -> None:
    if isinstance(session, RoutingSession) and session._dbconf_read_only:
        session._dbconf_read_only = False
        sql = session._dbconf_route.read_only_sql
        if sql is not None:
            connection.exec_driver_sql(sql)


@event.listens_for(WriteTrackingSession, "before_commit")
def _before_commit(session: Session) -> None:
    assert isinstance(session, WriteTrackingSession)
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


@event.listens_for(WriteTrackingSession, "after_commit")
def _after_commit(session: Session) -> None:
    assert isinstance(session, WriteTrackingSession)
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


@event.listens_for(WriteTrackingSession, "after_transaction_end")
def _on_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session._dbconf_reset()  # type: ignore[attr-defined]
