"""SQLite: the standard library's sqlite3 (pysqlite) and aiosqlite (async, a thread around a
sqlite3 connection; it takes the same arguments and gets the same translation).

Timeouts: ``connect`` or ``lock`` → ``timeout`` (the busy timeout); ``statement`` → a progress
handler that aborts a statement running past its deadline (``OperationalError: interrupted``);
``application_name`` is ignored (there is no server). ``sqlite:`` pragmas run on each new
connection. ``database is locked`` (SQLITE_BUSY, after the busy timeout or at once where
waiting could deadlock) is described by :func:`lock_failure` (a ``LockTimeoutError``).

SQLite connections get the effect of SQLAlchemy's documented pysqlite savepoint workaround:
dbconf emits ``BEGIN`` whenever SQLAlchemy begins a transaction (skipped for AUTOCOMMIT
connections), so reads are transactional and ``begin_nested()`` works. It does so through the
engine's own dialect ``do_begin`` rather than the recipe's ``begin`` event, which would move
every statement onto SQLAlchemy's slower event path. With aiosqlite the BEGIN, the pragmas
and the progress handler go through SQLAlchemy's adapted connection (the handler is set on the
sqlite3 connection aiosqlite owns, with aiosqlite's ``set_progress_handler``).

In-memory databases and async: the sync and the async engine of one ``sqlite://`` database
each hold their own connection, so they are two different, empty databases (a table created
through one is not seen by the other). Use one side only for an in-memory database, or a file
(``sqlite:///app.db``) when both sides must see the same data.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import StaticPool

from dbconf.dialects.base import Dialect, Settings, register

__all__ = ["BUSY", "BUSY_SNAPSHOT", "INTERRUPT", "PYSQLITE_KEYWORDS", "dialect", "lock_failure"]

INTERRUPT = 9  # SQLITE_INTERRUPT: the statement deadline's progress handler fired
# SQLITE_BUSY ("database is locked"): another connection holds a conflicting lock on the
# database file and the busy timeout ran out, or SQLite did not wait because waiting could
# deadlock. Its extended code BUSY_SNAPSHOT: in WAL mode, a transaction that read an older
# snapshot cannot write (another connection wrote since); the busy timeout does not apply.
# SQLITE_LOCKED (6, "database table is locked": a conflict inside one connection or shared
# cache) is another error, not a wait for another connection.
BUSY = 5
BUSY_SNAPSHOT = 517
_SQLITE3_DEFAULT_TIMEOUT = 5.0  # sqlite3.connect(timeout=…)'s default
_DEADLINE = "dbconf.statement_deadline"
_PROGRESS_OPCODES = 1000


# sqlite3.connect() arguments SQLAlchemy's pysqlite dialect reads from the query, and the
# SQLite URI parameters it passes on with ?uri=true.
PYSQLITE_KEYWORDS = frozenset(
    [
        "uri",
        "timeout",
        "isolation_level",
        "detect_types",
        "check_same_thread",
        "cached_statements",
        "mode",
        "cache",
        "immutable",
        "nolock",
        "psow",
        "vfs",
        "modeof",
    ]
)


def driver_args(cfg: Settings) -> dict[str, Any]:
    t = cfg.timeouts
    busy = t.connect if t.connect is not None else t.lock
    return {"timeout": busy} if busy is not None else {}


def lock_failure(orig: BaseException | None, said: str, cfg: Settings) -> str | None:
    """SQLITE_BUSY (see :data:`BUSY`): what happened and what to do."""
    if type(orig).__module__ != "sqlite3":  # aiosqlite raises sqlite3's errors too
        return None
    code = getattr(orig, "sqlite_errorcode", None)  # the extended code, Python 3.11+
    busy = code & 0xFF == BUSY if code is not None else str(orig) == "database is locked"
    if not busy:
        return None
    if code == BUSY_SNAPSHOT:
        return (
            f"the transaction cannot write ({said}, SQLITE_BUSY_SNAPSHOT): in WAL mode it read "
            "an older snapshot and another connection has written since; the busy timeout "
            "does not apply. Roll it back and run it again; a transaction that will write "
            "should write first (or read nothing it depends on before)"
        )
    t = cfg.timeouts
    if t.lock is not None or t.connect is not None:  # both set: equal (dialects/checks.py)
        key, seconds = ("lock", t.lock) if t.lock is not None else ("connect", t.connect)
        limit = f"the busy timeout (timeouts.{key} {seconds:g}s)"
    else:
        limit = (
            f"the busy timeout (sqlite3's default {_SQLITE3_DEFAULT_TIMEOUT:g}s, unless "
            "connect_args sets timeout)"
        )
    return (
        f"another connection holds a lock on the database file ({said}): this one gave up "
        f"after {limit}, or at once where waiting could deadlock (a transaction that read "
        "first, then writes while another connection writes). The statement (or COMMIT) "
        "failed; the transaction is still open and holds its locks: roll it back. Keep write "
        "transactions short, use sqlite: {journal_mode: wal} so that readers and the writer "
        "do not block each other, or raise timeouts.lock if waiting longer is acceptable"
    )


def pool_defaults(cfg: Settings) -> dict[str, Any]:
    """An in-memory database lives in one connection: shared through a StaticPool."""
    return {"poolclass": StaticPool} if cfg.is_sqlite_memory else {}


def connect_defaults(cfg: Settings) -> dict[str, Any]:
    """``check_same_thread=False`` (SQLAlchemy's own default for a file, made explicit; for
    memory, when the one connection is shared through the static pool)."""
    memory_static = cfg.is_sqlite_memory and cfg.pool.class_ in (None, "static")
    if not cfg.is_sqlite_memory or memory_static:
        return {"check_same_thread": False}
    return {}


def _pragmas(cfg: Settings) -> list[str]:
    pragmas: list[str] = []
    if cfg.sqlite is not None:
        if cfg.sqlite.journal_mode is not None:
            pragmas.append(f"PRAGMA journal_mode = {cfg.sqlite.journal_mode.upper()}")
        if cfg.sqlite.foreign_keys is not None:
            pragmas.append(f"PRAGMA foreign_keys = {'ON' if cfg.sqlite.foreign_keys else 'OFF'}")
        if cfg.sqlite.synchronous is not None:
            pragmas.append(f"PRAGMA synchronous = {cfg.sqlite.synchronous.upper()}")
    return pragmas


def setup(engine: sa.Engine, cfg: Settings) -> None:
    pragmas = _pragmas(cfg)
    statement = cfg.timeouts.statement or None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()
        if statement is not None:

            def progress() -> int:
                deadline = record.info.get(_DEADLINE)
                return 1 if deadline is not None and time.monotonic() > deadline else 0

            if isinstance(dbapi_connection, sqlite3.Connection):
                dbapi_connection.set_progress_handler(progress, _PROGRESS_OPCODES)
            else:  # aiosqlite, through SQLAlchemy's adapter: set it in aiosqlite's thread
                dbapi_connection.run_async(
                    lambda conn: conn.set_progress_handler(progress, _PROGRESS_OPCODES)
                )

    # The pysqlite savepoint workaround: emit BEGIN ourselves when SQLAlchemy begins a
    # transaction, so the driver never opens one late (or not at all before a SAVEPOINT).
    # Done by the dialect's do_begin instead of a "begin" event: a connection-level event
    # turns on SQLAlchemy's event dispatch for every statement (about 30% slower scopes).
    # The driver's isolation_level is None only on AUTOCOMMIT connections: no BEGIN there.
    def _do_begin(dbapi_connection: Any) -> None:
        raw = dbapi_connection.dbapi_connection
        if raw.isolation_level is None:
            return
        if isinstance(raw, sqlite3.Connection):
            if not raw.in_transaction:
                raw.execute("BEGIN")
        elif not raw.driver_connection.in_transaction:  # aiosqlite, through SQLAlchemy's adapter
            cursor = raw.cursor()
            try:
                cursor.execute("BEGIN")
            finally:
                cursor.close()

    engine.dialect.do_begin = _do_begin  # type: ignore[method-assign]

    if statement is None:
        return

    @event.listens_for(engine, "before_cursor_execute")
    def _arm(conn: sa.Connection, *_args: Any) -> None:
        conn.info[_DEADLINE] = time.monotonic() + statement

    def _disarm(conn: sa.Connection) -> None:
        conn.info.pop(_DEADLINE, None)

    event.listen(engine, "commit", _disarm)
    event.listen(engine, "rollback", _disarm)

    @event.listens_for(engine, "reset")
    def _disarm_pool(_dbapi_connection: Any, record: Any, _state: Any) -> None:
        record.info.pop(_DEADLINE, None)


dialect = register(
    Dialect(
        name="sqlite",
        backends=("sqlite",),
        drivers={"pysqlite": None},
        async_drivers={"aiosqlite": "aiosqlite"},
        default_async_driver="aiosqlite",
        translated_drivers=frozenset({"pysqlite"}),
        driver_args=driver_args,
        async_driver_args={"aiosqlite": driver_args},
        pool_defaults=pool_defaults,
        connect_defaults=connect_defaults,
        setup=setup,
        lock_failure=lock_failure,
        query_keys={"pysqlite": PYSQLITE_KEYWORDS, "aiosqlite": PYSQLITE_KEYWORDS},
    )
)
