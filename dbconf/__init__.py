"""dbconf: declarative database profiles for SQLAlchemy."""

from dbconf import errors
from dbconf.config import (
    DatabaseConfig,
    PoolConfig,
    ProfileConfig,
    SessionConfig,
    SqliteConfig,
    TimeoutsConfig,
)
from dbconf.errors import (
    ConfigError,
    ConnectError,
    CredentialsError,
    DbconfError,
    DisconnectError,
    LockTimeoutError,
    NoEventLoopError,
    NoReplicaError,
    PoolExhaustedError,
    RegistryClosedError,
    StatementTimeoutError,
    UnknownDatabaseError,
    UnknownSessionFlavourError,
)
from dbconf.pooling.leaks import ConnectionHolder, PoolStatus
from dbconf.replicas import ReplicaStatus
from dbconf.runtime.credentials import CredentialTarget
from dbconf.runtime.registry import Database, DatabaseReport, Registry, load
from dbconf.sessions.resilience import RetryPolicy

__all__ = [
    "ConfigError",
    "ConnectError",
    "ConnectionHolder",
    "CredentialTarget",
    "CredentialsError",
    "Database",
    "DatabaseConfig",
    "DatabaseReport",
    "DbconfError",
    "DisconnectError",
    "LockTimeoutError",
    "NoEventLoopError",
    "NoReplicaError",
    "PoolConfig",
    "PoolExhaustedError",
    "PoolStatus",
    "ProfileConfig",
    "Registry",
    "RegistryClosedError",
    "ReplicaStatus",
    "RetryPolicy",
    "SessionConfig",
    "SqliteConfig",
    "StatementTimeoutError",
    "TimeoutsConfig",
    "UnknownDatabaseError",
    "UnknownSessionFlavourError",
    "errors",
    "load",
]
