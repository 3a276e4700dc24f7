""".env files: env_file=, DBCONF_ENV_FILE, the YAML's env_file: (relative to the file), parsed
by python-dotenv's parser, under the real environment, each value with its path:line."""

from __future__ import annotations

import json
import logging
import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from dotenv import dotenv_values

from dbconf.cli import EXIT_CONFIG, EXIT_OK, main
from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile

WriteConfig = Callable[..., Path]

CONFIG = """
    profiles:
      p:
        databases:
          primary:
            driver: postgresql+psycopg2
            host: ${POSTGRES_SERVER}
            port: ${POSTGRES_PORT:-5432}
            username: app
            password: ${POSTGRES_PASSWORD}
            database: ${POSTGRES_DB:-app}
"""

DOTENV = """
    POSTGRES_SERVER=db.internal
    export POSTGRES_PORT=6543
    POSTGRES_PASSWORD="pw-from-dotenv"
    DBCONF_DATABASES__PRIMARY__POOL__SIZE=7
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems_of(**kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_profile("p", **kwargs)  # type: ignore[arg-type]
    return [str(p) for p in info.value.problems]


def test_env_file_feeds_interpolation_and_dbconf_vars(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    env_file = write(tmp_path / ".env", DOTENV)
    loaded = load_profile("p", path=write_config(CONFIG), environ={}, env_file=env_file)
    db = loaded.config.databases["primary"]
    assert (db.host, db.port, db.pool.size) == ("db.internal", 6543, 7)
    assert db.password is not None
    assert db.password.get_secret_value() == "pw-from-dotenv"
    assert str(loaded.origin("databases", "primary", "pool", "size")) == (
        f"{env_file}:4 (via DBCONF_DATABASES__PRIMARY__POOL__SIZE)"
    )
    assert str(loaded.origin("databases", "primary", "host")).endswith(
        f"(via ${{POSTGRES_SERVER}} from {env_file}:1)"
    )


def test_real_environment_wins_over_the_file(write_config: WriteConfig, tmp_path: Path) -> None:
    env_file = write(tmp_path / ".env", DOTENV)
    environ = {"POSTGRES_SERVER": "real.host", "DBCONF_DATABASES__PRIMARY__POOL__SIZE": "9"}
    loaded = load_profile("p", path=write_config(CONFIG), environ=environ, env_file=env_file)
    db = loaded.config.databases["primary"]
    assert (db.host, db.port, db.pool.size) == ("real.host", 6543, 9)
    assert str(loaded.origin("databases", "primary", "pool", "size")) == (
        "env DBCONF_DATABASES__PRIMARY__POOL__SIZE"
    )
    assert str(loaded.origin("databases", "primary", "host")).endswith("(via ${POSTGRES_SERVER})")


def test_the_values_are_those_python_dotenv_reads(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    """Quotes, escapes, `export`, comments, a multi-line value, ${VAR} inside the file
    resolved against earlier lines, then the given environ (never os.environ)."""
    env_file = write(
        tmp_path / ".env",
        r"""
        A='single $quoted'
        B="double\tescaped"  # a comment
        export C=plain value
        D=${C}-${FROM_ENVIRON}-${UNSET:-fallback}
        E="line one
        line two"
        """,
    )
    config = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: "sqlite://"
                connect_args: {a: "${A}", b: "${B}", c: "${C}", d: "${D}", e: "<${E}>"}
        """
    )
    environ = {"FROM_ENVIRON": "given"}
    loaded = load_profile("p", path=config, environ=environ, env_file=env_file)
    args = loaded.config.databases["primary"].connect_args
    expected = dict(dotenv_values(env_file, interpolate=False))
    assert args["a"] == expected["A"] == "single $quoted"
    assert args["b"] == expected["B"] == "double\tescaped"
    assert args["c"] == "plain value"
    assert args["d"] == "plain value-given-fallback"
    assert args["e"] == f"<{expected['E']}>" == "<line one\nline two>"
    assert "FROM_ENVIRON" not in os.environ  # it came from environ=


def test_dbconf_env_file_names_the_file(write_config: WriteConfig, tmp_path: Path) -> None:
    env_file = write(tmp_path / "prod.env", DOTENV)
    environ = {"DBCONF_ENV_FILE": str(env_file)}
    loaded = load_profile("p", path=write_config(CONFIG), environ=environ)
    assert loaded.config.databases["primary"].host == "db.internal"


def test_yaml_env_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    write(tmp_path / ".env", DOTENV)
    config = write(
        tmp_path / "backend" / "config" / "databases.yaml",
        "env_file: ../../.env\n" + textwrap.dedent(CONFIG),
    )
    loaded = load_profile("p", path=config, environ={})
    assert loaded.config.databases["primary"].host == "db.internal"
    assert str(loaded.origin("databases", "primary", "pool", "size")).startswith(
        f"{tmp_path / '.env'}:4 "
    )


def test_yaml_env_file_that_does_not_exist_is_skipped(tmp_path: Path) -> None:
    """As pydantic-settings skips a missing env_file: in a container the variables come
    from the environment and there is no .env."""
    config = write(
        tmp_path / "config" / "databases.yaml", "env_file: ../.env\n" + textwrap.dedent(CONFIG)
    )
    loaded = load_profile(
        "p", path=config, environ={"POSTGRES_SERVER": "h", "POSTGRES_PASSWORD": "x"}
    )
    assert loaded.config.databases["primary"].host == "h"


@pytest.mark.parametrize("how", ["argument", "DBCONF_ENV_FILE"])
def test_a_named_env_file_that_does_not_exist_is_an_error(
    write_config: WriteConfig, tmp_path: Path, how: str
) -> None:
    missing = tmp_path / "missing.env"
    if how == "argument":
        problems = problems_of(path=write_config(CONFIG), environ={}, env_file=missing)
        where = "env_file="
    else:
        environ = {"DBCONF_ENV_FILE": str(missing)}
        problems = problems_of(path=write_config(CONFIG), environ=environ)
        where = "env DBCONF_ENV_FILE"
    assert problems[0] == (
        f"{where}: cannot read the env file {missing} (No such file or directory); fix the "
        "path or remove the setting"
    )


def test_an_env_file_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / ".env").mkdir()
    config = write(tmp_path / "databases.yaml", "env_file: .env\n" + textwrap.dedent(CONFIG))
    problems = problems_of(path=config, environ={})
    assert problems[0] == (
        f"{config}:1:1: cannot read the env file {tmp_path / '.env'} (it is a directory, not a "
        "regular file); fix the path or remove the setting"
    )


@pytest.mark.parametrize("value", ["${ENV_FILE}", "", "[a.env]"])
def test_yaml_env_file_must_be_a_plain_path(tmp_path: Path, value: str) -> None:
    config = write(
        tmp_path / "databases.yaml", f"env_file: {value or 'null'}\n" + textwrap.dedent(CONFIG)
    )
    if value == "":
        assert load_profile(
            "p", path=config, environ={"POSTGRES_SERVER": "h", "POSTGRES_PASSWORD": "x"}
        )
        return
    (problem,) = problems_of(path=config, environ={})
    assert problem == (
        f"{config}:1:1 env_file: must be a path (relative to this file), without ${{…}}"
    )


def test_a_line_python_dotenv_cannot_parse_is_skipped_with_a_warning(
    write_config: WriteConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env_file = write(tmp_path / ".env", 'POSTGRES_SERVER=h\nBROKEN="never closed\n')
    with caplog.at_level(logging.WARNING, logger="dbconf.loader"):
        loaded = load_profile(
            "p", path=write_config(CONFIG), environ={"POSTGRES_PASSWORD": "x"}, env_file=env_file
        )
    assert loaded.config.databases["primary"].host == "h"
    assert [r.getMessage() for r in caplog.records] == [
        f"{env_file}:2: cannot parse this line; it is skipped"
    ]
    assert "never closed" not in caplog.text


def test_a_dbconf_var_from_the_file_is_told_by_path_and_line_in_errors(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    env_file = write(tmp_path / ".env", DOTENV.replace("SIZE=7", "SIZE=0"))
    (problem,) = problems_of(path=write_config(CONFIG), environ={}, env_file=env_file)
    assert problem.startswith(
        f"{env_file}:4 (via DBCONF_DATABASES__PRIMARY__POOL__SIZE) "
        "profiles.p.databases.primary.pool.size: "
    )


def test_a_missing_variable_error_names_the_file_line(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    env_file = write(tmp_path / ".env", "POSTGRES_PASSWORD=x\n")
    (problem,) = problems_of(path=write_config(CONFIG), environ={}, env_file=env_file)
    assert "environment variable POSTGRES_SERVER is not set" in problem


def test_dbconf_profile_in_the_file_picks_the_profile(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    env_file = write(tmp_path / ".env", "DBCONF_PROFILE=other\n")
    config = write_config(
        CONFIG + "      other:\n        databases: {primary: {url: 'sqlite://'}}\n"
    )
    loaded = load_profile(path=config, environ={}, env_file=env_file)
    assert loaded.name == "other"
    assert loaded.chosen_by == f"{env_file}:1 (via DBCONF_PROFILE)"


def test_show_origin_names_the_env_file_and_masks_its_password(
    write_config: WriteConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = write(tmp_path / ".env", DOTENV)
    config = write_config(CONFIG)
    argv = ["show", "--origin", "-p", "p", "-c", str(config), "--env-file", str(env_file)]
    assert main(argv, environ={}) == EXIT_OK
    out = capsys.readouterr().out
    assert f"# {env_file}:4 (via DBCONF_DATABASES__PRIMARY__POOL__SIZE)" in out
    assert f"(via ${{POSTGRES_PASSWORD}} from {env_file}:3)" in out
    assert "pw-from-dotenv" not in out
    assert main([*argv, "--format", "json"], environ={}) == EXIT_OK
    origins = json.loads(capsys.readouterr().out)["origins"]
    assert origins["databases.primary.pool.size"] == (
        f"{env_file}:4 (via DBCONF_DATABASES__PRIMARY__POOL__SIZE)"
    )
    environ = {"DBCONF_ENV_FILE": str(tmp_path / "nope.env")}
    assert main(["show", "-p", "p", "-c", str(config)], environ=environ) == EXIT_CONFIG
    assert "env DBCONF_ENV_FILE: cannot read the env file" in capsys.readouterr().err


def test_dbconf_env_file_is_a_reserved_name(write_config: WriteConfig, tmp_path: Path) -> None:
    """Not read as a key path (DBCONF_ENV_FILE is no profile key), and a misspelling is told."""
    env_file = write(tmp_path / ".env", DOTENV)
    environ = {"DBCONF_ENV_FIL": str(env_file), "POSTGRES_SERVER": "h", "POSTGRES_PASSWORD": "x"}
    (problem,) = problems_of(path=write_config(CONFIG), environ=environ)
    assert problem.startswith("env DBCONF_ENV_FIL: DBCONF_ENV_FIL is not a setting dbconf reads")
    assert "(did you mean 'DBCONF_ENV_FILE'?)" in problem
    loaded = load_profile(
        "p", path=write_config(CONFIG), environ={"DBCONF_ENV_FILE": str(env_file)}
    )
    assert loaded.config.databases["primary"].host == "db.internal"
