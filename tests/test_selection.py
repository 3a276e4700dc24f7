"""Which file and which profile: the upward search for config/databases.yaml, the order
profile= > DBCONF_PROFILE > default_profile > development, did-you-mean everywhere, and the
caller's file:line as the origin of overrides= (with a DEBUG note when it replaces env)."""

from __future__ import annotations

import argparse
import inspect
import logging
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from dbconf.cli.commands import EXIT_CONFIG, EXIT_OK, _show, main
from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile
from dbconf.loading.selection import find_config

WriteConfig = Callable[..., Path]

PROFILES = """
    default_profile: ${ENVIRONMENT:-local}
    profiles:
      local:
        databases: {primary: {url: "sqlite:///local.db"}}
      staging:
        databases: {primary: {url: "sqlite:///staging.db"}}
      test:
        databases: {primary: {url: "sqlite:///test.db"}}
      development:
        databases: {primary: {url: "sqlite:///dev.db"}}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems_of(**kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_profile(**kwargs)  # type: ignore[arg-type]
    return [str(p) for p in info.value.problems]


# -- finding the file -------------------------------------------------------------------------


def test_the_file_is_found_in_a_parent_directory(tmp_path: Path) -> None:
    config = write(tmp_path / "repo" / "config" / "databases.yaml", PROFILES)
    (tmp_path / "repo" / ".git").mkdir()
    deep = tmp_path / "repo" / "backend" / "app" / "tests"
    deep.mkdir(parents=True)
    assert find_config(deep) == config


def test_the_nearest_file_wins(tmp_path: Path) -> None:
    write(tmp_path / "config" / "databases.yaml", PROFILES)
    inner = write(tmp_path / "backend" / "config" / "databases.yaml", PROFILES)
    assert find_config(tmp_path / "backend") == inner


@pytest.mark.parametrize("marker", ["dir", "file"])
def test_the_search_stops_at_the_repository_root(tmp_path: Path, marker: str) -> None:
    """A file above the repository root (.git, a directory or a worktree's file) is never
    taken; the error says every place it looked and where it stopped."""
    write(tmp_path / "config" / "databases.yaml", PROFILES)  # outside the repository
    repo = tmp_path / "repo"
    (repo / "backend").mkdir(parents=True)
    if marker == "dir":
        (repo / ".git").mkdir()
    else:
        (repo / ".git").write_text("gitdir: /elsewhere/.git/worktrees/repo\n")
    with pytest.raises(ConfigError) as info:
        find_config(repo / "backend")
    text = str(info.value)
    assert f"{repo / 'backend' / 'config' / 'databases.yaml'}, " in text
    assert f"{repo / 'config' / 'databases.yaml'}; stopped at {repo}" in text
    assert "a repository root (.git)" in text
    assert "Pass path=, --config or set DBCONF_CONFIG" in text


def test_pyproject_toml_is_not_a_marker(tmp_path: Path) -> None:
    """The template's backend/ has a pyproject.toml below the repository root."""
    config = write(tmp_path / "config" / "databases.yaml", PROFILES)
    (tmp_path / ".git").mkdir()
    write(tmp_path / "backend" / "pyproject.toml", "[project]\nname = 'app'\n")
    assert find_config(tmp_path / "backend") == config


def test_load_finds_the_file_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "config" / "databases.yaml", PROFILES)
    (tmp_path / ".git").mkdir()
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "src" / "pkg")
    loaded = load_profile(environ={})
    assert loaded.path == config
    assert loaded.name == "local"
    monkeypatch.chdir(tmp_path)  # in the directory itself: the relative path, as before
    assert load_profile(environ={}).path == Path("config/databases.yaml")


def test_dbconf_config_and_path_skip_the_search(tmp_path: Path) -> None:
    elsewhere = write(tmp_path / "elsewhere.yaml", PROFILES)
    assert load_profile(environ={"DBCONF_CONFIG": str(elsewhere)}).path == elsewhere
    assert load_profile(path=elsewhere, environ={}).path == elsewhere


# -- choosing the profile ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "environ", "name", "chosen_by"),
    [
        ("staging", {"DBCONF_PROFILE": "test", "ENVIRONMENT": "local"}, "staging", "profile="),
        (None, {"DBCONF_PROFILE": "test", "ENVIRONMENT": "staging"}, "test", "env DBCONF_PROFILE"),
        (None, {"ENVIRONMENT": "staging"}, "staging", "default_profile at"),
        (None, {}, "local", "default_profile at"),
        (None, {"DBCONF_PROFILE": ""}, "local", "default_profile at"),
    ],
)
def test_the_order_code_env_default_profile(
    write_config: WriteConfig,
    profile: str | None,
    environ: dict[str, str],
    name: str,
    chosen_by: str,
) -> None:
    path = write_config(PROFILES)
    loaded = load_profile(profile, path=path, environ=environ)
    assert loaded.name == name
    assert chosen_by in loaded.chosen_by


def test_default_profile_origin_says_how_it_was_made(write_config: WriteConfig) -> None:
    path = write_config(PROFILES)
    loaded = load_profile(path=path, environ={})
    assert loaded.chosen_by == (
        f"default_profile at {path}:1:1 (via default of ${{ENVIRONMENT}} (unset))"
    )
    loaded = load_profile(path=path, environ={"ENVIRONMENT": "staging"})
    assert loaded.chosen_by == f"default_profile at {path}:1:1 (via ${{ENVIRONMENT}})"


def test_without_default_profile_development_is_the_default(write_config: WriteConfig) -> None:
    path = write_config(PROFILES.replace("default_profile: ${ENVIRONMENT:-local}", ""))
    loaded = load_profile(path=path, environ={"ENVIRONMENT": "staging"})
    assert loaded.name == "development"
    assert loaded.chosen_by.startswith("default profile")


def test_code_winning_over_dbconf_profile_is_a_warning(
    write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(PROFILES)
    with caplog.at_level(logging.WARNING, logger="dbconf.loader"):
        load_profile("staging", path=path, environ={"DBCONF_PROFILE": "test"})
        load_profile("test", path=path, environ={"DBCONF_PROFILE": "test"})  # same: silent
    (record,) = caplog.records
    assert record.getMessage() == (
        "profile 'staging' named in code (profile= or --profile) wins over "
        "DBCONF_PROFILE='test'; to let the environment choose, name no profile in code"
    )


@pytest.mark.parametrize(
    ("profile", "environ", "origin"),
    [
        ("prodution", {}, "the profile asked for (profile= or --profile)"),
        (None, {"DBCONF_PROFILE": "tset"}, "env DBCONF_PROFILE"),
        (None, {"ENVIRONMENT": "prod"}, "default_profile at {path}:1:1 (via ${{ENVIRONMENT}})"),
    ],
)
def test_unknown_profile_names_get_a_suggestion_and_their_origin(
    write_config: WriteConfig, profile: str | None, environ: dict[str, str], origin: str
) -> None:
    path = write_config(PROFILES.replace("staging:", "production:"))
    (problem,) = problems_of(profile=profile, path=path, environ=environ)
    assert problem.startswith(origin.format(path=path) + ": no profile ")
    assert "(did you mean '" in problem
    assert "the file declares: local, production, test, development" in problem


def test_default_profile_must_be_a_name(write_config: WriteConfig) -> None:
    path = write_config(PROFILES.replace("${ENVIRONMENT:-local}", "[a, b]"))
    (problem,) = problems_of(path=path, environ={})
    assert problem == f"{path}:1:1 default_profile: must be a profile name (a string)"


def test_default_profile_needs_its_variable(write_config: WriteConfig) -> None:
    path = write_config(PROFILES.replace("${ENVIRONMENT:-local}", "${ENVIRONMENT}"))
    (problem,) = problems_of(path=path, environ={})
    assert problem.startswith(f"{path}:1:1 default_profile: environment variable ENVIRONMENT")


def test_a_misspelt_top_level_key_gets_a_suggestion(write_config: WriteConfig) -> None:
    path = write_config(PROFILES.replace("default_profile:", "default_profil:"))
    problems = problems_of(path=path, environ={})
    assert any(
        "default_profil: unknown top-level key (did you mean 'default_profile'?)" in p
        for p in problems
    )


def test_cli_profile_gets_a_suggestion(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(PROFILES)
    assert main(["show", "-p", "stagin", "-c", str(path)], environ={}) == EXIT_CONFIG
    assert "no profile 'stagin' (did you mean 'staging'?)" in capsys.readouterr().err
    assert main(["show", "-c", str(path)], environ={"ENVIRONMENT": "staging"}) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        f"# profile staging from {path}",
        f"# chosen by default_profile at {path}:1:1 (via ${{ENVIRONMENT}})",
    ]


# -- overrides= -------------------------------------------------------------------------------


def test_an_override_is_told_as_the_callers_file_and_line(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(PROFILES)
    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    loaded = load_profile(path=path, environ={}, overrides={"databases.primary.echo": True})
    where = f"overrides= at {__file__}:{line}"
    assert str(loaded.origin("databases", "primary", "echo")) == where
    args = argparse.Namespace(format="text", origin=True)
    _, text = _show(loaded, args)
    assert f"databases.primary.echo             = true    # {where}" in text.splitlines()


def test_an_override_replacing_an_env_value_is_logged_at_debug(
    write_config: WriteConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(PROFILES)
    environ = {
        "DATABASE_URL": "postgresql://app:hunter22@db/app",
        "DBCONF_DATABASES__PRIMARY__POOL__SIZE": "5",
    }
    overrides = {"databases.primary.url": "sqlite:///code.db", "databases.primary.echo": True}
    with caplog.at_level(logging.DEBUG, logger="dbconf.loader"):
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        loaded = load_profile(path=path, environ=environ, overrides=overrides)
    assert loaded.config.databases["primary"].pool.size == 5  # not overridden: kept
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert messages == [
        f"profile local: databases.primary.url from overrides= at {__file__}:{line} replaces "
        "the value from env DATABASE_URL"
    ]
    assert "hunter22" not in caplog.text
