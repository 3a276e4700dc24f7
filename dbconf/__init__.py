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
from dbconf.errors import ConfigError, DbconfError, UnknownDatabaseError, UnknownSessionFlavourError
from dbconf.registry import Database, DatabaseReport, Registry, load

__all__ = [
    "ConfigError",
    "Database",
    "DatabaseConfig",
    "DatabaseReport",
    "DbconfError",
    "PoolConfig",
    "ProfileConfig",
    "Registry",
    "SessionConfig",
    "SqliteConfig",
    "TimeoutsConfig",
    "UnknownDatabaseError",
    "UnknownSessionFlavourError",
    "errors",
    "load",
]
