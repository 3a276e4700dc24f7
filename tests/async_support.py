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
from dbconf.database import Database
from dbconf.registry import Registry

DRIVERS = ["asyncpg", "psycopg_async", "aiomysql", "aiosqlite"]
PG_DRIVERS = ["asyncpg", "psycopg_async"]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def kind(driver: str) -> str:
    return {"aiomysql": "maria", "aiosqlite": "lite"}.get(driver, "pg")


def tag(db: Database, app: str) -> None:
    """Give the running loop's new PostgreSQL connections of ``db`` the application_name
    ``app``: psycopg async takes it as a connect argument (``make_registry(app=...)``), asyncpg
    gets a ``SET`` on connect (its ``server_settings`` would not pass the sync side's check).
    """
    engine = db.async_engine.sync_engine
    if engine.dialect.driver != "asyncpg":
        return

    @event.listens_for(engine, "connect")
    def _name(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET application_name = '{app}'")
        cursor.close()


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
    sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"
    if state is not None:
        sql += " AND state = :s"
    with pg_admin.connect() as conn:
        return int(conn.execute(sa.text(sql), {"a": app, "s": state}).scalar_one())
