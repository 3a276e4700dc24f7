"""The dbconf command: show, profiles, schema (check is in test_cli_check.py)."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import sqlalchemy
from hypothesis import given
from hypothesis import strategies as st

from dbconf.cli.commands import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    build_parser,
    json_schema,
    main,
    package_version,
    plain,
)
from dbconf.errors import ConfigError, PoolExhaustedError
from dbconf.loading.loader import load_profile

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


# --- exit codes, broken pipes, interrupts, bugs, --version, --help (issue #8) -------------


class _RaisingEnviron(Mapping[str, str]):
    """An environment whose every lookup raises ``error``: a stand-in for a failure deep
    inside a command (the environment is a parameter, so nothing is patched)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __getitem__(self, key: str) -> str:
        raise self.error

    def __iter__(self) -> Iterator[str]:
        raise self.error

    def __len__(self) -> int:
        raise self.error


def _run_raising(
    capsys: pytest.CaptureFixture[str], config: Path, error: BaseException, *argv: str
) -> tuple[int, str, str]:
    code = main([*argv, "show", "-p", "production", "-c", str(config)], _RaisingEnviron(error))
    out, err = capsys.readouterr()
    return code, out, err


def test_keyboard_interrupt_prints_one_line_and_exits_1(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run_raising(capsys, config, KeyboardInterrupt())
    assert (code, out, err) == (EXIT_FAILED, "", "dbconf: interrupted\n")


@pytest.mark.parametrize("error", [RuntimeError, KeyError, TypeError, OSError])
def test_unexpected_error_is_one_line_with_its_type_only(
    error: type[Exception], config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run_raising(capsys, config, error(f"postgresql://u:{PASSWORD}@h/db"))
    assert code == EXIT_FAILED
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"dbconf: internal error ({error.__name__}), a bug in dbconf")
    assert "--traceback" in err
    assert PASSWORD not in err
    assert "Traceback" not in err


def test_a_database_error_at_run_time_exits_1_and_a_config_error_2(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """dbconf's own errors print their (password-free) message; those from the database at
    run time (also SQLAlchemy errors) are failures (1), the others wrong input (2)."""
    code, _, err = _run_raising(capsys, config, PoolExhaustedError("main", 1, 0, 1.0))
    assert code == EXIT_FAILED
    assert err.startswith("dbconf: database 'main': no connection became free")
    code, _, err = _run_raising(capsys, config, ConfigError("bad"))
    assert (code, err) == (EXIT_CONFIG, "dbconf: invalid database configuration: bad\n")


def test_traceback_option_shows_the_traceback_of_a_bug(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run_raising(capsys, config, RuntimeError("boom"), "--traceback")
    assert code == EXIT_FAILED
    assert err.startswith("Traceback (most recent call last):")
    assert err.rstrip().endswith("RuntimeError: boom")


def test_usage_errors_return_2_instead_of_raising(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["nope"], ["show", "--format", "xml"], ["check", "--database"]):
        assert main(argv, environ={}) == EXIT_CONFIG, argv
        assert "usage: dbconf" in capsys.readouterr().err


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"], environ={}) == EXIT_OK
    out = capsys.readouterr().out
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert declared is not None
    assert out == f"dbconf {declared[1]} (SQLAlchemy {sqlalchemy.__version__})\n"
    assert package_version("no-such-distribution-dbconf") == (
        "(version unknown: not installed as a package)"
    )


MARKUP = re.compile(r"``|:[a-z]+:`|`[^`\s]+`")


def _helps(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """The --help text of the top level and of every subcommand."""
    parser = build_parser()
    subparsers = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    helps = {}
    for argv in ([], *([name] for name in subparsers)):
        assert main([*argv, "--help"], environ={}) == EXIT_OK
        helps[" ".join(argv) or "dbconf"] = capsys.readouterr().out
    return helps


def test_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    helps = _helps(capsys)
    assert set(helps) == {
        "dbconf",
        "show",
        "profiles",
        "schema",
        "check",
        "shell",
        "migrate",
        "migrations",
    }
    for name, text in helps.items():
        assert text.startswith("usage: dbconf"), name
        assert not MARKUP.search(text), f"{name} --help shows reST markup: {text}"
    assert (
        "The dbconf command: show, profiles, schema, check, shell, migrate, migrations."
        in (helps["dbconf"])
    )


@given(
    st.lists(
        st.sampled_from(["``", "`", ":class:", ":func:`~a.b`", ":ref:`t <x>`", "a", " ", "\n"])
        | st.text(alphabet="ab.:`~<> \n", max_size=6),
        max_size=12,
    )
)
def test_plain_leaves_no_markup(parts: list[str]) -> None:
    text = plain("".join(parts))
    assert not MARKUP.search(text)
    assert "  " not in text
    assert text == text.strip()


def test_plain_keeps_the_words() -> None:
    assert plain("Uses ``x`` and :class:`~dbconf.Registry` or\n  :func:`dbconf.load`.") == (
        "Uses x and Registry or dbconf.load."
    )


def test_closed_pipe_exits_quietly(write_config: Callable[[str], Path]) -> None:
    """`dbconf show | head -1` with more output than a pipe holds: head closes the pipe
    while dbconf is writing. No BrokenPipeError, exit 0 (the command's own result)."""
    databases = "\n".join(
        f"      db_{i}: {{url: 'sqlite:///var/db_{i}.db', pool: {{size: 2}}}}" for i in range(400)
    )
    config = write_config(f"profiles:\n  p:\n    databases:\n{databases}\n")
    dbconf = subprocess.Popen(
        [sys.executable, "-m", "dbconf", "show", "--origin", "-p", "p", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert dbconf.stdout is not None
    assert dbconf.stderr is not None
    head = subprocess.Popen(["head", "-1"], stdin=dbconf.stdout, stdout=subprocess.PIPE)
    dbconf.stdout.close()  # head holds the only read end: it closes it after one line
    first_line, _ = head.communicate(timeout=60)
    err = dbconf.stderr.read().decode()
    assert dbconf.wait(timeout=60) == EXIT_OK, err
    assert first_line.decode() == f"# profile p from {config}\n"
    assert err == ""
