"""The credential keys at load: password_file, password_command, credentials, credentials_ttl.

One source at a time (each with origin), layers replacing each other's sources, the callable
imported and checked at load like session classes, and ``dbconf show`` displaying the keys
(paths, argv, import paths are not secrets) without any password.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dbconf.cli import main
from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile

WriteConfig = Callable[..., Path]
URL = "postgresql://app@db.example/app"
EXCLUDE = (
    "password_file, password_command and credentials exclude each other and a fixed "
    "password (password, or one in url): keep one"
)


def problems_of(path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=path, **kwargs)
    return [str(problem) for problem in info.value.problems]


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module on sys.path with callables of several shapes; yields its name."""
    name = f"creds_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(
        "def token(target):\n    return 'x'\n\n"
        "async def async_token(target):\n    return 'x'\n\n"
        "def no_argument():\n    return 'x'\n\n"
        "NOT_CALLABLE = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_two_sources_in_one_layer_is_an_error_with_origin(write_config: WriteConfig) -> None:
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              primary:
                url: {URL}
                password_command: [cat, pw]
                credentials: "os:fspath"
        """
    )
    assert problems_of(path, environ={}) == [
        f"{path}:7:9 profiles.p.databases.primary.credentials: "
        f"password_command and credentials are both set; {EXCLUDE}"
    ]


def test_a_password_in_the_url_and_a_command_is_an_error(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: postgresql://app:hunter22@db/app
                password_command: [cat, pw]
        """
    )
    problems = problems_of(path, environ={})
    assert problems == [
        f"{path}:6:9 profiles.p.databases.primary.password_command: "
        f"a password in url and password_command are both set; {EXCLUDE}"
    ]
    assert "hunter22" not in str(problems)


def test_an_env_url_with_a_password_replaces_a_command_below(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "postgresql://app@db/app", password_command: [cat, pw]}
        """
    )
    environ = {"DBCONF_DATABASES__PRIMARY__URL": "postgresql://app:from-env@db/app"}
    primary = load_profile("p", path=path, environ=environ).config.databases["primary"]
    assert primary.password_command is None
    assert primary.sqlalchemy_url.password == "from-env"


def test_a_source_above_replaces_the_sources_below(write_config: WriteConfig) -> None:
    path = write_config(
        f"""
        profiles:
          base:
            databases:
              primary: {{url: "{URL}", password_command: [cat, pw], credentials_ttl: 5m}}
          p:
            extends: base
            databases:
              primary: {{credentials: "os:fspath"}}
        """
    )
    primary = load_profile("p", path=path, environ={}).config.databases["primary"]
    assert (primary.password_command, primary.credentials) == (None, "os:fspath")
    assert primary.credentials_ttl == 300.0  # still something to cache: kept

    environ = {"DBCONF_DATABASES__PRIMARY__PASSWORD": "from-env"}
    primary = load_profile("p", path=path, environ=environ).config.databases["primary"]
    assert (primary.credentials, primary.credentials_ttl) == (None, None)  # nothing to cache
    assert primary.sqlalchemy_url.password == "from-env"


def test_database_url_with_a_password_replaces_the_file_sources(write_config: WriteConfig) -> None:
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              primary: {{url: "{URL}", credentials: "os:fspath", credentials_ttl: 1m}}
        """
    )
    environ = {"DATABASE_URL": "postgresql://app:from-env@db/app"}
    primary = load_profile("p", path=path, environ=environ).config.databases["primary"]
    assert (primary.credentials, primary.credentials_ttl) == (None, None)
    assert primary.sqlalchemy_url.password == "from-env"


def test_password_command_from_an_env_var_is_a_list(write_config: WriteConfig) -> None:
    path = write_config(f"profiles:\n  p:\n    databases:\n      primary: {{url: '{URL}'}}\n")
    environ = {"DBCONF_DATABASES__PRIMARY__PASSWORD_COMMAND": "[vault, read, -field=pw, db/app]"}
    primary = load_profile("p", path=path, environ=environ).config.databases["primary"]
    assert primary.password_command == ["vault", "read", "-field=pw", "db/app"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[]", "List should have at least 1 item after validation, not 0"),
        ("['', x]", "the first item must name the program to run (argv[0])"),
        ("vault read", "Input should be a valid list"),
    ],
)
def test_malformed_password_command(write_config: WriteConfig, value: str, message: str) -> None:
    path = write_config(
        f"profiles:\n  p:\n    databases:\n      primary: {{url: '{URL}', "
        f"password_command: {value}}}\n"
    )
    [problem] = problems_of(path, environ={})
    assert problem.startswith(f"{path}:4:57 profiles.p.databases.primary.password_command: ")
    assert message in problem


def test_credentials_ttl_without_a_command_or_callable(write_config: WriteConfig) -> None:
    (write_config("x", "pw")).write_text("secret-1\n")
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              primary: {{url: "{URL}", password_file: pw, credentials_ttl: 30s}}
        """
    )
    assert problems_of(path, environ={}) == [
        f"{path}:4:76 profiles.p.databases.primary.credentials_ttl: caches what "
        "password_command or credentials returns: set one of them, or remove credentials_ttl "
        "(password_file is read for each new connection)"
    ]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "not a path",
            "is not an import path: write module.sub:function (e.g. myapp.db:rds_token)",
        ),
        (
            "no_such_module_xyz:token",
            "cannot import module 'no_such_module_xyz' of credentials callable "
            "'no_such_module_xyz:token' (No module named 'no_such_module_xyz'); install the "
            "package that provides it, or fix the path (module.sub:function)",
        ),
        ("{module}:tokn", "{module} has no attribute 'tokn' (did you mean 'token'?)"),
        (
            "{module}:NOT_CALLABLE",
            "credentials '{module}:NOT_CALLABLE' is not callable (it is a int)",
        ),
        ("{module}:no_argument", "credentials '{module}:no_argument' must take one argument"),
    ],
)
def test_the_callable_is_imported_and_checked_at_load(
    write_config: WriteConfig, module: str, target: str, message: str
) -> None:
    path = write_config(
        f"profiles:\n  p:\n    databases:\n      primary:\n        url: {URL}\n"
        f"        credentials: '{target.format(module=module)}'\n"
    )
    [problem] = problems_of(path, environ={})
    assert problem.startswith(f"{path}:6:9 profiles.p.databases.primary.credentials: ")
    assert message.format(module=module) in problem


@pytest.mark.parametrize("name", ["token", "async_token"])
def test_sync_and_async_callables_load(write_config: WriteConfig, module: str, name: str) -> None:
    path = write_config(
        f"profiles:\n  p:\n    databases:\n      primary:\n        url: {URL}\n"
        f"        credentials: '{module}:{name}'\n        credentials_ttl: 10m\n"
    )
    primary = load_profile("p", path=path, environ={}).config.databases["primary"]
    assert (primary.credentials, primary.credentials_ttl) == (f"{module}:{name}", 600.0)


def test_show_displays_the_sources_but_no_password(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    (write_config("x", "pw")).write_text("file-secret-1\n")
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              primary: {{url: "{URL}", password_file: pw}}
              other: {{url: "{URL}", password_command: [vault, read, db], credentials_ttl: 1m}}
        """
    )
    code = main(["show", "-p", "p", "-c", str(path), "--format", "json", "--origin"], environ={})
    out, err = capsys.readouterr()
    assert code == 0, err
    databases = json.loads(out)["config"]["databases"]
    assert databases["primary"]["password_file"] == str(path.parent / "pw")
    assert databases["other"]["password_command"] == ["vault", "read", "db"]
    assert databases["other"]["credentials_ttl"] == 60.0
    assert "file-secret-1" not in out + err


def test_a_password_in_the_url_query_and_credentials_is_an_error(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: "postgresql://app@db/app?password=hunter22"
                credentials: "os:fspath"
        """
    )
    problems = problems_of(path, environ={})
    assert problems == [
        f"{path}:6:9 profiles.p.databases.primary.credentials: "
        f"a password in url and credentials are both set; {EXCLUDE}"
    ]
    assert "hunter22" not in str(problems)
