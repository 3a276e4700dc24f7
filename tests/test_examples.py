"""The examples run as documented: quickstart (SQLite), the FastAPI apps, two databases, the
FastAPI full-stack template's configuration (pydantic-settings, .env, ENVIRONMENT)."""

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

import dbconf
from dbconf.config import ProfileConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.fastapi_app import create_app  # noqa: E402
from examples.fastapi_async import create_app as create_async_app  # noqa: E402

# The caller's environment without dbconf settings, which would change what the examples load.
OUTSIDE_ENVIRON = {k: v for k, v in os.environ.items() if not k.startswith("DBCONF_")}


def run_example(name: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**OUTSIDE_ENVIRON, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_quickstart_runs_on_sqlite() -> None:
    out = run_example("quickstart.py")
    assert (
        "primary pool size: 5 (SQLAlchemy's default; set DBCONF_DATABASES__PRIMARY__POOL__SIZE"
        in out
    )
    assert "read back: primary 'written by quickstart', cache 'hello'" in out
    assert "after rollback and savepoint: ['written by quickstart', 'outer work']" in out
    assert out.rstrip().endswith("ok: every engine disposed")


def test_quickstart_reads_the_pool_size_from_the_environment() -> None:
    out = run_example("quickstart.py", {"DBCONF_DATABASES__PRIMARY__POOL__SIZE": "3"})
    assert "primary pool size: 3 (env DBCONF_DATABASES__PRIMARY__POOL__SIZE)" in out
    assert "pool status: size 3," in out


def test_two_databases_example(pg_url: str, maria_url: str) -> None:
    out = run_example(
        "two_databases.py", {"TEST_POSTGRES_URL": pg_url, "TEST_MARIADB_URL": maria_url}
    )
    assert "primary (postgresql) total 6149 cents" in out
    assert "analytics (mariadb) stored 6149 cents" in out


def test_fastapi_example_commits_and_rolls_back(tmp_path: Path) -> None:
    config = ProfileConfig.model_validate(
        {
            "databases": {
                "primary": {
                    "url": f"sqlite:///{tmp_path / 'api.db'}",
                    "sessions": {"batch": {"autoflush": False}},
                }
            }
        }
    )
    dbs = dbconf.Registry(config, profile="example")
    with TestClient(create_app(dbs)) as client:
        assert client.post("/notes", params={"body": "first"}).json() == {"id": 1}
        assert client.post("/notes", params={"body": " "}).status_code == 422
        assert client.post("/notes", params={"body": "fail after write"}).status_code == 409
        assert client.post("/notes", params={"body": "second"}).status_code == 200
        assert client.get("/notes").json() == ["first", "second"]
        assert dbs["primary"].engine.pool.checkedout() == 0


def test_fastapi_example_import_builds_nothing() -> None:
    code = "import examples.fastapi_app as m, dbconf.runtime.registry as r; print('app' in vars(m))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_fastapi_async_example_commits_and_rolls_back(tmp_path: Path) -> None:
    """The async example on aiosqlite through httpx's AsyncClient, its lifespan included
    (which creates the table at startup and disposes the pools at shutdown)."""
    config = ProfileConfig.model_validate(
        {
            "databases": {
                "primary": {
                    "url": f"sqlite:///{tmp_path / 'api.db'}",
                    "sessions": {"batch": {"autoflush": False}},
                }
            }
        }
    )
    dbs = dbconf.Registry(config, profile="example")
    app = create_async_app(dbs)
    transport = httpx.ASGITransport(app=app)

    async def main() -> None:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            assert (await client.post("/notes", params={"body": "first"})).json() == {"id": 1}
            assert (await client.post("/notes", params={"body": " "})).status_code == 422
            failed = await client.post("/notes", params={"body": "fail after write"})
            assert failed.status_code == 409
            assert (await client.post("/notes", params={"body": "second"})).status_code == 200
            assert (await client.get("/notes")).json() == ["first", "second"]
            assert dbs["primary"].async_pool_status().checked_out == 0
        await dbs.aclose()

    asyncio.run(main())


def test_fastapi_async_example_serves_the_development_profile(tmp_path: Path) -> None:
    """``examples.fastapi_async:app`` as uvicorn would load it, in a fresh process, on the
    repository's development profile (SQLite through aiosqlite)."""
    code = """
import asyncio, httpx
from examples.fastapi_async import app

async def main():
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=transport, base_url="http://test"
    ) as client:
        created = await client.post("/notes", params={"body": "from a fresh process"})
        print(created.status_code, (await client.get("/notes")).json()[-1])

asyncio.run(main())
"""
    env = {
        **OUTSIDE_ENVIRON,
        "PYTHONPATH": str(ROOT),
        "DBCONF_CONFIG": str(ROOT / "config" / "databases.yaml"),
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "200 from a fresh process"


def test_fastapi_async_example_import_builds_nothing() -> None:
    code = "import examples.fastapi_async as m; print('app' in vars(m))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# -- the FastAPI full-stack template's shape (examples/fullstack) ------------------------------

FULLSTACK = ROOT / "examples" / "fullstack" / "backend"
TEMPLATE_VARS = {
    "ENVIRONMENT",
    "PROJECT_NAME",
    "POSTGRES_SERVER",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "ITEMS_TABLE",
}


def fullstack_env(pg_url: str | None = None, **extra: str) -> dict[str, str]:
    """The caller's environment without the template's variables, plus the test server's."""
    env = {k: v for k, v in OUTSIDE_ENVIRON.items() if k not in TEMPLATE_VARS}
    env["PYTHONPATH"] = str(FULLSTACK)
    if pg_url is not None:
        url = make_url(pg_url)
        env |= {
            "POSTGRES_SERVER": str(url.host),
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": str(url.username),
            "POSTGRES_DB": str(url.database),
        }
    return env | extra


def run_in(cwd: Path, argv: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_fullstack_settings_field_serves_the_app(pg_url: str, pg_admin: sa.Engine) -> None:
    """Settings (pydantic-settings, ../.env) with a `databases` field from dbconf; the app on
    registry(settings.databases), against the test PostgreSQL (real env wins over .env)."""
    table = f"item_{uuid.uuid4().hex[:12]}"
    code = """
from fastapi.testclient import TestClient
from app.core.config import get_settings
from app.main import create_app
from dbconf.integrations.pydantic_settings import registry

settings = get_settings()
dbs = registry(settings.databases)
print(dbs.origins[("databases", "primary", "host")])
print(dbs.origins[("databases", "primary", "password")])
print("password shown:", "changethis" in repr(settings.databases))
with TestClient(create_app(settings)) as client:
    print(client.get("/api/v1/utils/health-check/").json())
    print(client.post("/api/v1/items/", params={"title": "first"}).json())
    print(client.get("/api/v1/items/").json())
"""
    try:
        out = run_in(
            FULLSTACK, [sys.executable, "-c", code], fullstack_env(pg_url, ITEMS_TABLE=table)
        ).splitlines()
    finally:
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    assert out[0] == (
        "config/databases.yaml:10:3 (via ${POSTGRES_SERVER} from settings field "
        "Settings.POSTGRES_SERVER)"
    )
    assert out[1] == (
        "config/databases.yaml:13:3 (via ${POSTGRES_PASSWORD} from settings field "
        "Settings.POSTGRES_PASSWORD)"
    )
    assert out[2:] == [
        "password shown: False",
        "{'environment': 'local', 'profile': 'local'}",
        "{'id': 1}",
        "['first']",
    ]


def test_fullstack_load_with_settings_checks_the_database(pg_url: str) -> None:
    """The other way round: dbconf.load(settings=...) in the pre-start script."""
    argv = [sys.executable, "-m", "app.backend_pre_start"]
    out = run_in(FULLSTACK, argv, fullstack_env(pg_url))
    assert out.startswith(
        "profile local; primary host from config/databases.yaml:10:3 (via ${POSTGRES_SERVER} "
        "from settings field Settings.POSTGRES_SERVER)\n"
    )
    assert "  ok: server " in out


def show(cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    argv = [sys.executable, "-m", "dbconf", "show", "--origin", "--format", "json"]
    data: dict[str, Any] = json.loads(run_in(cwd, argv, env))
    return data


def test_fullstack_environment_picks_the_profile_from_any_directory() -> None:
    """ENVIRONMENT from ../.env (local), or from the real environment; DBCONF_PROFILE=test
    wins over both; config/databases.yaml is found from backend/app upward."""
    dotenv = ROOT / "examples" / "fullstack" / ".env"
    out = show(FULLSTACK / "app", fullstack_env())
    assert out["profile"] == "local"
    assert out["file"] == str(FULLSTACK / "config" / "databases.yaml")
    assert out["chosen_by"] == (
        f"default_profile at {FULLSTACK / 'config' / 'databases.yaml'}:6:1 "
        f"(via ${{ENVIRONMENT}} from {dotenv}:4)"
    )
    assert out["origins"]["databases.primary.host"].endswith(
        f"(via ${{POSTGRES_SERVER}} from {dotenv}:6)"
    )
    assert out["config"]["databases"]["primary"]["password"] == "***"
    staging = show(FULLSTACK, fullstack_env(ENVIRONMENT="staging"))
    assert staging["profile"] == "staging"
    assert staging["config"]["databases"]["primary"]["pool"]["size"] == 5
    test = show(FULLSTACK, fullstack_env(ENVIRONMENT="production", DBCONF_PROFILE="test"))
    assert (test["profile"], test["chosen_by"]) == ("test", "env DBCONF_PROFILE")
