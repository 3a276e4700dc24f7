"""The option blocks of a database's settings: ``pool``, ``timeouts``, ``leak_detection``,
``sqlite`` and ``retry``. A read replica may also set the first three; its block merges key by
key over its primary's (:mod:`dbconf.config.replica_config`). Models only: no I/O. Re-exported by
:mod:`dbconf.config`."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dbconf.config.durations import MAX_DURATION, Duration, Timeout, parse_duration

__all__ = [
    "MAX_CONNECTIONS",
    "FrozenModel",
    "LeakDetectionConfig",
    "PoolConfig",
    "PrePing",
    "RetryConfig",
    "SqliteConfig",
    "TimeoutsConfig",
]

# A pool or a worker count is at most MariaDB's largest max_connections.
MAX_CONNECTIONS = 100_000


class FrozenModel(BaseModel):
    """The base of every configuration model: frozen, unknown keys rejected, strict types, input
    never echoed in pydantic's messages (it may hold a password)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, hide_input_in_errors=True, populate_by_name=True
    )


def _pre_ping(value: Any) -> bool | float:
    """``true``, ``false``, or a duration greater than 0 (ping only connections idle longer)."""
    if isinstance(value, bool):
        return value
    try:
        seconds = parse_duration(value)
    except PydanticCustomError as e:
        if "negative" in e.message():
            seconds = -1.0
        else:
            raise PydanticCustomError(
                "pre_ping",
                "expected true (ping every checkout), false (never) or a duration such as 1s "
                "(ping only connections idle longer than that)",
            ) from None
    if seconds <= 0:
        raise PydanticCustomError(
            "pre_ping",
            "a pre_ping window must be greater than 0; use true to ping every checkout",
        )
    if seconds > MAX_DURATION:
        raise PydanticCustomError("pre_ping", "a duration must be at most 365 days")
    return seconds


# pool.pre_ping: a bool, or float seconds (the bypass window: a connection checked in less
# than that long ago is handed out without a ping).
PrePing = Annotated[
    bool | float,
    BeforeValidator(_pre_ping),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "boolean"},
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"},
                {"type": "string", "pattern": r"^\$\{[^}]+\}$"},
            ],
            "description": "true (ping every checkout), false, or a duration: ping only "
            "connections idle longer than that",
        }
    ),
]


class PoolConfig(FrozenModel):
    """Connection pool. Unset options keep SQLAlchemy's defaults."""

    class_: Literal["queue", "null", "static", "singleton"] | None = Field(None, alias="class")
    size: int | None = Field(None, ge=1, le=MAX_CONNECTIONS)
    max_overflow: int | None = Field(None, ge=-1, le=MAX_CONNECTIONS)
    timeout: Duration | None = None
    recycle: Duration | None = None
    pre_ping: PrePing | None = None
    use_lifo: bool | None = None
    reset_on_return: Literal["rollback", "commit", "none"] | None = None

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise PydanticCustomError("duration", "the pool timeout must be greater than 0")
        return value


class TimeoutsConfig(FrozenModel):
    """Timeouts written once, translated per dialect by the builder."""

    connect: Timeout | None = None
    statement: Timeout | None = None
    lock: Timeout | None = None
    idle_in_transaction: Timeout | None = None


class LeakDetectionConfig(FrozenModel):
    """Warn when a connection or a session scope is held too long (off unless set)."""

    threshold: Duration | None = None
    long_transaction: Duration | None = None

    @field_validator("threshold", "long_transaction")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise PydanticCustomError(
                "duration", "must be greater than 0 (remove the key to turn the check off)"
            )
        return value

    @model_validator(mode="after")
    def _something_set(self) -> LeakDetectionConfig:
        if self.threshold is None and self.long_transaction is None:
            raise PydanticCustomError(
                "leak_detection",
                "leak_detection sets neither threshold nor long_transaction: set one "
                "(e.g. threshold: 30s) or remove leak_detection",
            )
        return self


class SqliteConfig(FrozenModel):
    """Declarative SQLite pragmas, applied on every new connection."""

    journal_mode: Literal["delete", "truncate", "persist", "memory", "wal", "off"] | None = None
    foreign_keys: bool | None = None
    synchronous: Literal["off", "normal", "full", "extra"] | None = None


class RetryConfig(FrozenModel):
    """Defaults for ``Database.run_in_transaction``. ``retries`` is at most
    :attr:`MAX_RETRIES`, each backoff at most :attr:`MAX_BACKOFF` seconds (one hour)."""

    MAX_RETRIES: ClassVar[int] = 100
    MAX_BACKOFF: ClassVar[float] = 3600.0

    retries: int | None = Field(None, ge=0, le=MAX_RETRIES)
    backoff: Duration | None = Field(None, le=MAX_BACKOFF)
    max_backoff: Duration | None = Field(None, le=MAX_BACKOFF)
