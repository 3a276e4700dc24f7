"""Read your writes: the last write of this context (thread / asyncio task), per router.

A :class:`contextvars.ContextVar` holds, for each router (by its key), the position a commit on
the primary reached (PostgreSQL: the WAL insert LSN read right after the commit) and the
monotonic time of that commit. A context variable is per thread, and per asyncio task (a task
starts with a copy of its creator's context: it sees the writes made before it was created,
and its own writes stay its own). The mapping is replaced, never mutated, so a copied context
never sees a later write of another.
"""

from __future__ import annotations

import contextvars
import time

__all__ = ["LAST_WRITES", "last_write", "remember_write"]

_NONE: dict[int, tuple[int | None, float]] = {}  # never mutated: the default, no allocation
# router key -> (position, monotonic time); read directly by the routed sessions' hot path
LAST_WRITES: contextvars.ContextVar[dict[int, tuple[int | None, float]]] = contextvars.ContextVar(
    "dbconf_last_writes", default=_NONE
)


def remember_write(key: int, position: int | None) -> None:
    """This context committed a write at ``position`` (None: no positions) through the router
    ``key``; the monotonic time is kept with it."""
    writes = dict(LAST_WRITES.get())
    writes[key] = (position, time.monotonic())
    LAST_WRITES.set(writes)


def last_write(key: int) -> tuple[int | None, float] | None:
    """(position, monotonic time) of this context's last write through router ``key``."""
    return LAST_WRITES.get().get(key)
