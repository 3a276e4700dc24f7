"""The exception tree of dbconf. Every error dbconf raises derives from :class:`DbconfError`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy.exc as sa_exc

__all__ = [
    "ConfigError",
    "ConnectError",
    "CredentialsError",
    "DbconfError",
    "DisconnectError",
    "LockTimeoutError",
    "NoEventLoopError",
    "NoReplicaError",
    "PoolExhaustedError",
    "Problem",
    "RegistryClosedError",
    "StatementTimeoutError",
    "UnknownDatabaseError",
    "UnknownSessionFlavourError",
    "closest",
    "did_you_mean",
]


class DbconfError(Exception):
    """Base class of every error raised by dbconf.

    Every dbconf error pickles (multiprocessing, Celery): an unpickled copy has the same
    class, ``args``, ``str()`` and attributes. The copy is made without calling ``__init__``
    (whose parameters differ from ``args`` in most subclasses), so a subclass needs nothing
    of its own for this as long as its state lives in ``args`` and ``__dict__``.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore, (type(self), self.args), dict(self.__dict__)


def _restore(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    new = cls.__new__(cls)
    new.args = args
    return new


@dataclass(frozen=True)
class Problem:
    """One configuration problem: where it came from, the key path, and what to do about it."""

    origin: str
    path: str
    message: str

    def __str__(self) -> str:
        where = " ".join(part for part in (self.origin, self.path) if part)
        return f"{where}: {self.message}" if where else self.message


class ConfigError(DbconfError, ValueError):
    """The configuration is invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("", "", problems)]
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return f"invalid database configuration: {self.problems[0]}"
        lines = [f"invalid database configuration ({len(self.problems)} problems):"]
        lines.extend(f"  - {problem}" for problem in self.problems)
        return "\n".join(lines)


class UnknownDatabaseError(DbconfError, LookupError):
    """A database name that the loaded profile does not declare."""

    def __init__(self, name: str, known: Sequence[str], profile: str) -> None:
        self.name = name
        self.known = tuple(known)
        hint = did_you_mean(name, known)
        super().__init__(
            f"profile {profile!r} declares no database {name!r}{hint}; "
            f"declared: {', '.join(known) or '(none)'}"
        )

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0])


class UnknownSessionFlavourError(DbconfError, LookupError):
    """A session flavour that the database does not declare under ``sessions:``."""

    def __init__(self, flavour: str, known: Sequence[str], database: str) -> None:
        self.flavour = flavour
        self.known = tuple(known)
        hint = did_you_mean(flavour, known)
        super().__init__(
            f"database {database!r} declares no session flavour {flavour!r}{hint}; "
            f"declared: {', '.join(known) or '(none)'}"
        )

    def __str__(self) -> str:
        return str(self.args[0])


class RegistryClosedError(DbconfError, RuntimeError):
    """A database of a closed :class:`~dbconf.Registry` (its ``with`` block ended, or
    ``close()`` was called) was used: it builds no engine and opens no connection any more."""

    def __init__(self, database: str) -> None:
        self.database = database
        super().__init__(
            f"database {database!r} belongs to a closed Registry (its with block ended, or "
            "close() was called) and opens no more connections; use it inside the with "
            "block, or load the profile again (dbconf.load) for a new Registry"
        )


class CredentialsError(DbconfError, RuntimeError):
    """The password of a new connection could not be fetched: its ``password_file`` is
    unreadable, its ``password_command`` failed or timed out, or its ``credentials`` callable
    raised or returned no text. The message never holds the secret."""

    def __init__(self, database: str, message: str) -> None:
        self.database = database
        super().__init__(f"database {database!r}: {message}")


class NoEventLoopError(DbconfError, RuntimeError):
    """An async engine was asked for outside a running event loop: dbconf keeps one async
    engine per event loop (:mod:`dbconf.runtime.loops`), so there is none to give."""

    def __init__(self, database: str) -> None:
        self.database = database
        super().__init__(
            f"database {database!r}: db.async_engine needs a running event loop (dbconf keeps "
            "one async engine per loop); use it inside async code, or create the "
            "sessionmaker with db.async_sessionmaker(), which binds the running loop's engine "
            "when it is called"
        )


class NoReplicaError(DbconfError, RuntimeError):
    """A replica read found no eligible replica and the database's ``routing.fallback`` is
    ``error``. ``reasons`` maps each replica (``replicas[0]``) to why it is out."""

    def __init__(self, database: str, reasons: Sequence[tuple[str, str]]) -> None:
        self.database = database
        self.reasons = dict(reasons)
        why = "; ".join(f"{name}: {reason}" for name, reason in reasons) or "(no replicas)"
        super().__init__(
            f"database {database!r}: no replica can serve this read ({why}) and routing."
            "fallback is error; raise routing.max_lag if the replicas are only slow, or set "
            "routing.fallback: primary to read from the primary meanwhile"
        )


class _WrappedDbapiError(DbconfError, sa_exc.OperationalError):
    """A SQLAlchemy DBAPI error re-raised by dbconf with a message that says what to do.

    An instance is also an instance of the exact SQLAlchemy class it replaces (a subclass is
    made on demand when that class is not ``OperationalError``), so ``except
    sqlalchemy.exc.InternalError`` handlers keep working; ``statement``, ``params``, ``orig``
    and ``connection_invalidated`` are those of the replaced error, and ``__cause__`` is the
    driver's exception.
    """

    _variants: ClassVar[dict[type[Exception], type[Any]]] = {}  # each subclass has its own
    database: str | None = None
    dbconf_message: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_variants" not in cls.__dict__ and "_wraps" not in cls.__dict__:
            cls._variants = {}

    def _message(self) -> str:
        return self.dbconf_message or super()._message()

    @classmethod
    def _variant(cls, wrapped: type[Exception]) -> type[Any]:
        if issubclass(cls, wrapped):
            return cls
        if wrapped not in cls._variants:
            attrs = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
            cls._variants[wrapped] = type(
                cls.__name__, (cls, wrapped), {**attrs, "_wraps": wrapped}
            )
        return cls._variants[wrapped]

    @classmethod
    def wrapping(cls, error: sa_exc.DBAPIError, message: str, database: str) -> Any:
        """A new error of this kind standing for ``error`` (same statement, params, orig)."""
        new = cls._variant(type(error))(
            error.statement,
            error.params,
            error.orig,
            error.hide_parameters,
            error.connection_invalidated,
            code=type(error).code,
            ismulti=error.ismulti,
        )
        new.detail = list(error.detail)
        new.dbconf_message = message
        new.database = database
        return new

    def __reduce__(self) -> tuple[Any, ...]:
        # a variant made by _variant() is not importable by name: pickle how to remake it
        base = next(k for k in type(self).__mro__ if k.__dict__.get("_variants") is not None)
        wrapped = type(self).__dict__.get("_wraps", sa_exc.OperationalError)
        return _restore_wrapped, (base, wrapped, self.args), dict(self.__dict__)


def _restore_wrapped(
    base: type[_WrappedDbapiError], wrapped: type[Exception], args: tuple[Any, ...]
) -> BaseException:
    return _restore(base._variant(wrapped), args)


class DisconnectError(_WrappedDbapiError):
    """The connection to the database was lost (or the server answered one of the
    ``disconnect_sqlstates``). The connection was discarded from the pool; uncommitted work
    is gone. Retry the whole transaction (``db.run_in_transaction``); a disconnect during
    COMMIT leaves its outcome unknown, so retried work must be idempotent."""


class ConnectError(_WrappedDbapiError):
    """Connecting to the database failed (wrong credentials, server down or unreachable,
    database missing). The message names the database and its masked URL and says what to
    check; it is also the SQLAlchemy error it replaces (usually ``OperationalError``), with
    the driver's exception as ``orig``. Raised at every failed connect, not retried."""


class StatementTimeoutError(_WrappedDbapiError):
    """The server (or, on SQLite, dbconf's deadline) cancelled a statement that ran past
    ``timeouts.statement``. The connection stays usable and goes back to the pool."""


class LockTimeoutError(_WrappedDbapiError):
    """A statement could not get a lock that another transaction holds: it waited past
    ``timeouts.lock`` (PostgreSQL ``lock_timeout``, SQLSTATE 55P03; MariaDB/MySQL
    ``innodb_lock_wait_timeout``, error 1205), or asked not to wait (``NOWAIT``: 55P03 too on
    PostgreSQL, 1205 on MariaDB, 3572 on MySQL), or, on SQLite, the database file stayed
    locked by another connection past the busy timeout (``database is locked``, SQLITE_BUSY;
    SQLite also answers it at once where waiting could deadlock).

    The connection is not invalidated and goes back to the pool. What is left of the
    transaction depends on the server:

    - PostgreSQL aborts the whole transaction: every later statement fails (SQLSTATE 25P02)
      until it is rolled back, or rolled back to a savepoint taken before the statement;
    - InnoDB rolls back only the failed statement: the transaction stays open with its earlier
      work, which can still be committed (unless the server runs with
      ``innodb_rollback_on_timeout``, which rolls back the whole transaction);
    - SQLite fails the statement (or the COMMIT, which a reader can keep waiting) and leaves
      the transaction open, holding its locks, until it is rolled back.

    A session scope rolls back when the error leaves it, so this matters only to code that
    catches the error inside the transaction.

    Not retried by ``run_in_transaction`` (the policy of :mod:`dbconf.sessions.resilience`):
    ``timeouts.lock`` is a bound chosen to fail fast and ``NOWAIT`` asks not to wait at all,
    while a retry would wait the whole bound again behind a blocker that may still hold the
    lock, usually a long transaction to find and shorten rather than contention to ride out.
    A deadlock or a serialization failure, which are retried, is over when it is reported: the
    server failed one transaction so that the other goes on. Catch it and retry yourself where
    waiting longer is acceptable, or raise ``timeouts.lock``.
    """


class PoolExhaustedError(DbconfError, sa_exc.TimeoutError):
    """No pooled connection became free within ``pool.timeout``. ``holders`` describes who
    holds the connections (thread, acquiring file:line, age) when ``leak_detection`` is on,
    else it is None."""

    def __init__(
        self,
        database: str,
        size: int,
        max_overflow: int,
        timeout: float,
        holders: Sequence[str] | None = None,
    ) -> None:
        self.database = database
        self.size = size
        self.max_overflow = max_overflow
        self.timeout = timeout
        self.holders = None if holders is None else tuple(holders)
        if self.holders is None:
            who = "; turn on leak_detection (threshold) to see who holds them"
        else:
            who = "; held by: " + ("; ".join(self.holders) or "(nobody any more)")
        super().__init__(
            f"database {database!r}: no connection became free within pool.timeout "
            f"{timeout:g}s (pool.size {size}, pool.max_overflow {max_overflow}, all in use)"
            f"{who}. Close sessions sooner (with blocks), or raise pool.size, "
            "pool.max_overflow or pool.timeout"
        )


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest candidate, or an empty string."""
    match = closest(word, candidates)
    return f" (did you mean {match!r}?)" if match is not None else ""


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word``, or None when none is close.

    Case is ignored; a candidate that starts with the word or that the word starts with
    (``prod`` → ``production``, ``primary_db`` → ``primary``; at least 3 characters in common)
    counts even where difflib's ratio is too low; otherwise difflib's closest at 0.6.
    """
    by_lower: dict[str, str] = {}
    for candidate in candidates:
        if isinstance(candidate, str):
            by_lower.setdefault(candidate.lower(), candidate)
    lower = word.lower()
    if lower in by_lower:
        return by_lower[lower]
    prefixed = [
        c
        for c in by_lower
        if min(len(c), len(lower)) >= 3 and (c.startswith(lower) or lower.startswith(c))
    ]
    pool = prefixed or list(by_lower)
    matches = difflib.get_close_matches(lower, pool, n=1, cutoff=0.0 if prefixed else 0.6)
    return by_lower[matches[0]] if matches else None
