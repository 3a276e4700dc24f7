"""Session scopes with the guarantees every caller needs and few write by hand.

- :func:`session_scope`: commit on success; roll back on *any* exception, ``BaseException``
  included (cancellation, ``KeyboardInterrupt``, ``GeneratorExit``), and re-raise it; always
  close, so the connection goes back to the pool and no transaction stays ``idle in
  transaction``.
- :func:`transaction_scope`: ``with factory.begin() as session`` style: one explicit
  transaction; ``session.begin_nested()`` savepoints work inside it (SQLite included, through
  the builder's BEGIN workaround).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

__all__ = ["session_scope", "transaction_scope"]

log = logging.getLogger("dbconf.session")
SessionFactory = Callable[[], Session]


@contextmanager
def session_scope(factory: SessionFactory) -> Iterator[Session]:
    """Yield a new session; commit if the block succeeds, roll back if it raises, then close.

    A session whose flavour has ``autobegin: false`` and that never began a transaction has
    nothing to commit and is only closed. A failing commit is rolled back like a failing
    block. If the rollback itself fails (a dead connection), that failure is logged and the
    block's own exception is the one that propagates.
    """
    session = factory()
    try:
        yield session
        if session.in_transaction() or session.new or session.dirty or session.deleted:
            session.commit()
    except BaseException:
        try:
            session.rollback()
        except Exception:
            log.warning("rollback after a failed session scope failed too", exc_info=True)
        raise
    finally:
        session.close()


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
