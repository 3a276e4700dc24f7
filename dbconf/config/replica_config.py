"""Read replicas in the configuration: a database's ``replicas:`` and ``routing:`` blocks.

A replica is written as the few settings that differ from its primary; everything else is
inherited. What a replica may set is :class:`ReplicaConfig`: its location (``url``, or URL parts
such as ``host``, or ``hosts`` with ``target_session_attrs``), ``application_name``,
``connect_args``, ``query``, and the ``pool``, ``timeouts`` and ``leak_detection`` blocks —
never ``sessions`` (the primary's flavours route to it), ``replicas`` or ``routing``.

:func:`replica_database` merges one replica over its primary into a full
:class:`~dbconf.config.DatabaseConfig`, validated like any database. The merge follows the
layer rules of :mod:`dbconf.loading.merging`: a replica ``url`` replaces the primary's location (its
URL and URL parts); a replica URL without a driver (``postgresql://``) keeps the primary's
driver; a replica URL without a password, and no ``password``/``password_file`` of its own,
inherits the primary's password (wherever the primary gives it); ``host`` and ``hosts``
replace each other, so do ``password`` and ``password_file``; ``pool``, ``timeouts``,
``leak_detection``, ``connect_args`` and ``query`` merge key by key over the primary's.
Models and pure functions only: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import URL, make_url

from dbconf.config.blocks import FrozenModel, LeakDetectionConfig, PoolConfig, TimeoutsConfig
from dbconf.config.credential_config import CREDENTIAL_KEYS
from dbconf.config.durations import Duration
from dbconf.config.failover import Hosts, SessionAttrs
from dbconf.config.secret_values import hide, masked
from dbconf.config.urls import DEFAULT_DRIVERS, parse_url
from dbconf.dialects import dialect_for

if TYPE_CHECKING:
    from dbconf.config.models import DatabaseConfig

__all__ = [
    "LocationModel",
    "ReplicaConfig",
    "RoutingConfig",
    "replica_database",
    "replica_key",
    "resolve_replicas",
    "topology_issues",
]

Issue = tuple[str, str]
# the keys that say where a database is: a replica url replaces all of them
LOCATION = (
    "url",
    "driver",
    "host",
    "hosts",
    "port",
    "username",
    *CREDENTIAL_KEYS,
    "credentials_ttl",
    "database",
    "query",
)
# keys of the primary a replica never inherits: the router uses the primary's flavours, and
# the primary's target_session_attrs (read-write, primary) would refuse every standby; replicas
# are never migrated
_NOT_INHERITED = ("replicas", "routing", "sessions", "target_session_attrs", "migrations")
_MERGED = ("pool", "timeouts", "leak_detection", "connect_args", "query")


class RoutingConfig(FrozenModel):
    """How reads are routed among a database's replicas."""

    max_lag: Duration = 5.0
    check_interval: Duration = 1.0
    read_your_writes: bool = True
    fallback: Literal["primary", "error"] = "primary"

    @field_validator("max_lag", "check_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise PydanticCustomError(
                "duration", "must be greater than 0 (e.g. max_lag: 5s, check_interval: 1s)"
            )
        return value


class LocationModel(FrozenModel):
    """What a database and a replica check alike in the keys that say where it is: ``url``
    parses as a URL (never echoed: it may hold a password), and secret-looking driver
    arguments and query values (password, sslpassword, token, …, at any depth) become
    :class:`~pydantic.Secret`, masked in repr and dumps (the builder takes them through
    :func:`~dbconf.config.secret_values.reveal`)."""

    @field_validator("url", mode="before", check_fields=False)
    @classmethod
    def _parse_url(cls, value: Any) -> Any:
        if isinstance(value, str):
            parse_url(value)
        return value

    @field_validator("connect_args", "query", mode="after", check_fields=False)
    @classmethod
    def _hide_secrets(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else hide(value)


class ReplicaConfig(LocationModel):
    """One replica: only what differs from the primary (unset keys are inherited)."""

    url: SecretStr | None = None
    host: str | None = None
    hosts: Hosts | None = None
    port: int | None = Field(None, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    password_command: list[str] | None = Field(None, min_length=1)  # argv, no shell
    credentials: str | None = None  # module:callable returning a password or token
    credentials_ttl: Duration | None = None
    database: str | None = None
    query: dict[str, Any] | None = Field(None, repr=False)  # may hold a password
    target_session_attrs: SessionAttrs | None = None
    application_name: str | None = None
    connect_args: dict[str, Any] | None = Field(None, repr=False)  # may hold a password
    pool: PoolConfig | None = None
    timeouts: TimeoutsConfig | None = None
    leak_detection: LeakDetectionConfig | None = None

    @field_serializer("connect_args", "query", when_used="json")
    def _dump_masked(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else masked(value)


def _family(backend: str) -> str:
    """The dialect family of a backend (mysql and mariadb are one: dbconf's MySQL dialect)."""
    dialect = dialect_for(backend)
    return dialect.name if dialect is not None else backend


def _backend(drivername: str) -> str:
    return URL.create(DEFAULT_DRIVERS.get(drivername, drivername)).get_backend_name()


def _written_driver(primary: DatabaseConfig) -> str:
    """The primary's driver as written (its ``driver``, else its URL's scheme)."""
    if primary.driver:
        return primary.driver
    assert primary.url is not None  # a database has a url or a driver
    return make_url(primary.url.get_secret_value()).drivername


def replica_database(primary: DatabaseConfig, replica: ReplicaConfig) -> DatabaseConfig:
    """The full configuration of ``replica``: its keys merged over ``primary``'s (see the
    module docstring). Raises :class:`~pydantic.ValidationError` as a database would."""
    data: dict[str, Any] = {
        key: getattr(primary, key) for key in primary.model_fields_set if key not in _NOT_INHERITED
    }
    own = {key for key in replica.model_fields_set if getattr(replica, key) is not None}
    if replica.url is not None:
        for key in LOCATION:
            data.pop(key, None)
        url = make_url(replica.url.get_secret_value())
        if "+" not in url.drivername:
            data["driver"] = _written_driver(primary)
        if url.password is None and not own & set(CREDENTIAL_KEYS):
            # the primary's password keys as written (a password_file stays a file, a command
            # is run again), else the password of its URL
            for key in (*CREDENTIAL_KEYS, "credentials_ttl"):
                if getattr(primary, key) is not None:
                    data[key] = getattr(primary, key)
            inherited = primary.sqlalchemy_url.password
            if "password" not in data and inherited is not None:
                data["password"] = SecretStr(str(inherited))
    url_kept = data.get("url")
    if own & set(CREDENTIAL_KEYS) and isinstance(url_kept, SecretStr):
        # its own credential replaces a password in the primary's url it keeps
        kept = make_url(url_kept.get_secret_value())
        if kept.password is not None:
            data["url"] = SecretStr(
                kept._replace(password=None).render_as_string(hide_password=False)
            )
    # a replica's own host(s) / credential replace the primary's (not only the same key)
    for group, dropped in (
        (("host", "hosts"), ("host", "hosts")),
        (CREDENTIAL_KEYS, (*CREDENTIAL_KEYS, "credentials_ttl")),
    ):
        if own & set(group):
            for key in dropped:
                data.pop(key, None)
    for key in own:
        value = getattr(replica, key)
        base = data.get(key)
        if isinstance(value, BaseModel) and isinstance(base, BaseModel):
            dump = value.model_dump(by_alias=True, exclude_unset=True)
            value = type(base).model_validate(
                {**base.model_dump(by_alias=True, exclude_unset=True), **dump}
            )
        elif isinstance(value, dict) and isinstance(base, dict):
            value = {**base, **value}
        data[key] = value
    return type(primary).model_validate(data)


def replica_key(replica: ReplicaConfig, index: int, at: str) -> tuple[str, bool]:
    """Where a problem at key path ``at`` of a replica's merged configuration belongs: under
    ``replicas.<index>`` when the replica sets that key (or, for a location key, gives its own
    location), else the primary's key it inherited. Returns (key path, inherited)."""
    head, _, rest = at.partition(".")
    own = {key for key in replica.model_fields_set if getattr(replica, key) is not None}
    block = getattr(replica, head, None) if head in own else None
    inner = rest.partition(".")[0]
    if isinstance(block, BaseModel):
        fields = type(block).model_fields.items()
        inner = next((name for name, f in fields if f.alias == inner), inner)  # class → class_
    if isinstance(block, BaseModel) and inner and inner not in block.model_fields_set:
        return at, True  # a pool/timeouts key the replica does not set itself
    if head in own or (head in LOCATION and own & set(LOCATION)) or not head:
        return ".".join(part for part in (f"replicas.{index}", at) if part), False
    return at, True


def resolve_replicas(primary: DatabaseConfig) -> tuple[tuple[DatabaseConfig, ...], list[Issue]]:
    """Each replica's full configuration, or every problem found in them."""
    resolved: list[DatabaseConfig] = []
    issues: list[Issue] = []
    for index, replica in enumerate(primary.replicas):
        if replica.url is not None:
            written = make_url(replica.url.get_secret_value()).drivername
            if _family(_backend(written)) != _family(primary.backend):
                issues.append(
                    (
                        f"replicas.{index}.url",
                        f"replicas[{index}] is a {_backend(written)} URL but its primary is "
                        f"{primary.backend}: a replica is a copy of its primary, on the same "
                        "kind of server; fix its url",
                    )
                )
                continue
        try:
            resolved.append(replica_database(primary, replica))
        except ValidationError as e:
            for error in e.errors(include_url=False):
                ctx = error.get("ctx") or {}
                loc = ".".join(str(part) for part in error["loc"])
                found = ctx.get("issues") or [(loc or str(ctx.get("at") or ""), error["msg"])]
                for at, message in found:
                    key, inherited = replica_key(replica, index, at)
                    note = f" (in replicas[{index}], which inherits {at})" if inherited else ""
                    issues.append((key, message + note))
    return tuple(resolved), issues


def topology_issues(db: DatabaseConfig) -> list[Issue]:
    """``replicas`` on SQLite, and ``routing`` or a replica-reading flavour without replicas."""
    issues: list[Issue] = []
    if db.replicas and db.backend == "sqlite":
        issues.append(
            (
                "replicas",
                "SQLite has no replicas (a SQLite database is one local file); remove "
                "replicas, or use a server database",
            )
        )
    if db.replicas:
        return issues
    if db.routing is not None:
        issues.append(
            (
                "routing",
                "routing is set but the database has no replicas; add replicas: "
                "[{url: …}] or remove routing",
            )
        )
    for name, flavour in db.sessions.items():
        if flavour.role in ("replica", "auto"):
            issues.append(
                (
                    f"sessions.{name}.role",
                    f"role {flavour.role} reads from replicas, but the database has none; add "
                    "replicas: [{url: …}] or use role: primary (the default)",
                )
            )
    return issues
