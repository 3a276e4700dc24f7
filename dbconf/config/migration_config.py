"""A database's ``migrations:`` block, and the configuration its migrations connect with.

Migrations run on their own connection, not on the request engine: a request ``statement``
timeout of 15 s or an ``idle_in_transaction`` timeout would kill a long ``ALTER TABLE``.
:func:`migration_database` merges the block over its database into a full
:class:`~dbconf.config.DatabaseConfig`, validated like any database:

- ``url`` (optional, e.g. a direct URL that bypasses a pooler; when unset, the database's
  ``pooler.direct_url``, and then the connection is not behind the pooler) replaces the
  database's location
  (``url`` and its parts ``driver``, ``host``, ``port``, ``username``, ``database``, ``query``),
  and its password source (``password``, ``password_file``, …) only when the URL carries a
  password (as an env var's URL does over the file);
- ``timeouts``: ``statement`` and ``idle_in_transaction`` are off (0) unless set here, where
  the dialect has them and dbconf translates timeouts for the driver; ``lock`` and
  ``connect`` are the database's unless set here;
- no pool (a ``NullPool``: one connection, closed after the run), and none of the database's
  session flavours, ``isolation_level``, ``execution_options``, leak detection, retry,
  replicas or routing.

Models only: no I/O (the path is not checked here; the CLI and the Alembic integration say
when it does not exist).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import make_url

from dbconf.config.blocks import FrozenModel
from dbconf.config.durations import Timeout
from dbconf.config.origin import issues_error
from dbconf.config.urls import parse_url
from dbconf.dialects import dialect_for

if TYPE_CHECKING:
    from dbconf.config.models import DatabaseConfig

__all__ = [
    "MigrationTimeouts",
    "MigrationsConfig",
    "checked_migration_database",
    "migration_database",
]

DEFAULT_VERSION_TABLE = "alembic_version"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
# keys of the database a migration connection never takes
_NOT_INHERITED = frozenset(
    {
        *("migrations", "replicas", "routing", "pool", "sessions", "leak_detection", "retry"),
        *("isolation_level", "execution_options"),
    }
)
_LOCATION = ("url", "driver", "host", "port", "username", "database", "query")
# every key that gives a password (those after password_file come with the credential keys
# of issue #12; absent keys are skipped): a direct URL with a password replaces them all
_CREDENTIALS = (
    *("password", "password_file", "password_command", "credentials", "credentials_ttl"),
)
# the timeouts off by default, per backend: only where dbconf translates them (a 0 elsewhere
# would be refused as a setting the dialect cannot honour)
_OFF_BY_DEFAULT = {
    "postgresql": ("statement", "idle_in_transaction"),
    "mariadb": ("statement", "idle_in_transaction"),
    "mysql": ("statement",),
    "sqlite": ("statement",),
}


class MigrationTimeouts(FrozenModel):
    """The migration connection's timeouts (unset: see :func:`migration_database`)."""

    connect: Timeout | None = None
    statement: Timeout | None = None
    lock: Timeout | None = None
    idle_in_transaction: Timeout | None = None


class MigrationsConfig(FrozenModel):
    """How a database is migrated (Alembic): where its scripts are, its version table, and the
    connection's own timeouts and optional direct URL. ``managed: false``: dbconf never
    migrates it (``dbconf migrate --all`` and ``migrations status`` skip it)."""

    path: str | None = None
    version_table: str = DEFAULT_VERSION_TABLE
    managed: bool = True
    timeouts: MigrationTimeouts = MigrationTimeouts()
    url: SecretStr | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise PydanticCustomError(
                "path", "is empty: write the scripts' directory (e.g. migrations/primary)"
            )
        return value

    @field_validator("version_table")
    @classmethod
    def _version_table(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise PydanticCustomError(
                "version_table",
                "is not a table name: letters, digits and underscores, starting with a letter "
                "or underscore, at most 63 characters (e.g. alembic_version_billing)",
            )
        return value

    @field_validator("url", mode="before")
    @classmethod
    def _parse_url(cls, value: Any) -> Any:
        if isinstance(value, str):
            parse_url(value)  # an error that never echoes the URL
        return value

    def script_path(self, database: str) -> str:
        """The scripts' directory: ``path``, or ``migrations/<database>`` (relative paths are
        relative to the working directory, as Alembic's ``script_location``)."""
        return self.path if self.path is not None else f"migrations/{database}"


def migration_database(database: DatabaseConfig) -> DatabaseConfig:
    """The full configuration the migrations of ``database`` connect with (see the module
    docstring). Raises pydantic's ValidationError, with locations within the merged database
    (``url``, ``timeouts.lock``, …), when the merge is not a valid database."""
    block = database.migrations or MigrationsConfig()
    data: dict[str, Any] = {
        key: getattr(database, key)
        for key in database.model_fields_set
        if key not in _NOT_INHERITED
    }
    url_given = block.url
    pooler = database.pooler
    if url_given is None and pooler is not None and pooler.direct_url is not None:
        url_given = pooler.direct_url  # PgBouncer's direct_url: a session on PostgreSQL itself
        data.pop("pooler", None)
    if url_given is not None:
        for key in _LOCATION:
            data.pop(key, None)
        data["url"] = url_given
        if make_url(url_given.get_secret_value()).password is not None:
            for key in _CREDENTIALS:
                data.pop(key, None)
    # the URL connected to, with dbconf's default driver (mysql:// is PyMySQL)
    url = (
        type(database).model_validate(data).sqlalchemy_url if url_given else database.sqlalchemy_url
    )
    backend, dialect = url.get_backend_name(), dialect_for(url.get_backend_name())
    translated = dialect is not None and dialect.translation(url.get_driver_name()) is not None
    timeouts = database.timeouts.model_dump(exclude_none=True)
    if translated:  # a driver dbconf does not translate for gets no timeout it did not ask for
        timeouts.update(dict.fromkeys(_OFF_BY_DEFAULT.get(backend, ()), 0.0))
    timeouts.update(block.timeouts.model_dump(exclude_unset=True))
    if backend == "sqlite" and "lock" in timeouts and "connect" in timeouts:
        # both are SQLite's busy timeout: the migrations' own value wins
        own = block.timeouts.model_fields_set
        timeouts.pop("connect" if "lock" in own or "connect" not in own else "lock")
    data["timeouts"] = type(database.timeouts).model_validate(timeouts)
    data["pool"] = type(database.pool).model_validate(
        {"class": "static"} if database.is_sqlite_memory else {"class": "null"}
    )
    return type(database).model_validate(data)


def checked_migration_database(database: DatabaseConfig) -> DatabaseConfig:
    """:func:`migration_database`, its errors raised as one validation error of ``database``
    (each at ``migrations.<key>`` for a key the block sets, else at ``migrations``), for the
    loader to report with their origins."""
    try:
        return migration_database(database)
    except ValidationError as e:
        raise issues_error(_issues(e)) from None


def _issues(exc: ValidationError) -> list[tuple[str, str]]:
    issues = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        pairs = ctx.get("issues") or [(".".join(str(p) for p in error["loc"]), error["msg"])]
        for at, message in pairs:
            head = at.split(".")[0] if at else ""
            own = head in ("url", "timeouts")
            issues.append((f"migrations.{at}" if own and at else "migrations", message))
    return issues
