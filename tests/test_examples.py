"""The examples run as documented: quickstart (SQLite), the FastAPI apps, two databases."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

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
    code = "import examples.fastapi_app as m, dbconf.registry as r; print('app' in vars(m))"
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
