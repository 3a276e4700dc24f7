"""The records behind leak detection (see :mod:`dbconf.pooling.leaks`): one :class:`Checkout` per
pooled connection, the snapshots :func:`dbconf.pooling.leaks.pool_status` returns, and the dialect
wrappers that time transactions.

A :class:`Checkout` hangs on its pool entry (``record._dbconf_leak``) and is reused by every
checkout of that entry; the checking-out thread writes it, the monitor thread reads it
without a lock (``since`` is None while the connection is in the pool). Stacks are kept as
``[code, lasti, code, lasti, …]`` and resolved to ``(filename, line, function)`` only when
shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import sqlalchemy as sa

__all__ = [
    "Checkout",
    "ConnectionHolder",
    "PoolStatus",
    "format_stack",
    "is_library_frame",
    "watch_transactions",
    "where",
]

Frame = tuple[str, int, str]
MAX_FRAMES = 16
_LIBRARY_FILES = (
    str(Path(sa.__file__).parent) + os.sep,
    str(Path(__file__).parent) + os.sep,
    contextlib.__file__,
    str(Path(asyncio.__file__).parent) + os.sep,  # the event loop under every coroutine
    "<sqlalchemy ",  # SQLAlchemy 2.1's generated wrappers
)
_LIBRARY_MODULES = ("sqlalchemy", "dbconf", "contextlib", "asyncio")


def is_library_frame(frame: FrameType) -> bool:
    """Whether ``frame`` is not where the application took a connection: code of SQLAlchemy,
    dbconf, contextlib or asyncio (by file, or by module for generated code such as SQLAlchemy 2.0's
    ``<string>`` wrappers), or a method of a subclass of a SQLAlchemy class (SQLModel's
    Session, an application's Session or AsyncSession subclass) called on its instance.

    Decided once per code object (callers cache it): it looks at names, not at the stack.
    """
    code = frame.f_code
    if code.co_filename.startswith(_LIBRARY_FILES):
        return True
    module = frame.f_globals.get("__name__")
    if isinstance(module, str) and module.partition(".")[0] in _LIBRARY_MODULES:
        return True
    if not code.co_argcount:
        return False
    cls = type(frame.f_locals.get(code.co_varnames[0]))
    mro = cls.__mro__
    if not any(k.__module__.partition(".")[0] == "sqlalchemy" for k in mro):
        return False
    return any(getattr(vars(k).get(code.co_name), "__code__", None) is code for k in mro)


def _lineno(code: CodeType, lasti: int) -> int:
    for start, end, line in code.co_lines():
        if start <= lasti < end and line is not None:
            return line
    return code.co_firstlineno


def _resolve(raw: list[Any]) -> tuple[Frame, ...]:
    """``[code, lasti, code, lasti, …]`` → ``((filename, line, function), …)``."""
    return tuple(
        (code.co_filename, _lineno(code, lasti), code.co_name)
        for code, lasti in zip(raw[::2], raw[1::2], strict=True)
    )


def where(stack: tuple[Frame, ...]) -> str:
    return f"{stack[0][0]}:{stack[0][1]}" if stack else "<unknown>"


def format_stack(stack: tuple[Frame, ...]) -> str:
    return "\n".join(
        f'  File "{filename}", line {lineno}, in {name}'
        for filename, lineno, name in reversed(stack)
    )


class Checkout:
    """One pooled connection's current checkout (reused across its checkouts; read by the
    monitor without a lock). ``since`` is None while the connection is in the pool;
    ``warned``/``tx_warned`` hold the ``since``/``tx_since`` already warned about."""

    __slots__ = ("_stack", "raw", "since", "task", "thread", "tx_since", "tx_warned", "warned")

    def __init__(self) -> None:
        self.since: float | None = None
        self.thread: threading.Thread | None = None
        self.task: str | None = None  # the asyncio task's name (async engines only)
        self.raw: list[Any] = []
        self._stack: tuple[Frame, ...] | None = None
        self.warned: float | None = None
        self.tx_since: float | None = None
        self.tx_warned: float | None = None

    @property
    def stack(self) -> tuple[Frame, ...]:
        stack = self._stack
        if stack is None:
            stack = self._stack = _resolve(self.raw)
        return stack

    @property
    def thread_name(self) -> str:
        return "?" if self.thread is None else self.thread.name


@dataclass(frozen=True)
class ConnectionHolder:
    """Who holds a checked-out connection: thread (and asyncio task, for async engines),
    where it was acquired, for how long."""

    thread: str
    acquired_at: str
    age: float
    transaction_age: float | None
    stack: tuple[Frame, ...]
    task: str | None = None

    def describe(self) -> str:
        tx = self.transaction_age
        tx_text = "" if tx is None else f", in a transaction for {tx:.1f}s"
        who = f"thread {self.thread!r}"
        if self.task is not None:
            who = f"task {self.task!r} ({who})"
        return f"{who} at {self.acquired_at} for {self.age:.1f}s{tx_text}"


@dataclass(frozen=True)
class PoolStatus:
    """A snapshot of a database's pool; counts are None for pools that do not keep them.

    ``holders`` lists the current checkouts (oldest first) only when ``leak_detection`` is
    set for the database; without it nothing is recorded and ``holders`` is empty.
    """

    database: str
    pool: str
    size: int | None
    checked_out: int | None
    overflow: int | None
    idle: int | None
    timeout: float | None
    tracking: bool
    holders: tuple[ConnectionHolder, ...]


def watch_transactions(dialect: sa.Dialect) -> None:
    """Wrap this engine's dialect ``do_begin``/``do_commit``/``do_rollback`` (and two-phase):
    each wrapper stores ``time.monotonic()`` or None in the connection's ``Checkout``.

    Not engine ``begin``/``commit`` events: any engine-level event listener switches every
    statement of the engine onto SQLAlchemy's slower event path (measured: +12% per scope on
    PostgreSQL); the dialect instance belongs to this engine alone, and the pool's
    reset-on-return rollback goes through ``do_rollback`` too. ``conn`` is the pool's
    checked-out proxy; its pool entry carries the ``Checkout``. Connections with no entry or
    an entry never checked out (the dialect's first-connect initialization) are skipped.
    """

    def wrap(method: str, clock: Callable[[], float] | None) -> None:
        original = getattr(dialect, method)

        def wrapper(conn: Any) -> Any:
            try:  # noqa: SIM105 - suppress() costs a context manager per call
                conn._connection_record._dbconf_leak.tx_since = None if clock is None else clock()
            except AttributeError:
                pass
            return original(conn)

        def wrapper_twophase(conn: Any, *args: Any, **kwargs: Any) -> Any:
            try:  # noqa: SIM105 - suppress() costs a context manager per call
                conn._connection_record._dbconf_leak.tx_since = None if clock is None else clock()
            except AttributeError:
                pass
            return original(conn, *args, **kwargs)

        setattr(dialect, method, wrapper_twophase if "twophase" in method else wrapper)

    wrap("do_begin", time.monotonic)
    wrap("do_begin_twophase", time.monotonic)
    for method in ("do_commit", "do_rollback", "do_commit_twophase", "do_rollback_twophase"):
        wrap(method, None)
