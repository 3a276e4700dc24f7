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
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any, ClassVar, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.orm.session import SessionTransactionOrigin

from dbconf.replicas.router import Router
from dbconf.replicas.writes import LAST_WRITES
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
    # the router's key in LAST_WRITES (None: read_your_writes is off)
    writes_key: int | None


def reads_only(statement: Any) -> bool:
    """A SELECT without FOR UPDATE/SHARE (text() counts as a write: it cannot be told)."""
    return bool(getattr(statement, "is_select", False)) and (
        getattr(statement, "_for_update_arg", None) is None
    )


class _RecordsWrites(Session):
    """What every routed class shares: the route (a class attribute: :func:`maker_kwargs
    <dbconf.replicas.makers.maker_kwargs>` makes one subclass per sessionmaker, so a session
    costs nothing to set up) and recording writes made on the primary (the listeners below).
    The per-session state starts as class attributes: a session sets only what changes."""

    _dbconf_route: ClassVar[Route]
    _dbconf_wrote = False
    _dbconf_write_conn: sa.Connection | None = None

    def _dbconf_reset(self) -> None:
        self._dbconf_wrote = False
        self._dbconf_write_conn = None

    def _dbconf_on_the_primary(self) -> bool:
        """Do its statements go to the primary (a write there is worth remembering)?"""
        return True


class WriteTrackingSession(_RecordsWrites):
    """A session on the primary that records its writes for read-your-writes."""


class RoutingSession(_RecordsWrites):
    """``role: replica``: every statement of a transaction reads from the replica chosen at
    its first statement (or the primary, read-only, when none can serve).

    The choice belongs to the root transaction it was made in (``_dbconf_tx``): a statement
    of a later transaction chooses again. Comparing that with the session's current
    transaction replaces an ``after_transaction_end`` listener: a listener on the class
    costs every transaction an event dispatch, measured at about 2% of a whole
    ``select 1`` scope's instructions."""

    _dbconf_bind: Any = None  # the read bind chosen in _dbconf_tx (None: none yet)
    _dbconf_index: int | None = None  # ... its replica (None: the primary)
    # the root transaction it was chosen in (weakly: a session and its transaction refer to
    # each other, so a strong reference would leave every session to the cycle collector)
    _dbconf_tx: weakref.ReferenceType[SessionTransaction] | None = None

    def _dbconf_reset(self) -> None:
        self._dbconf_wrote = False
        self._dbconf_write_conn = None
        self._dbconf_bind = self._dbconf_index = self._dbconf_tx = None

    def _dbconf_on_the_primary(self) -> bool:
        return False

    def get_bind(
        self, mapper: Any = None, *, clause: Any = None, bind: Any = None, **kw: Any
    ) -> Any:
        """This transaction's replica (or fallback) engine."""
        if bind is None:
            ref = self._dbconf_tx
            if ref is not None and ref() is self._transaction is not None:
                return self._dbconf_bind
            return self._dbconf_read_bind()
        return super().get_bind(mapper, clause=clause, bind=bind, **kw)

    def _dbconf_chosen(self) -> bool:
        """Was the read bind chosen in the current root transaction (a savepoint's statements
        read where its transaction does)?"""
        ref = self._dbconf_tx
        tx = None if ref is None else ref()
        return tx is not None and (tx is self._transaction or tx is self.get_transaction())

    def _dbconf_read_bind(self) -> Any:
        """The current transaction's read bind: the one chosen in it, else a new choice. The
        common case — one replica, eligible, no write of this context to wait for — is
        decided here without a call into the router."""
        if self._dbconf_tx is not None and self._dbconf_chosen():
            return self._dbconf_bind
        # the choice is this root transaction's (autobegun now if need be: it would be next)
        tx = self.get_transaction() or self._autobegin_t()
        route = self._dbconf_route
        router = route.router
        last = None if route.writes_key is None else LAST_WRITES.get().get(route.writes_key)
        single = router.single
        if last is None and single is not None and monotonic() <= single.serve_until:
            i: int | None = 0
        elif last is None:
            i = router.choose()
        else:
            i = router.choose(position=last[0], wrote_at=last[1])
        engine: Any
        if i is not None:
            engine = route.replica(i)
        elif route.role == "replica":
            engine = route.primary_read()
            if route.read_only_sql is not None:
                # the fallback reads on the primary in a read-only transaction: open it now
                self.connection(bind_arguments={"bind": engine}).exec_driver_sql(
                    route.read_only_sql
                )
        else:
            engine = super().get_bind()  # auto: read from the primary
        self._dbconf_index = i
        self._dbconf_bind = engine
        self._dbconf_tx = weakref.ref(tx)
        return engine

    # the ways a statement is run (Query, get(), lazy loads and AsyncSession run theirs
    # through these): the first statement of a transaction may be retried once
    def execute(self, *args: Any, **kw: Any) -> Any:
        ref = self._dbconf_tx
        if ref is not None and (ref() is self._transaction is not None or self._dbconf_chosen()):
            return super().execute(*args, **kw)
        try:
            return super().execute(*args, **kw)
        except Exception as exc:
            self._dbconf_retry(exc)
        return super().execute(*args, **kw)

    def scalar(self, *args: Any, **kw: Any) -> Any:
        ref = self._dbconf_tx
        if ref is not None and (ref() is self._transaction is not None or self._dbconf_chosen()):
            return super().scalar(*args, **kw)
        try:
            return super().scalar(*args, **kw)
        except Exception as exc:
            self._dbconf_retry(exc)
        return super().scalar(*args, **kw)

    def scalars(self, *args: Any, **kw: Any) -> Any:
        ref = self._dbconf_tx
        if ref is not None and (ref() is self._transaction is not None or self._dbconf_chosen()):
            return super().scalars(*args, **kw)
        try:
            return super().scalars(*args, **kw)
        except Exception as exc:
            self._dbconf_retry(exc)
        return super().scalars(*args, **kw)

    def _dbconf_retry(self, exc: Exception) -> None:
        """The first statement of a transaction failed with ``exc``: return to run it once
        more elsewhere if it went to a replica whose connection failed before a row reached
        the caller (the replica is ejected); else re-raise ``exc``."""
        failed, bind = self._dbconf_index, self._dbconf_bind
        if failed is None or not (isinstance(exc, sa.exc.DBAPIError) or _connection_died(exc)):
            raise exc  # on the primary (or never routed), or not the connection's fault
        conn = _connection_of(self, bind)
        if conn is None:
            # connecting failed: the transaction holds no connection, choose again
            self._dbconf_bind = self._dbconf_index = self._dbconf_tx = None
        else:
            transaction = self.get_transaction()
            if not _connection_died(exc) or (
                transaction is not None and transaction.origin is not _AUTOBEGIN
            ):
                raise exc
            self._dbconf_discard(conn)
        self._dbconf_failed(failed, exc)

    def _dbconf_discard(self, conn: sa.Connection | None) -> None:
        """End the transaction whose replica connection died (never pooled again)."""
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
        i = self._dbconf_index if self._dbconf_chosen() else None
        try:
            super().commit()
        except Exception as exc:
            if i is None or self._dbconf_on_the_primary() or not _connection_died(exc):
                raise
            self._dbconf_discard(_connection_of(self, self._dbconf_bind))
            self._dbconf_failed(i, exc)

    def _dbconf_failed(self, i: int, exc: BaseException) -> None:
        router = self._dbconf_route.router
        reason = f"a session's connection failed: {one_line(router.config.replica_configs[i], exc)}"
        log.info("database %r replicas[%d]: retrying a read elsewhere", router.database_name, i)
        router.eject(i, reason)


class AutoRoutingSession(RoutingSession):
    """``role: auto``: SELECTs (without FOR UPDATE) read from this transaction's replica until
    the session's first other statement or flush; from then on everything goes to the primary
    (its later reads see its writes), and its writes are recorded for read-your-writes."""

    _dbconf_on_primary = False  # wrote: everything goes to the primary now

    def _dbconf_on_the_primary(self) -> bool:
        return self._dbconf_on_primary

    def get_bind(
        self, mapper: Any = None, *, clause: Any = None, bind: Any = None, **kw: Any
    ) -> Any:
        """The replica (or fallback) engine of this transaction for reads; the primary (the
        session's own bind) once it wrote."""
        if bind is None:
            if not self._dbconf_on_primary:
                if reads_only(clause):
                    ref = self._dbconf_tx
                    if ref is not None and ref() is self._transaction is not None:
                        return self._dbconf_bind
                    return self._dbconf_read_bind()
                self._dbconf_on_primary = True
            if not reads_only(clause):
                self._dbconf_wrote = True
        return super(RoutingSession, self).get_bind(mapper, clause=clause, bind=bind, **kw)


def _connection_of(session: Session, bind: Any) -> sa.Connection | None:
    """The connection ``session``'s transaction holds for ``bind``, if any (None: connecting
    to it failed). Only asked after a failure."""
    transaction = session.get_transaction()
    if transaction is None or bind is None:
        return None
    held = transaction._connections.get(bind)  # SessionTransaction's map (SQLAlchemy 2.0, 2.1)
    return None if held is None else held[0]


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


def _on_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session._dbconf_reset()  # type: ignore[attr-defined]


for _cls in _WRITERS:  # (role: replica sessions never write on the primary: no listeners)
    event.listen(_cls, "after_transaction_end", _on_end)
    event.listen(_cls, "after_flush", _on_flush)
    event.listen(_cls, "before_commit", _before_commit)
    event.listen(_cls, "after_commit", _after_commit)
