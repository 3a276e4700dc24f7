"""The configuration layer: frozen pydantic models of a profile, validated, no I/O.

The models are in :mod:`dbconf.config.models`; the parts they are made of (option blocks,
durations, URLs, replicas, failover hosts, credentials keys, metrics, migrations, the pooler,
secret values, where a value came from) each have their own module in this package. This
module only re-exports the public models: ``from dbconf.config import ProfileConfig``.

Depends only on :mod:`dbconf.errors` and :mod:`dbconf.dialects`; never on loading or runtime.
"""

from dbconf.config.models import (
    DatabaseConfig,
    FileConfig,
    LeakDetectionConfig,
    PoolConfig,
    ProfileConfig,
    RetryConfig,
    SessionConfig,
    SqliteConfig,
    TimeoutsConfig,
    parse_duration,
)

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
