"""Helpers of the read-replica tests: a database with replicas, polling, the standby cluster."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from dbconf.config import DatabaseConfig
from dbconf.replicas.state import ReplicaStatus
from dbconf.runtime.database import Database


def replica_db(primary: str, *replicas: Any, name: str = "main", **routing: Any) -> Database:
    """A Database on ``primary`` with ``replicas`` (URLs, or dicts of replica settings)."""
    data: dict[str, Any] = {
        "url": primary,
        "replicas": [{"url": r} if isinstance(r, str) else r for r in replicas],
    }
    if routing:
        data["routing"] = routing
    return Database(name, DatabaseConfig.model_validate(data))


def wait_for(predicate: Callable[[], Any], what: str, seconds: float = 30.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after
    ``seconds`` (a deadline, never a timed assertion)."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {seconds} s")
        time.sleep(0.05)


def status_of(db: Database, i: int = 0) -> ReplicaStatus:
    return db.replica_status()[i]


def wait_up(db: Database) -> None:
    """Wait until every replica of ``db`` is up (starts the probe if needed)."""
    wait_for(lambda: all(s.state == "up" for s in db.replica_status()), "every replica up")


def wait_probed(db: Database) -> None:
    """Wait until every replica of ``db`` was probed at least once."""
    wait_for(lambda: all(s.state != "unknown" for s in db.replica_status()), "a first probe")


def cluster_of(url: str) -> tuple[str, str]:
    """(version, name) of the local Debian cluster listening on ``url``'s port."""
    port = str(sa.make_url(url).port)
    out = subprocess.run(["pg_lsclusters", "-h"], check=True, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        version, name, cluster_port, *_ = line.split()
        if cluster_port == port:
            return version, name
    raise AssertionError(f"no local cluster listens on port {port}")


def pg_ctlcluster(url: str, action: str) -> None:
    version, name = cluster_of(url)
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
        check=True,
        capture_output=True,
    )


def start_standby(url: str) -> None:
    """Start the cluster on ``url``'s port unless it runs; wait until it is in recovery."""
    version, name = cluster_of(url)
    status = subprocess.run(["pg_ctlcluster", version, name, "status"], capture_output=True)
    if status.returncode != 0:
        pg_ctlcluster(url, "start")
    wait_for(lambda: in_recovery(url), "the standby back in recovery", 120)


def in_recovery(url: str) -> bool:
    engine = sa.create_engine(url, poolclass=sa.NullPool, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            return bool(conn.execute(sa.text("select pg_is_in_recovery()")).scalar_one())
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def on_standby(url: str, sql: str) -> Any:
    engine = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    finally:
        engine.dispose()
