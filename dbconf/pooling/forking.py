"""Fork safety: a forked child never uses a connection it inherited from its parent.

A pooled connection is a socket plus the driver's protocol state. After ``os.fork()`` parent
and child hold the same socket; if both talk on it the server sees interleaved messages
(``SSL error: decryption failed or bad record mac``, ``no message from the libpq``), and if
the child *closes* it (``connection.close()`` sends the protocol's Terminate message) the
parent's session ends. This happens with gunicorn ``--preload``, ``multiprocessing`` with
the fork start method and Celery prefork whenever the parent used an engine before forking.

What dbconf does: every engine built by :func:`dbconf.runtime.builder.build_engine` (and the
``sync_engine`` of every :func:`dbconf.runtime.builder.build_async_engine`, whose pool it is) is
registered here, and in a forked child each registered engine is disposed with
``engine.dispose(close=False)`` (SQLAlchemy's documented remedy, see "Using Connection Pools
with Multiprocessing or os.fork()"): the engine gets a new, empty pool, and the parent's
connections are only dereferenced, never closed. Their sockets are released without a word
on the wire when garbage collected (psycopg2 does not close a connection in a process other
than the one that opened it; pymysql only closes the file descriptor). The new pool also has
fresh locks, so a lock held by another parent thread at fork time cannot block the child.

Why this module holds process-global state (with dbconf.pooling.leaks' monitor, whose reset in the
child runs from this same hook, see :func:`call_in_forked_child`): a fork is a process-wide
event and ``os.register_at_fork`` is a process-wide registration that cannot be undone, so
the set of engines to dispose must be process-wide too. It is a
:class:`weakref.WeakSet`, so registering an engine never keeps it alive, and the hook is
registered once, when the first engine is registered (importing dbconf has no side effect).

Choices and limits:

- No pid guard on checkout. SQLAlchemy's alternative recipe (stamp the pid on ``connect``,
  drop the connection in a ``checkout`` listener when the pid differs) runs *after* the
  pre-ping, which dbconf turns on for server databases, so the ping would already have used
  the parent's socket. The at-fork hook runs before any code in the child, which makes the
  guard redundant for every fork made through :func:`os.fork` (``multiprocessing``, gunicorn,
  Celery, and uWSGI, which calls ``PyOS_AfterFork_Child``). A fork made from C without that
  call is not covered.
- A connection checked out *at the moment of the fork* (forking inside a session scope)
  still belongs to the parent: dbconf cannot take it back without closing it, which would end
  the parent's session. Do not fork inside a scope.
- Async engines: the child must run its own event loop (``asyncio.run``); the parent's loop,
  like its other threads, does not survive the fork, and its connections stay bound to it.
  The fresh pool's asyncio queue is created on first use, in the child's loop.
- Engines created directly with :func:`sqlalchemy.create_engine` are not registered; call
  :func:`register_engine` for them if you want the same treatment.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable

import sqlalchemy as sa

__all__ = ["call_in_forked_child", "register_engine", "registered_engines"]

log = logging.getLogger("dbconf.forking")

_engines: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
_lock = threading.Lock()
_hook_registered = False
_child_calls: list[Callable[[], None]] = []  # other process-wide resets (dbconf.pooling.leaks)


def _after_fork_in_child() -> None:
    """Give every registered engine a fresh pool; never touch the inherited connections."""
    global _lock
    _lock = threading.Lock()  # another parent thread may have held it at fork time
    for call in list(_child_calls):
        try:
            call()
        except Exception:  # pragma: no cover - an exception cannot leave a fork hook
            log.error("at-fork reset %r failed in child %d", call, os.getpid(), exc_info=True)
    for engine in list(_engines):
        try:
            engine.dispose(close=False)
        except Exception:  # pragma: no cover - dispose(close=False) only swaps the pool
            # An exception cannot propagate out of a fork hook: say so loudly instead.
            log.error(
                "could not give engine %s a fresh pool in forked child %d; it still holds "
                "its parent's connections",
                engine.url.render_as_string(hide_password=True),
                os.getpid(),
                exc_info=True,
            )


def register_engine(engine: sa.Engine) -> sa.Engine:
    """Dispose ``engine``'s pool (``close=False``) in every forked child; returns ``engine``.

    Idempotent; keeps only a weak reference. The at-fork hook is registered on the first call.
    """
    with _lock:
        _register_hook()
        _engines.add(engine)
    return engine


def call_in_forked_child(call: Callable[[], None]) -> None:
    """Run ``call()`` in every forked child (before the engines are disposed), through the
    same single at-fork hook; for dbconf's other process-wide state (the leak monitor)."""
    with _lock:
        _register_hook()
        _child_calls.append(call)


def _register_hook() -> None:
    """Register the at-fork hook once per process (call with ``_lock`` held)."""
    global _hook_registered
    if not _hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _hook_registered = True


def registered_engines() -> list[sa.Engine]:
    """The live engines that are disposed in a forked child (for diagnostics and tests)."""
    return list(_engines)
