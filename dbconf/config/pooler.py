"""A database behind a connection pooler: the ``pooler:`` key and the rules it brings.

PgBouncer cannot be detected from the client, so a profile declares it::

    pooler: pgbouncer_transaction          # or pgbouncer_session
    pooler: {mode: pgbouncer_transaction, direct_url: postgresql://app@db-primary:5432/app}

``direct_url`` is a session-mode location that bypasses the pooler, for the work that needs
one server connection for longer than a transaction (migrations, ``LISTEN``, advisory locks):
:attr:`PoolerConfig.direct_url`, and ``dbconf migrate`` connects there when the database has
no ``migrations.url``.

What dbconf changes for each driver is in :mod:`dbconf.dialects.pgbouncer`. Here, the rules
checked at load (each issue is ``(key path within the database, message)``): things that
cannot work through PgBouncer fail with their origin instead of at the first query. Models and
rules only: no I/O.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from pydantic import BeforeValidator, SecretStr, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import make_url

from dbconf.config.blocks import FrozenModel
from dbconf.config.secret_values import reveal
from dbconf.config.urls import parse_url
from dbconf.dialects.pgbouncer import TRACKED_PARAMETERS, TRANSACTION
from dbconf.dialects.postgresql import pg_option_names

__all__ = ["Pooler", "PoolerConfig", "pooler_issues"]

Issue = tuple[str, str]


def _shorthand(value: Any) -> Any:
    """``pooler: pgbouncer_transaction`` is ``pooler: {mode: pgbouncer_transaction}``."""
    return {"mode": value} if isinstance(value, str) else value


class PoolerConfig(FrozenModel):
    """The pooler in front of a PostgreSQL database, and a direct URL that bypasses it."""

    mode: Literal["pgbouncer_transaction", "pgbouncer_session"]
    direct_url: SecretStr | None = None  # may hold a password

    @field_validator("direct_url", mode="before")
    @classmethod
    def _parse_url(cls, value: Any) -> Any:
        if isinstance(value, str):
            parse_url(value)
            if make_url(value).get_backend_name() != "postgresql":
                raise PydanticCustomError(
                    "direct_url",
                    "direct_url must be a PostgreSQL URL (postgresql://user@host:5432/db): "
                    "the same database reached without the pooler",
                )
        return value


Pooler = Annotated[PoolerConfig, BeforeValidator(_shorthand)]


class Pooled(Protocol):
    """The part of a database's configuration these rules read."""

    @property
    def pooler(self) -> PoolerConfig | None: ...
    @property
    def backend(self) -> str: ...
    @property
    def isolation_level(self) -> str | None: ...
    @property
    def timeouts(self) -> Any: ...
    @property
    def sessions(self) -> dict[str, Any]: ...
    @property
    def connect_args(self) -> dict[str, Any] | None: ...
    @property
    def query(self) -> dict[str, Any] | None: ...


_PREPARE = {
    "prepare_threshold": (None, "psycopg 3 prepares a statement run 5 times"),
    "statement_cache_size": (0, "asyncpg prepares and caches named statements"),
    "prepared_statement_cache_size": (0, "SQLAlchemy's asyncpg adapter caches prepared ones"),
}


def pooler_issues(db: Pooled) -> list[Issue]:
    """What cannot work behind the declared pooler (an empty list without ``pooler:``)."""
    pooler = db.pooler
    if pooler is None:
        return []
    if db.backend != "postgresql":
        return [
            (
                "pooler",
                f"pooler {pooler.mode} is for PostgreSQL databases (PgBouncer speaks the "
                f"PostgreSQL protocol), not {db.backend}; remove pooler:",
            )
        ]
    issues: list[Issue] = []
    args = reveal(db.connect_args or {})
    query = reveal(db.query or {})
    refused = "PgBouncer refuses the startup parameter options"
    if pg_option_names(str(args.get("options") or "")):
        issues.append(
            (
                "connect_args.options",
                f"{refused} (-c settings): remove it and use timeouts: (dbconf sets them per "
                "transaction with SET LOCAL) or SET in your code",
            )
        )
    if pg_option_names(str(query.get("options") or "")):
        issues.append(("query.options", f"{refused} (-c settings): remove ?options= from the URL"))
    settings = args.get("server_settings")
    if isinstance(settings, dict):
        untracked = sorted(set(settings) - TRACKED_PARAMETERS)
        if untracked:
            issues.append(
                (
                    "connect_args.server_settings",
                    f"PgBouncer refuses the startup parameter(s) {', '.join(untracked)}: it "
                    f"passes on only {', '.join(sorted(TRACKED_PARAMETERS))}; set the others "
                    "with SET in your code (timeouts: dbconf sets per transaction)",
                )
            )
    if pooler.mode != TRANSACTION:
        return issues
    why = "in PgBouncer transaction mode each transaction may run on a different server connection"
    for key, (off, what) in _PREPARE.items():
        if key in args and args[key] != off:
            issues.append(
                (
                    f"connect_args.{key}",
                    f"{what}, and {why}, where the statement is not: remove connect_args.{key} "
                    f"(dbconf sets {off} behind pgbouncer_transaction)",
                )
            )
    if db.timeouts.idle_in_transaction:
        issues.append(
            (
                "timeouts.idle_in_transaction",
                f"{why}: an idle transaction is PgBouncer's to end; remove it and set "
                "idle_transaction_timeout in pgbouncer.ini",
            )
        )
    autocommit = "AUTOCOMMIT runs each statement in its own transaction, "
    autocommit += f"and {why}: session state (SET, advisory locks, LISTEN, temporary tables) "
    autocommit += "would land on another client's connection"
    if db.isolation_level == "AUTOCOMMIT":
        issues.append(
            (
                "isolation_level",
                f"{autocommit}; remove it, or use pooler.direct_url for session work",
            )
        )
    for name, flavour in db.sessions.items():
        if flavour.autocommit:
            issues.append(
                (
                    f"sessions.{name}.autocommit",
                    f"{autocommit}; remove autocommit from the flavour, or give it a database "
                    "with pooler.direct_url's location",
                )
            )
    return issues
