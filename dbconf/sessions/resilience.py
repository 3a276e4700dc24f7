"""Typed errors for lost connections and statement timeouts, and a transaction retry helper.

**Typed errors.** :func:`install_error_types` (wired by :func:`dbconf.runtime.builder.build_engine`)
adds a ``handle_error`` listener that replaces, through SQLAlchemy's documented mechanism (a
handler may return a new exception, which is raised ``from`` the driver's exception):

- a disconnect (SQLAlchemy's own detection, or one of the database's
  ``disconnect_sqlstates``) by :class:`~dbconf.errors.DisconnectError`; SQLAlchemy has already
  invalidated the connection, and with ``pre_ping`` the pool's older connections are checked
  before reuse, so the next scope runs on a fresh connection;
- a failure to connect (no connection yet: wrong credentials, server down or unreachable,
  database missing) by :class:`~dbconf.errors.ConnectError`, naming the database, its masked
  URL and what to check (:func:`dbconf.sessions.driver_errors.connect_hint`);
- a statement cancelled by a statement timeout by :class:`~dbconf.errors.StatementTimeoutError`:
  PostgreSQL SQLSTATE 57014 (``query_canceled``: ``statement_timeout``, and also
  ``pg_cancel_backend``), MariaDB error 1969 (``max_statement_time``), MySQL error 3024
  (``max_execution_time``), SQLite ``interrupted`` on a database with ``timeouts.statement``
  (dbconf's progress-handler deadline). The connection is not invalidated: it goes back to the
  pool after the scope rolls back;
- a lock that was not available by :class:`~dbconf.errors.LockTimeoutError`: PostgreSQL
  SQLSTATE 55P03 (``lock_not_available``: ``lock_timeout``, and also ``NOWAIT``), MariaDB/MySQL
  error 1205 (``innodb_lock_wait_timeout``, MariaDB's ``NOWAIT``) and 3572 (MySQL's
  ``NOWAIT``), SQLite ``database is locked`` (SQLITE_BUSY: the busy timeout ran out, or SQLite
  did not wait where waiting could deadlock). Each dialect module's ``lock_failure`` knows its
  codes and says what is left of the transaction and where to look for the blocker. The
  connection is not invalidated either.

The same listener serves async engines (installed on ``sync_engine`` by
:func:`dbconf.runtime.builder.build_async_engine`): asyncpg (SQLSTATE through SQLAlchemy's adapter,
``sqlstate``/``pgcode``), psycopg 3 async (``sqlstate``), aiomysql (PyMySQL's error numbers)
and aiosqlite (sqlite3's errors). asyncpg raises the OSError or timeout of an unreachable
server, and on SQLAlchemy 2.0 its own errors, at connect without SQLAlchemy wrapping them;
a ``do_connect`` listener turns those into the driver's OperationalError so that they become
ConnectError too. Messages name the async URL of an async engine.

**Cancellation.** A driver error raised while the running asyncio task is being cancelled is
the cancellation's consequence, not a database failure: the cancelled await closed the driver's
connection (aiomysql: ``InterfaceError("Cancelled during execution")``), and a later call on
it (SQLAlchemy 2.0's rollback after a failed first connect, a ``connect`` listener's
``finally``) fails and replaces the ``CancelledError``. The listener turns such an error back
into :class:`asyncio.CancelledError` (raised ``from`` the driver's error), so that a cancelled
task sees its cancellation (and ``asyncio.timeout`` its timeout) rather than a ConnectError or
DisconnectError; the pool has already discarded the connection (a failed connect never enters
it; a failed statement is handled as any other error of its scope). "Being cancelled" is
:meth:`asyncio.Task.cancelling` on Python 3.11+, and on every version a ``CancelledError`` in
the error's ``__cause__``/``__context__`` chain (the only sign on 3.10; SQLAlchemy's greenlet
bridge drops that chain when the failing call runs in a ``finally`` of the cancelled one, so
on 3.10 that case still surfaces as the driver's error).

Pre-ping failures are left alone (the pool handles them silently), and so are exceptions that
SQLAlchemy does not wrap (``KeyboardInterrupt``, cancellation). With ``hide_parameters`` on,
the bound values the server echoed are first removed from every error's text
(:func:`dbconf.sessions.driver_errors.hide_values`).

**Retries.** :func:`~dbconf.sessions.retry_loops.run_in_transaction` runs ``fn(session)`` in one
session scope (commit on success, rollback on error) and re-runs the whole function in a new session
when the failure is transient:

- PostgreSQL SQLSTATE 40001 (serialization failure) and 40P01 (deadlock detected);
- MariaDB/MySQL error 1213 (deadlock: InnoDB rolled the transaction back) and 1020 (MariaDB's
  serialization failure under ``innodb_snapshot_isolation``);
- :class:`~dbconf.errors.DisconnectError`.

Not retried: everything else, including :class:`~dbconf.errors.LockTimeoutError` (MariaDB
1205, PostgreSQL 55P03 ``lock_timeout``: a bound the user configured to fail fast, and a retry
would wait it out again behind the same blocker; InnoDB also keeps the transaction open after
1205, rolling back only the statement; SQLite ``database is locked``: the busy timeout already
waited), statement timeouts, and connection failures at connect time.

Backoff is exponential with full jitter: before retry *n* (1-based) dbconf sleeps
``uniform(0, min(max_backoff, backoff * 2 ** (n - 1)))`` (computed without overflow for any
*n*). Defaults: the database's ``retry:`` block, then :data:`DEFAULT_RETRY` (3 retries, 50 ms,
2 s); at most 100 retries and 3600 s per backoff, in YAML and in code. A disconnect during
COMMIT leaves the outcome unknown (the server may have committed), so a retried function must
be idempotent. :func:`~dbconf.sessions.retry_loops.run_in_transaction_async` is its twin for
``async def fn(session)``: the same decision and backoff (written once, in
``dbconf.sessions.retry_loops``), sleeping with ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy import event

from dbconf.config import DatabaseConfig, RetryConfig
from dbconf.config.urls import mask_url
from dbconf.dialects import dialect_for, mysql, postgresql, sqlite
from dbconf.errors import (
    ConfigError,
    ConnectError,
    DisconnectError,
    LockTimeoutError,
    Problem,
    StatementTimeoutError,
)
from dbconf.sessions.driver_errors import connect_hint, hide_values

__all__ = [
    "DEFAULT_RETRY",
    "RetryPolicy",
    "connect_dbapi_errors",
    "first_line",
    "install_error_types",
    "retry_reason",
]

log = logging.getLogger("dbconf")
P = ParamSpec("P")
R = TypeVar("R")

_NO_STATEMENT = "during BEGIN, COMMIT or ROLLBACK (if COMMIT, it may have committed)"
_ADVICE = (
    "retry the transaction (db.run_in_transaction) — a disconnect during COMMIT leaves the "
    "outcome unknown"
)


# --- typed errors -------------------------------------------------------------------------


def _sqlstate(orig: BaseException | None) -> str | None:
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def _mysql_errno(orig: BaseException | None) -> int | None:
    args = getattr(orig, "args", ())
    return args[0] if args and type(args[0]) is int else None


def first_line(orig: BaseException | None, password: str | None) -> str:
    """The first non-blank line of an error's text (else its class name), password masked."""
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    text = lines[0] if lines else type(orig).__name__
    return text.replace(password, "***") if password else text


def _is_statement_timeout(orig: BaseException | None, sqlite_deadline: bool) -> bool:
    if _sqlstate(orig) == postgresql.STATEMENT_TIMEOUT:
        return True
    if _mysql_errno(orig) in mysql.STATEMENT_TIMEOUT:
        return True
    if sqlite_deadline and type(orig).__module__ == "sqlite3":
        code = getattr(orig, "sqlite_errorcode", None)  # Python 3.11+
        return code == sqlite.INTERRUPT if code is not None else str(orig) == "interrupted"
    return False


_UNWRAPPED_CONNECT = (OSError, asyncio.TimeoutError)  # the same class on Python 3.11+


def connect_dbapi_errors(dialect: sa.Dialect, _rec: Any, cargs: Any, cparams: Any) -> Any:
    """Connect (``do_connect``) turning what asyncpg raises unwrapped into the driver's
    OperationalError, which SQLAlchemy wraps and passes to ``handle_error`` (it lets other
    exceptions through unseen): the OSError / timeout of an unreachable server, and on
    SQLAlchemy < 2.0.25 asyncpg's own server errors (SQLSTATE kept)."""
    try:
        return dialect.connect(*cargs, **cparams)
    except Exception as e:
        dbapi: Any = dialect.loaded_dbapi
        state = getattr(e, "sqlstate", None)
        if isinstance(e, dbapi.Error) or not (
            isinstance(e, _UNWRAPPED_CONNECT) or isinstance(state, str)
        ):
            raise
        text = str(e) if isinstance(state, str) else f"{type(e).__name__}: {e}"
        error = dbapi.OperationalError(text)
        error.sqlstate = error.pgcode = state
        raise error from e


def _cancelled(orig: BaseException | None) -> bool:
    """Did ``orig`` surface because the running asyncio task is being cancelled? (See the
    module doc: ``Task.cancelling()`` on 3.11+, else a CancelledError in its chain.)"""
    seen: set[int] = set()
    while orig is not None and id(orig) not in seen:
        if isinstance(orig, asyncio.CancelledError):
            return True
        seen.add(id(orig))
        orig = orig.__cause__ or orig.__context__
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread: a sync engine's caller
        return False
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return cancelling is not None and cancelling() > 0


def install_error_types(engine: sa.Engine, name: str, cfg: DatabaseConfig) -> None:
    """Raise DisconnectError / StatementTimeoutError / LockTimeoutError from ``engine`` (see
    the module doc).

    Install it after any listener that sets ``is_disconnect`` (``disconnect_sqlstates``).
    """
    async_url = cfg.async_url if engine.dialect.is_async else None  # an async engine's sync_engine
    where = f"database {name!r} ({cfg.masked_url() if async_url is None else mask_url(async_url)})"
    password = cfg.sqlalchemy_url.password
    secret = str(password) if password else None
    declared = frozenset(cfg.disconnect_sqlstates or ())
    timeout = cfg.timeouts.statement
    sqlite_deadline = cfg.backend == "sqlite" and bool(timeout)
    hide_parameters = cfg.hide_parameters
    dialect = dialect_for(cfg.backend)
    lock_failure = dialect.lock_failure if dialect is not None else None

    is_async = engine.dialect.is_async
    if is_async:
        event.listen(engine, "do_connect", connect_dbapi_errors)

    @event.listens_for(engine, "handle_error")
    def _typed(ctx: sa.engine.ExceptionContext) -> BaseException | None:
        error = ctx.sqlalchemy_exception
        orig = ctx.original_exception
        if ctx.is_pre_ping or not isinstance(error, sa_exc.DBAPIError):
            return None
        if hide_parameters:
            hide_values(error)  # before anything quotes the driver's text
        said = first_line(orig, secret)
        if is_async and _cancelled(orig):
            during = "connecting" if ctx.connection is None else "using its connection"
            return asyncio.CancelledError(
                f"{where}: the task was cancelled while {during}; the driver then reported: {said}"
            )
        if ctx.connection is None:  # no connection yet: connecting (or reconnecting) failed
            return cast(
                BaseException,
                ConnectError.wrapping(
                    error, f"{where}: could not connect: {said}; {connect_hint(orig)}", name
                ),
            )
        if ctx.is_disconnect:
            state = _sqlstate(orig)
            if state in declared:
                what = f"the server answered SQLSTATE {state}, declared a disconnect in "
                what += f"disconnect_sqlstates ({said})"
            else:
                during = "while running a statement" if ctx.statement else _NO_STATEMENT
                what = f"the connection was lost {during} ({said})"
            new = DisconnectError.wrapping(
                error,
                f"{where}: {what}; the connection was discarded and the transaction's "
                f"uncommitted work is gone; {_ADVICE}",
                name,
            )
            new.connection_invalidated = True
            return cast(BaseException, new)
        if _is_statement_timeout(orig, sqlite_deadline):
            limit = f"timeouts.statement ({timeout:g}s)" if timeout else "the statement timeout"
            return cast(
                BaseException,
                StatementTimeoutError.wrapping(
                    error,
                    f"{where}: the statement ran past {limit} and was cancelled ({said}); "
                    "the connection stays usable. Make the statement faster, or raise "
                    "timeouts.statement for this database",
                    name,
                ),
            )
        lock = lock_failure(orig, said, cfg) if lock_failure is not None else None
        if lock is not None:
            return cast(BaseException, LockTimeoutError.wrapping(error, f"{where}: {lock}", name))
        return None


# --- retries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How :func:`~dbconf.sessions.retry_loops.run_in_transaction` retries: at most ``retries``
    re-runs, full-jitter exponential backoff starting at ``backoff`` seconds, each sleep at most
    ``max_backoff``.

    The bounds are those of the YAML ``retry:`` block (:class:`~dbconf.config.RetryConfig`):
    ``retries`` a whole number from 0 to 100, each backoff from 0 to 3600 seconds; anything
    else is a :class:`~dbconf.errors.ConfigError`.
    """

    retries: int = 3
    backoff: float = 0.05
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        problems = _check_settings(
            "RetryPolicy(...) in code",
            {"retries": self.retries, "backoff": self.backoff, "max_backoff": self.max_backoff},
            required=True,
        )
        if problems:
            raise ConfigError(problems)

    @classmethod
    def resolve(
        cls,
        config: RetryConfig | None,
        *,
        retries: int | None = None,
        backoff: float | None = None,
        max_backoff: float | None = None,
        origin: str = "retry arguments in code",
    ) -> RetryPolicy:
        """Arguments first, then the database's ``retry:`` block, then the defaults. Bad
        arguments are a :class:`~dbconf.errors.ConfigError` naming ``origin``."""
        given = {"retries": retries, "backoff": backoff, "max_backoff": max_backoff}
        problems = _check_settings(origin, given)
        if problems:
            raise ConfigError(problems)
        cfg = config or RetryConfig()
        return cls(
            retries=_first(retries, cfg.retries, DEFAULT_RETRY.retries),
            backoff=_first(backoff, cfg.backoff, DEFAULT_RETRY.backoff),
            max_backoff=_first(max_backoff, cfg.max_backoff, DEFAULT_RETRY.max_backoff),
        )

    def cap(self, retry: int) -> float:
        """The upper bound of the sleep before retry number ``retry`` (1-based):
        ``min(max_backoff, backoff * 2 ** (retry - 1))``, for any ``retry`` without overflow."""
        # the exponent is capped before exponentiation: past 2 ** 1100 every backoff > 0
        # exceeds any max_backoff (floats end near 2 ** 1024, the smallest one is 2 ** -1074)
        exponent = min(max(retry - 1, 0), 1100)
        try:
            grown = math.ldexp(self.backoff, exponent)  # backoff * 2 ** exponent, exactly
        except OverflowError:
            return self.max_backoff
        return min(self.max_backoff, grown)


def _check_settings(origin: str, values: dict[str, Any], required: bool = False) -> list[Problem]:
    """Problems with retry settings given in code (None = not given, unless ``required``)."""
    problems = []
    for key, value in values.items():
        if value is None and not required:
            continue
        if key == "retries":
            ok = type(value) is int and 0 <= value <= RetryConfig.MAX_RETRIES
            allowed = f"a whole number from 0 to {RetryConfig.MAX_RETRIES}"
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and 0 <= value <= RetryConfig.MAX_BACKOFF
            allowed = f"a number of seconds from 0 to {RetryConfig.MAX_BACKOFF:g}"
        if not ok:
            problems.append(Problem(origin, key, f"got {value!r}; use {allowed}"))
    return problems


DEFAULT_RETRY = RetryPolicy()


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def retry_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is worth re-running the transaction for, or None if it is not."""
    if isinstance(exc, DisconnectError):
        return "disconnect"
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    errno = _mysql_errno(exc.orig)  # first: PyMySQL errors carry a SQLSTATE too (1213: 40001)
    if errno is not None:
        return mysql.RETRY.get(errno)
    state = _sqlstate(exc.orig)
    return postgresql.RETRY.get(state) if state is not None else None
