"""The examples run as documented: quickstart (SQLite), the FastAPI app, two databases."""

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

import dbconf
from dbconf.config import ProfileConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.fastapi_app import create_app  # noqa: E402

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
