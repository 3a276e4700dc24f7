"""Per-database health for readiness probes: :meth:`Database.health`,
:meth:`Registry.health` (and their ``async_`` twins), the FastAPI helper
:func:`dbconf.integrations.fastapi.readiness`.

A health entry is plain JSON-ready data built from a :class:`~dbconf.runtime.reports.DatabaseReport`
(a round trip, never raising) and the pool counts; the URL is the masked one and an error is
the driver's first line with the password masked, so nothing in it holds a password.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dbconf.pooling.leak_records import PoolStatus
from dbconf.runtime.reports import DatabaseReport

__all__ = ["database_health", "registry_health"]


def database_health(report: DatabaseReport, pool: PoolStatus | None) -> dict[str, Any]:
    """``{"database", "status": "up" | "down", "url", "latency_ms", "server_version",
    "error", "pool": {"size", "checked_out", "idle", "overflow"}}``."""
    out: dict[str, Any] = {
        "database": report.name,
        "status": "up" if report.ok else "down",
        "url": report.url,
        "latency_ms": report.latency_ms,
        "server_version": report.server_version,
        "error": report.error,
    }
    if pool is not None:
        out["pool"] = {
            "class": pool.pool,
            "size": pool.size,
            "checked_out": pool.checked_out,
            "idle": pool.idle,
            "overflow": pool.overflow,
        }
    return out


def registry_health(profile: str, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"status": "ok" | "unavailable", "profile", "databases": {name: entry}}``: ok when
    every database is up."""
    ok = all(entry["status"] == "up" for entry in entries)
    return {
        "status": "ok" if ok else "unavailable",
        "profile": profile,
        "databases": {entry["database"]: entry for entry in entries},
    }
