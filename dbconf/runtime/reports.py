"""What :meth:`Registry.check` / :meth:`Registry.async_check` report for one database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import URL

from dbconf.config import DatabaseConfig
from dbconf.config.urls import mask_url
from dbconf.dialects.pgbouncer import admin_version
from dbconf.replicas.state import ReplicaStatus
from dbconf.sessions.resilience import first_line

__all__ = ["DatabaseReport", "make_report", "one_line", "pooler_status"]


@dataclass(frozen=True)
class DatabaseReport:
    """The result of :meth:`Registry.check` for one database. Nothing in it holds a password."""

    name: str
    ok: bool
    dialect: str
    driver: str
    url: str
    server_version: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    pool: Mapping[str, Any] = field(default_factory=dict)
    timeouts: Mapping[str, float] = field(default_factory=dict)
    # each replica as probed by the check (dbconf.replicas); () without replicas
    replicas: tuple[ReplicaStatus, ...] = ()

    @property
    def replicas_ok(self) -> bool:
        """False when a replica could not be measured (unreachable, not a standby, not
        replicating); a replica that is only lagging past max_lag is not a failure."""
        return all(r.state == "up" or r.lag is not None for r in self.replicas)

    # the declared pooler and what its admin console said (None: no pooler declared)
    pooler: str | None = None

    def render(self) -> str:
        """Human-readable lines for ``dbconf check`` (the URL is masked)."""
        head = f"{self.name}: {self.dialect}+{self.driver} {self.url}"
        replicas = "".join(f"\n  {_replica_line(r)}" for r in self.replicas)
        if not self.ok:
            return f"{head}\n  UNREACHABLE: {self.error}{replicas}"
        pool = " ".join(f"{k}={v}" for k, v in self.pool.items())
        timeouts = " ".join(f"{k}={v:g}s" for k, v in self.timeouts.items()) or "(driver defaults)"
        pooler = f"\n  pooler: {self.pooler}" if self.pooler else ""
        return (
            f"{head}\n  ok: server {self.server_version}, round trip {self.latency_ms:.1f} ms"
            f"\n  pool: {pool}\n  timeouts: {timeouts}{pooler}{replicas}"
        )


def _replica_line(status: ReplicaStatus) -> str:
    lag = f"lag {status.lag:.3g} s" if status.lag is not None else "lag unknown"
    line = f"{status.name} {status.url}: {status.state}, {lag}"
    return f"{line} ({status.reason})" if status.reason else line


def make_report(
    name: str, config: DatabaseConfig, url: URL | None, ok: bool, **kw: Any
) -> DatabaseReport:
    """A report on ``name`` reached through ``url`` (its sync or its async URL)."""
    url = url or config.sqlalchemy_url
    return DatabaseReport(
        name=name,
        ok=ok,
        dialect=url.get_backend_name(),
        driver=url.get_driver_name(),
        url=mask_url(url),
        timeouts=config.timeouts.model_dump(exclude_none=True),
        **kw,
    )


def pooler_status(config: DatabaseConfig) -> str | None:
    """The declared pooler, and the version its admin console reports (PgBouncer cannot be
    detected through an ordinary connection: ``server`` above is PostgreSQL's version)."""
    if config.pooler is None:
        return None
    version, note = admin_version(config.sqlalchemy_url)
    found = f"{version} {note}" if version else note
    return f"{config.pooler.mode} declared; {found}"


def server_version(info: tuple[Any, ...] | None) -> str | None:
    return ".".join(str(part) for part in info) if info else None


def one_line(config: DatabaseConfig, exc: BaseException) -> str:
    """The driver's error in one line, the password masked."""
    orig = getattr(exc, "orig", None) or exc
    name = type(orig).__name__
    if not str(orig).strip():
        return name
    password = config.sqlalchemy_url.password
    return f"{name}: {first_line(orig, str(password) if password else None)}"
