"""db.health(), registry.health() (sync and async) and the FastAPI readiness endpoint against
the real PostgreSQL server and an unreachable one: per-database status, never the password."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

import dbconf
from dbconf.config import ProfileConfig
from dbconf.integrations.fastapi import readiness

PASSWORD = "p@ss:w%rd/1"
DOWN = "postgresql+psycopg2://app:p%40ss%3Aw%25rd%2F1@127.0.0.1:1/app"


def registry(pg_url: str, *, down: bool = True) -> dbconf.Registry:
    databases = {"main": {"url": pg_url, "pool": {"size": 3}}}
    if down:
        databases["gone"] = {"url": DOWN, "timeouts": {"connect": 2}}  # type: ignore[dict-item]
    return dbconf.Registry(ProfileConfig.model_validate({"databases": databases}), profile="web")


def test_database_and_registry_health(
    pg_url: str, assert_no_secret: Callable[[Iterable[object], str], None]
) -> None:
    with registry(pg_url) as dbs:
        with dbs["main"].session() as s:
            s.execute(sa.text("select 1"))
            main = dbs["main"].health()  # one connection held by the session, one checked
        assert main["status"] == "up"
        assert main["database"] == "main"
        assert main["latency_ms"] > 0
        assert main["server_version"].split(".")[0].isdigit()
        assert main["pool"] == {
            "class": "QueuePool", "size": 3, "checked_out": 1, "idle": 1, "overflow": 0,
        }  # fmt: skip
        gone = dbs["gone"].health()
        assert gone["status"] == "down"
        assert gone["error"].startswith("OperationalError")
        assert gone["url"] == "postgresql+psycopg2://app:***@127.0.0.1:1/app"
        whole = dbs.health()
        assert whole["status"] == "unavailable"
        assert whole["profile"] == "web"
        assert {k: v["status"] for k, v in whole["databases"].items()} == {
            "main": "up",
            "gone": "down",
        }
        assert dbs.health(["main"])["status"] == "ok"
        assert_no_secret([json.dumps(whole)], PASSWORD)


def test_async_health(pg_url: str) -> None:
    async def main() -> None:
        async with registry(pg_url) as dbs:
            whole = await dbs.async_health()
            assert whole["status"] == "unavailable"
            main = whole["databases"]["main"]
            assert main["status"] == "up"
            assert (main["pool"]["checked_out"], main["pool"]["idle"]) == (0, 1)
            assert whole["databases"]["gone"]["status"] == "down"
            assert (await dbs.async_health(["main"]))["status"] == "ok"

    asyncio.run(main())


def test_fastapi_readiness(
    pg_url: str, assert_no_secret: Callable[[Iterable[object], str], None]
) -> None:
    with registry(pg_url) as dbs:
        app = FastAPI()
        app.get("/ready")(readiness(dbs, names=["main"]))
        app.get("/ready/all")(readiness(dbs))
        app.get("/ready/async")(readiness(dbs, names=["main"], use_async=True))
        with TestClient(app) as client:
            ok = client.get("/ready")
            assert ok.status_code == 200
            assert ok.json()["databases"]["main"]["status"] == "up"
            bad = client.get("/ready/all")
            assert bad.status_code == 503
            assert bad.json()["databases"]["gone"]["status"] == "down"
            assert_no_secret([bad.text], PASSWORD)
            aok = client.get("/ready/async")
            assert aok.status_code == 200
            assert aok.json()["status"] == "ok"
