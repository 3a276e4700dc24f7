"""Helpers of the async tests: one database per async driver, on the real servers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from dbconf.config import ProfileConfig
from dbconf.runtime.database import Database
from dbconf.runtime.registry import Registry

DRIVERS = ["asyncpg", "psycopg_async", "aiomysql", "aiosqlite"]
PG_DRIVERS = ["asyncpg", "psycopg_async"]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def kind(driver: str) -> str:
    return {"aiomysql": "maria", "aiosqlite": "lite"}.get(driver, "pg")


PIDS: dict[str, set[int]] = {}


def tag(db: Database, app: str) -> None:
    """Record under ``app`` the server PIDs of the running loop's new PostgreSQL connections of
    ``db``, read from the driver without a round trip (an ``application_name`` connect argument
    would not pass the sync side's check for asyncpg; a ``SET`` on connect would add a
    statement, and a cancellation point, to every connect). psycopg async connections also get
    ``app`` as their application_name (``make_registry(app=...)``)."""
    engine = db.async_engine.sync_engine
    pids = PIDS.setdefault(app, set())

    @event.listens_for(engine, "connect")
    def _record(dbapi_connection: Any, _record: Any) -> None:
        driver = dbapi_connection.driver_connection
        get_pid = getattr(driver, "get_server_pid", None)  # asyncpg
        pids.add(int(get_pid() if get_pid is not None else driver.info.backend_pid))


def make_registry(
    driver: str, urls: dict[str, str], tmp_path: Path, app: str | None = None, **extra: Any
) -> Registry:
    """A registry with one database ``main`` on ``driver`` (urls: pg, maria sync URLs)."""
    k = kind(driver)
    if k == "lite":
        cfg: dict[str, Any] = {"url": f"sqlite:///{tmp_path}/{unique('core')}.db"}
    else:
        cfg = {"url": urls[k], "async_driver": driver}
    if driver == "psycopg_async" and app is not None:
        cfg["connect_args"] = {"application_name": app}
    cfg.update(extra)
    return Registry(ProfileConfig.model_validate({"databases": {"main": cfg}}), profile="test")


def sqlite_sleep(db: Database) -> None:
    """Give the running loop's aiosqlite connections a ``sleep(seconds)`` SQL function that
    blocks the connection's thread, as pg_sleep blocks the backend."""
    engine = db.async_engine.sync_engine

    @event.listens_for(engine, "connect")
    def _add(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("sleep", 1, lambda s: time.sleep(s) or 0)


def sleep_sql(driver: str, seconds: float) -> str:
    k = kind(driver)
    if k == "pg":
        return f"SELECT pg_sleep({seconds})"
    if k == "maria":
        return f"SELECT SLEEP({seconds})"
    return f"SELECT sleep({seconds})"


def table_sql(driver: str, table: str) -> str:
    engine = " ENGINE=InnoDB" if kind(driver) == "maria" else ""
    return f"CREATE TABLE {table} (id int PRIMARY KEY, v int){engine}"


def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def backends(pg_admin: sa.Engine, app: str, state: str | None = None) -> int:
    """Backends named ``app`` or recorded under it by :func:`tag` (in ``state`` if given)."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE (application_name = :a OR pid = ANY(:p))"
    if state is not None:
        sql += " AND state = :s"
    pids = sorted(PIDS.get(app, ()))
    with pg_admin.connect() as conn:
        return int(conn.execute(sa.text(sql), {"a": app, "p": pids, "s": state}).scalar_one())
