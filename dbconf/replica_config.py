"""Read replicas in the configuration: a database's ``replicas:`` and ``routing:`` blocks.

A replica is written as the few settings that differ from its primary (a ``url``, or URL parts
such as ``host``, and any pool or timeout setting); everything else (pool, timeouts, flavours,
driver options) is inherited. :func:`replica_database` merges one replica over its primary into
a full :class:`~dbconf.config.DatabaseConfig`, validated like any database. Models only: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from dbconf.durations import Duration

if TYPE_CHECKING:
    from dbconf.config import DatabaseConfig

__all__ = ["ReplicaConfig", "RoutingConfig", "replica_database"]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, hide_input_in_errors=True, populate_by_name=True
    )


class RoutingConfig(_Model):
    """How reads are routed among a database's replicas."""

    max_lag: Duration = 5.0
    check_interval: Duration = 1.0
    read_your_writes: bool = True
    fallback: Literal["primary", "error"] = "primary"


class ReplicaConfig(_Model):
    """One replica: only what differs from the primary (unset keys are inherited)."""

    url: SecretStr | None = None
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    database: str | None = None
    query: dict[str, Any] | None = Field(None, repr=False)
    application_name: str | None = None
    connect_args: dict[str, Any] | None = Field(None, repr=False)
    pool: dict[str, Any] | None = None
    timeouts: dict[str, Any] | None = None


# keys of the primary a replica never inherits
_NOT_INHERITED = ("replicas", "routing")


def replica_database(primary: DatabaseConfig, replica: ReplicaConfig) -> DatabaseConfig:
    """The full configuration of ``replica``: its keys merged over ``primary``'s.

    ``url`` replaces the primary's ``url``; URL parts replace the primary's parts; ``pool`` and
    ``timeouts`` merge key by key over the primary's.
    """
    data: dict[str, Any] = {
        key: getattr(primary, key) for key in primary.model_fields_set if key not in _NOT_INHERITED
    }
    for key in replica.model_fields_set:
        value = getattr(replica, key)
        if key in ("pool", "timeouts") and value is not None:
            base = getattr(primary, key)
            value = type(base).model_validate(
                {**base.model_dump(by_alias=True, exclude_unset=True), **value}
            )
        data[key] = value
    return type(primary).model_validate(data)
