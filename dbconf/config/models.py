"""The validated configuration: frozen pydantic models, no I/O, nothing built.

Every model rejects unknown keys. Durations are stored as float seconds. Passwords are
:class:`~pydantic.SecretStr` and so is ``url`` (it may hold a password). Cross-field rules
that depend on the dialect (which pool options a pool class takes, which timeouts a dialect
can honour) are checked here so that a bad profile fails at load, not inside create_engine.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    Secret,
    SecretStr,
    StringConstraints,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import URL, make_url

from dbconf.config.blocks import (
    MAX_CONNECTIONS,
    FrozenModel,
    LeakDetectionConfig,
    PoolConfig,
    RetryConfig,
    SqliteConfig,
    TimeoutsConfig,
)
from dbconf.config.credential_config import CREDENTIAL_KEYS, credential_issues
from dbconf.config.durations import Duration, parse_duration
from dbconf.config.failover import Hosts, SessionAttrs, failover_issues, failover_url
from dbconf.config.metrics_config import MetricsConfig
from dbconf.config.migration_config import MigrationsConfig, checked_migration_database
from dbconf.config.origin import issues_error, shown_value
from dbconf.config.pooler import Pooler, pooler_issues
from dbconf.config.replica_config import (
    LocationModel,
    ReplicaConfig,
    RoutingConfig,
    resolve_replicas,
    topology_issues,
)
from dbconf.config.secret_values import masked
from dbconf.config.secret_values import reveal as reveal
from dbconf.config.urls import (
    BOTH_SIDES,
    combine,
    connect_arg_issues,
    driver_issues,
    mask_url,
    split_async,
)
from dbconf.dialects.checks import check_dialect_options, check_pool
from dbconf.errors import did_you_mean

__all__ = [
    "DatabaseConfig",
    "FileConfig",
    "LeakDetectionConfig",
    "PoolConfig",
    "ProfileConfig",
    "RetryConfig",
    "SessionConfig",
    "SqliteConfig",
    "TimeoutsConfig",
    "parse_duration",
]

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
URL_PARTS = ("driver", "host", "hosts", "port", "username", *CREDENTIAL_KEYS, "database", "query")


def _sqlstate(value: Any) -> Any:
    """YAML reads 25006 as a number: SQLSTATEs are five characters, so pad it back."""
    return f"{value:05d}" if isinstance(value, int) and not isinstance(value, bool) else value


SqlState = Annotated[str, BeforeValidator(_sqlstate), StringConstraints(pattern=r"^[0-9A-Z]{5}$")]


# A query value: a string, kept as a Secret when its key looks secret (?sslpassword=).
QueryValue = Annotated[str | Secret[str], WithJsonSchema({"type": "string"})]


def _check_names(names: dict[str, Any], what: str) -> None:
    for name in names:
        if not _NAME.match(name):
            raise PydanticCustomError(
                "name",
                "{what} name {name} must be lower-case letters, digits and single underscores "
                "(it becomes part of environment variable names)",
                {"what": what, "name": shown_value(name, ())},
            )


_CLASS_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class SessionConfig(FrozenModel):
    """One named sessionmaker flavour. ``autocommit`` maps to an AUTOCOMMIT connection.
    ``class`` is the import path of the session class (``sqlmodel:Session``); only its form
    is checked here, the class itself at load (:mod:`dbconf.sessions.session_classes`)."""

    class_: str | None = Field(None, alias="class")
    role: Literal["primary", "replica", "auto"] | None = None
    autoflush: bool | None = None
    expire_on_commit: bool | None = None
    autobegin: bool | None = None
    autocommit: bool | None = None
    twophase: bool | None = None
    info: dict[str, Any] | None = None

    @field_validator("class_")
    @classmethod
    def _class_path(cls, value: str | None) -> str | None:
        if value is not None and not _CLASS_PATH.match(value):
            raise PydanticCustomError(
                "class_path",
                "is not an import path: write module.sub:ClassName (e.g. sqlmodel:Session)",
            )
        return value

    @model_validator(mode="after")
    def _autocommit_twophase(self) -> SessionConfig:
        if self.autocommit and self.twophase:
            raise PydanticCustomError(
                "conflict",
                "autocommit and twophase exclude each other: an autocommit session "
                "has no transaction to prepare",
            )
        return self


_DRIVER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\+[A-Za-z][A-Za-z0-9_]*)?$")


class DatabaseConfig(LocationModel):
    """One named database: where it is, how it is pooled, how its sessions behave."""

    url: SecretStr | None = None
    driver: str | None = None
    async_driver: str | None = None
    host: str | None = None
    hosts: Hosts | None = None  # failover: several host[:port] (dbconf/config/failover.py)
    port: int | None = Field(None, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    password_command: list[str] | None = Field(None, min_length=1)  # argv, no shell
    credentials: str | None = None  # module:callable returning a password or token
    credentials_ttl: Duration | None = None  # see dbconf/config/credential_config.py
    database: str | None = None
    query: dict[str, QueryValue] | None = Field(None, repr=False)  # may hold a password
    target_session_attrs: SessionAttrs | None = None
    echo: bool = False
    hide_parameters: bool = True
    isolation_level: (
        Literal[
            "AUTOCOMMIT", "READ COMMITTED", "READ UNCOMMITTED", "REPEATABLE READ", "SERIALIZABLE"
        ]
        | None
    ) = None
    application_name: str | None = None
    connect_args: dict[str, Any] | None = Field(None, repr=False)  # may hold a password
    execution_options: dict[str, Any] | None = None
    pool: PoolConfig = PoolConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    sqlite: SqliteConfig | None = None
    leak_detection: LeakDetectionConfig | None = None
    retry: RetryConfig | None = None
    disconnect_sqlstates: list[SqlState] | None = None
    sessions: dict[str, SessionConfig] = Field(default_factory=dict)
    replicas: list[ReplicaConfig] = Field(default_factory=list)
    routing: RoutingConfig | None = None
    pooler: Pooler | None = None  # PgBouncer in front: dbconf/config/pooler.py
    migrations: MigrationsConfig | None = None

    _url: URL = PrivateAttr()
    _migration: DatabaseConfig | None = PrivateAttr(None)
    _replicas: tuple[DatabaseConfig, ...] = PrivateAttr(())
    _async_url: URL | None = PrivateAttr(None)
    _named: tuple[bool, bool] = PrivateAttr((True, False))

    @field_validator("driver")
    @classmethod
    def _driver_name(cls, value: str | None) -> str | None:
        if value is not None and not _DRIVER.match(value):
            # Never echoed: a URL pasted here would show its password.
            raise PydanticCustomError(
                "driver",
                "is not a driver name: write dialect or dialect+driver "
                "(postgresql+psycopg2, mariadb+pymysql, sqlite); a whole URL belongs in url:",
            )
        return value

    @field_serializer("connect_args", when_used="json")
    def _dump_masked(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """JSON dumps mask secrets (pydantic < 2.8 cannot serialize a Secret under Any)."""
        return None if value is None else masked(value)

    @field_validator("sessions")
    @classmethod
    def _session_names(cls, value: dict[str, SessionConfig]) -> dict[str, SessionConfig]:
        _check_names(value, "session flavour")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> DatabaseConfig:
        if "default" not in self.sessions:
            object.__setattr__(self, "sessions", {"default": SessionConfig(), **self.sessions})
        base = make_url(self.url.get_secret_value()) if self.url else None
        if base is None and not self.driver:
            raise PydanticCustomError(
                "missing_url",
                "no database location: set url (or DATABASE_URL / <NAME>_DATABASE_URL in the "
                "environment), or driver plus host/database",
            )
        password = self.password.get_secret_value() if self.password else None
        parts: dict[str, Any] = {"username": self.username, "password": password}
        parts |= {"host": self.host, "port": self.port, "database": self.database}
        url, issues = combine(base, self.driver, parts, reveal(self.query))
        url, more = failover_url(url, self.hosts, self.port, self.target_session_attrs)
        issues += more
        self._url, self._async_url, more = split_async(url, self.async_driver)
        issues += more
        # the side(s) the user named are checked now, the implied one when it is built
        written_async = self._async_url is not None and url.drivername == self._async_url.drivername
        self._named = (not written_async, written_async or self.async_driver is not None)
        keys = list(self.connect_args or {})
        if self._async_url is not None and self._named == (True, True):
            note = BOTH_SIDES.format(
                sync=self._url.get_driver_name(), async_=self._async_url.get_driver_name()
            )
            issues += connect_arg_issues(url, keys, note)
            issues += driver_issues(self._async_url, keys, self.query or {}, note)
        else:
            issues += connect_arg_issues(url, keys)
        sides = zip((self._url, self._async_url), self._named, strict=True)
        named = [side.drivername for side, by_user in sides if side is not None and by_user]
        issues += failover_issues(self.hosts, self.host, self.target_session_attrs, named)
        issues += check_pool(self) + check_dialect_options(self) + credential_issues(self, url)
        issues += topology_issues(self) + pooler_issues(self)
        if issues:
            raise issues_error(issues)
        self._replicas, issues = resolve_replicas(self)
        if issues:
            raise issues_error(issues)
        if self.migrations is not None:  # checked now: its errors name their origin
            self._migration = checked_migration_database(self)
        return self

    @property
    def migration_config(self) -> DatabaseConfig:
        """The configuration the migrations connect with (:mod:`dbconf.config.migration_config`)."""
        if self._migration is None:
            self._migration = checked_migration_database(self)
        return self._migration

    @property
    def replica_configs(self) -> tuple[DatabaseConfig, ...]:
        """Each replica's full configuration (its keys merged over this one's), in order."""
        return self._replicas

    @property
    def routing_config(self) -> RoutingConfig:
        """``routing:`` with its defaults filled in."""
        return self.routing or RoutingConfig()

    @property
    def sqlalchemy_url(self) -> URL:
        """The URL to connect to, password included (render it with ``hide_password``)."""
        return self._url

    @property
    def async_url(self) -> URL | None:
        """The same location with the async driver (``async_driver``, an async driver in the
        URL, or the dialect's default); None when dbconf knows no async driver for it."""
        return self._async_url

    def names_driver(self, use_async: bool) -> bool:
        """Whether the user named the sync (``url``/``driver`` with a sync or no driver) or
        the async driver (an async driver in ``url``/``driver``, or ``async_driver``): that
        side is checked at load; the other is only implied, checked when it is built."""
        return self._named[1] if use_async else self._named[0]

    @property
    def backend(self) -> str:
        """The dialect's backend name: postgresql, mysql, mariadb, sqlite, …"""
        return self._url.get_backend_name()

    @property
    def is_sqlite_memory(self) -> bool:
        if self.backend != "sqlite":
            return False
        name = self._url.database or ""
        return (
            name in ("", ":memory:")
            or (name.startswith("file:") and "mode=memory" in name)
            or self._url.query.get("mode") == "memory"
        )

    def masked_url(self) -> str:
        """The URL for display: password and secret-looking query values masked."""
        return mask_url(self._url)


class ProfileConfig(FrozenModel):
    """One profile: its databases, which one is the default, how many worker processes share it."""

    extends: str | None = None
    default_database: str | None = None
    workers: int = Field(1, ge=1, le=MAX_CONNECTIONS)
    metrics: MetricsConfig | None = None  # pool metrics exporters (dbconf/config/metrics_config.py)
    databases: dict[str, DatabaseConfig] = Field(default_factory=dict)

    @field_validator("databases")
    @classmethod
    def _database_names(cls, value: dict[str, DatabaseConfig]) -> dict[str, DatabaseConfig]:
        _check_names(value, "database")
        return value

    @model_validator(mode="after")
    def _default(self) -> ProfileConfig:
        if not self.databases:
            raise PydanticCustomError(
                "no_databases", "the profile declares no databases: add databases: {name: {url: …}}"
            )
        if self.default_database is not None and self.default_database not in self.databases:
            raise PydanticCustomError(
                "default_database",
                "default_database {name} is not a database of this profile{hint}",
                {
                    "name": shown_value(self.default_database, ()),
                    "hint": did_you_mean(self.default_database, self.databases),
                    "at": "default_database",
                },
            )
        return self

    @property
    def default_name(self) -> str:
        return self.default_database or next(iter(self.databases))


class FileConfig(FrozenModel):
    """The whole file; used for the JSON Schema. Profiles are validated one at a time, merged."""

    profiles: dict[str, ProfileConfig]
