"""The dbconf command: show, profiles, schema (check is in test_cli_check.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dbconf.cli import json_schema, main
from dbconf.loader import load_profile

PASSWORD = "p@ss:w%rd"
ENCODED = "p%40ss%3Aw%25rd"
CONFIG = """
    profiles:
      base:
        databases:
          primary:
            pool: {size: 5, recycle: 30m}
      production:
        extends: base
        databases:
          primary:
            url: ${DATABASE_URL}
            application_name: billing
            connect_args: {sslpassword: hunter2}
          analytics:
            driver: postgresql+psycopg2
            host: db.internal
            username: reporter
            password: p@ss:w%rd
            database: analytics
"""


@pytest.fixture
def config(write_config: Callable[[str], Path]) -> Path:
    return write_config(CONFIG)


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, environ: dict[str, str] | None = None
) -> tuple[int, str, str]:
    code = main(list(argv), environ=environ or {})
    out, err = capsys.readouterr()
    return code, out, err


def test_show_text_with_origins(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {
        "DATABASE_URL": f"postgresql://app:{ENCODED}@db/app",
        "DBCONF_DATABASES__PRIMARY__POOL__SIZE": "7",
    }
    code, out, err = run(
        capsys, "show", "-p", "production", "-c", str(config), "--origin", environ=env
    )
    assert code == 0, err
    lines = {line.split("=")[0].strip(): line for line in out.splitlines() if "=" in line}
    assert "= 7" in lines["databases.primary.pool.size"]
    assert "# env DBCONF_DATABASES__PRIMARY__POOL__SIZE" in lines["databases.primary.pool.size"]
    assert f"# {config}:5:25" in lines["databases.primary.pool.recycle"]
    assert "# env DATABASE_URL" in lines["databases.primary.url"]
    assert '"postgresql://app:***@db/app"' in lines["databases.primary.url"]
    assert "# default" in lines["databases.primary.hide_parameters"]
    assert '"***"' in lines["databases.analytics.password"]
    assert '"***"' in lines["databases.primary.connect_args.sslpassword"]
    for secret in (PASSWORD, ENCODED, "hunter2"):
        assert secret not in out + err


def test_show_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"DATABASE_URL": f"postgresql://app:{ENCODED}@db/app"}
    code, out, _ = run(
        capsys,
        "show",
        "-p",
        "production",
        "-c",
        str(config),
        "--format",
        "json",
        "--origin",
        environ=env,
    )
    assert code == 0
    data = json.loads(out)
    assert data["profile"] == "production"
    primary = data["config"]["databases"]["primary"]
    assert primary["pool"] == {"size": 5, "recycle": 1800.0}
    assert primary["effective_url"] == "postgresql+psycopg2://app:***@db/app"
    assert data["origins"]["databases.primary.url"] == "env DATABASE_URL"
    assert data["origins"]["default_database"] == "default (the first database declared)"
    assert PASSWORD not in out
    assert ENCODED not in out


def test_show_config_error_exit_2_without_traceback(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "show", "-p", "production", "-c", str(config))
    assert code == 2
    assert out == ""
    assert err.startswith("dbconf: invalid database configuration")
    assert "environment variable DATABASE_URL is not set" in err
    assert "Traceback" not in err
    assert PASSWORD not in err


def test_unknown_profile_suggests(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "show", "-p", "prodution", "-c", str(config))
    assert code == 2
    assert "no profile 'prodution' (did you mean 'production'?)" in err


def test_profiles_lists_extends(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profiles", "-c", str(config))
    assert code == 0
    assert out.splitlines()[1:] == ["base", "production  (extends base)"]


def test_profiles_reads_dbconf_config(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profiles", environ={"DBCONF_CONFIG": str(config)})
    assert code == 0
    assert f"# profiles in {config}" in out


def test_schema_matches_shipped_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    shipped = Path(__file__).parent.parent / "dbconf" / "schema.json"
    assert json.loads(out) == json.loads(shipped.read_text()), (
        "regenerate: dbconf schema > dbconf/schema.json"
    )


def test_schema_describes_the_format() -> None:
    schema = json_schema()
    database = schema["$defs"]["DatabaseConfig"]
    assert database["additionalProperties"] is False
    assert {"url", "pool", "timeouts", "sessions", "password_file"} <= set(database["properties"])
    assert "class" in schema["$defs"]["PoolConfig"]["properties"]
    assert "^(x-|\\.)" in schema["patternProperties"]


def test_sample_config_references_schema() -> None:
    sample = Path(__file__).parent.parent / "config" / "databases.yaml"
    assert (
        sample.read_text().splitlines()[0]
        == "# yaml-language-server: $schema=../dbconf/schema.json"
    )


def test_python_dash_m_entry_point(config: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dbconf", "profiles", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "production  (extends base)" in result.stdout


def test_secret_query_values_and_connect_args_are_masked(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              a:
                url: "postgresql://u@h/db?password=S3cr3tQ&sslmode=require"
                connect_args: {sslpassword: CAxyz}
        """
    )
    for argv in (["show", "--origin"], ["show", "--format", "json", "--origin"]):
        code, out, err = run(capsys, *argv, "-p", "p", "-c", str(path))
        assert code == 0, err
        assert "u:***@h/db?sslmode=require" in out
        assert "S3cr3tQ" not in out
        assert "CAxyz" not in out
    loaded = load_profile("p", path=path, environ={})
    assert "S3cr3tQ" not in repr(loaded)
    assert "CAxyz" not in repr(loaded)
    assert loaded.config.databases["a"].sqlalchemy_url.password == "S3cr3tQ"  # lifted


def test_schema_allows_interpolation_where_the_file_may_use_it() -> None:
    defs = json_schema()["$defs"]
    for model, field in [
        ("PoolConfig", "size"),
        ("DatabaseConfig", "port"),
        ("DatabaseConfig", "echo"),
        ("ProfileConfig", "workers"),
    ]:
        options = defs[model]["properties"][field]["anyOf"]
        assert {
            "type": "string",
            "pattern": "^\\$\\{[^}]+\\}$",
            "description": "${VAR…}",
        } in options
    timeout = json.dumps(defs["PoolConfig"]["properties"]["timeout"])
    assert '"pattern": "^\\\\$\\\\{[^}]+\\\\}$"' in timeout
