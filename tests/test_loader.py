"""dbconf.loading.loader: profiles + environment → one validated profile, every value with its
origin.

Every test reads a real file written to a tmp dir and passes the environment as a dict.
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from dbconf.config.origin import Origin
from dbconf.errors import ConfigError, DbconfError, Problem, did_you_mean
from dbconf.loading.loader import LoadedProfile, list_profiles, load_profile

WriteConfig = Callable[..., Path]
PASSWORD = "p@ss:w%rd"
ENCODED = "p%40ss%3Aw%25rd"  # PASSWORD percent-encoded for a URL


def problems_of(path: Path, profile: str = "p", **kwargs: Any) -> list[str]:
    """Load and expect a ConfigError; return its problems as strings."""
    with pytest.raises(ConfigError) as info:
        load_profile(profile, path=path, **kwargs)
    return [str(problem) for problem in info.value.problems]


def line_of(function: Callable[..., Any], text: str = "load_profile(") -> int:
    """The line of ``function`` that calls ``text``: where an ``overrides=`` origin points."""
    lines, first = inspect.getsourcelines(function)
    return first + next(i for i, line in enumerate(lines) if text in line and "def " not in line)


def url_of(loaded: LoadedProfile, name: str = "primary") -> str:
    return loaded.config.databases[name].sqlalchemy_url.render_as_string(hide_password=False)


# -- choosing the file and the profile ------------------------------------------------------

TWO_PROFILES = """
    profiles:
      development:
        databases:
          primary: {url: "sqlite:///dev.db"}
      test:
        databases:
          primary: {url: "sqlite:///test.db"}
    """


def test_profile_argument_beats_dbconf_profile(write_config: WriteConfig) -> None:
    path = write_config(TWO_PROFILES)
    loaded = load_profile("development", path=path, environ={"DBCONF_PROFILE": "test"})
    assert loaded.name == "development"
    assert loaded.path == path


def test_dbconf_profile_picks_the_profile(write_config: WriteConfig) -> None:
    path = write_config(TWO_PROFILES)
    loaded = load_profile(path=path, environ={"DBCONF_PROFILE": "test"})
    assert (loaded.name, url_of(loaded)) == ("test", "sqlite:///test.db")


def test_development_is_the_default_profile(write_config: WriteConfig) -> None:
    loaded = load_profile(path=write_config(TWO_PROFILES), environ={})
    assert (loaded.name, url_of(loaded)) == ("development", "sqlite:///dev.db")


def test_dbconf_config_points_at_another_file(write_config: WriteConfig) -> None:
    other = write_config(TWO_PROFILES, name="other.yaml")
    loaded = load_profile("test", environ={"DBCONF_CONFIG": str(other)})
    assert loaded.path == other
    assert loaded.origin("databases", "primary", "url") == Origin("file", str(other), 7, 17)


def test_path_argument_beats_dbconf_config(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config(TWO_PROFILES)
    loaded = load_profile("test", path=path, environ={"DBCONF_CONFIG": str(tmp_path / "nope")})
    assert loaded.path == path


def test_missing_dbconf_config_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_profile("p", environ={"DBCONF_CONFIG": str(missing)})


@pytest.mark.parametrize(
    ("profile", "environ", "origin"),
    [
        ("tset", {}, "the profile asked for (profile= or --profile)"),
        (None, {"DBCONF_PROFILE": "tset"}, "env DBCONF_PROFILE"),
    ],
)
def test_unknown_profile_suggests_the_closest(
    write_config: WriteConfig, profile: str | None, environ: dict[str, str], origin: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile(profile, path=write_config(TWO_PROFILES), environ=environ)
    assert [str(p) for p in info.value.problems] == [
        f"{origin}: no profile 'tset' (did you mean 'test'?); the file declares: development, test"
    ]


def test_list_profiles_with_what_each_extends(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          base: {}
          test: {extends: base}
          production: {extends: test}
        """
    )
    expected = {"base": None, "test": "base", "production": "test"}
    assert list_profiles(path) == expected
    assert list(list_profiles(path)) == ["base", "test", "production"]
    assert list_profiles(environ={"DBCONF_CONFIG": str(path)}) == expected


def test_config_error_is_a_value_error_and_a_dbconf_error(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile("nope", path=write_config(TWO_PROFILES), environ={})
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, DbconfError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]\n", "the file must be a mapping with a 'profiles:' mapping"),
        ("profiles: [a]\n", "the file must be a mapping with a 'profiles:' mapping"),
        ("profiles:\n  p: 3\n", "profiles.p: a profile must be a mapping"),
        ("profile: {}\nprofiles: {}\n", "profile: unknown top-level key"),
    ],
)
def test_file_shape_errors(write_config: WriteConfig, text: str, message: str) -> None:
    problem, *more = problems_of(write_config(text), environ={})
    assert message in problem
    assert all("no profile 'p'" in p for p in more)  # reported together, not one at a time


# -- interpolation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "environ", "expected"),
    [
        ("${APP}", {"APP": "billing"}, "billing"),
        ("x-${APP}-y", {"APP": "billing"}, "x-billing-y"),
        ("${APP}${APP}", {"APP": "ab"}, "abab"),
        ("${APP:-fallback}", {}, "fallback"),
        ("${APP:-fallback}", {"APP": ""}, "fallback"),
        ("${APP:-fallback}", {"APP": "set"}, "set"),
        ("${APP:-}", {}, ""),
        ("${APP:-a b:c}", {}, "a b:c"),
        ("${APP-fallback}", {}, "fallback"),
        ("${APP-fallback}", {"APP": ""}, ""),
        ("${APP-fallback}", {"APP": "set"}, "set"),
        ("${APP:?give the app name}", {"APP": "set"}, "set"),
        ("cost $$5", {}, "cost $5"),
        ("$$", {}, "$"),
        ("$${APP}", {"APP": "x"}, "${APP}"),
        ("$$$$", {}, "$$"),
        ("no dollars", {"APP": "x"}, "no dollars"),
        ("${APP}", {"APP": "123"}, "123"),  # a string key stays a string
    ],
)
def test_interpolation_forms(
    write_config: WriteConfig, written: str, environ: dict[str, str], expected: str
) -> None:
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              primary:
                url: "postgresql://h/db"
                application_name: '{written}'
        """
    )
    loaded = load_profile("p", path=path, environ=environ)
    assert loaded.config.databases["primary"].application_name == expected


def test_interpolated_value_remembers_the_variable(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: "postgresql://${HOST:-localhost}:${PORT}/db"
        """
    )
    loaded = load_profile("p", path=path, environ={"HOST": "db", "PORT": "6543"})
    assert url_of(loaded) == "postgresql+psycopg2://db:6543/db"
    origin = loaded.origin("databases", "primary", "url")
    assert origin == Origin("file", str(path), 5, 9, via="${HOST}, ${PORT}")
    assert str(origin) == f"{path}:5:9 (via ${{HOST}}, ${{PORT}})"


@pytest.mark.parametrize(
    ("key", "written", "environ", "expected"),
    [
        ("pool.size", "${POOL:-5}", {}, 5),
        ("pool.size", "${POOL:-5}", {"POOL": "12"}, 12),
        ("pool.pre_ping", "${PING:-true}", {}, True),
        ("pool.pre_ping", "${PING}", {"PING": "false"}, False),
        ("pool.recycle", "${RECYCLE:-30m}", {}, 1800.0),
        ("pool.timeout", "${TIMEOUT-2.5}", {}, 2.5),
        ("port", "${PORT:-5433}", {}, 5433),
        ("host", "${HOST:-10}", {}, "10"),  # host is a string key: not parsed
    ],
)
def test_whole_value_is_parsed_like_a_yaml_scalar(
    write_config: WriteConfig, key: str, written: str, environ: dict[str, str], expected: Any
) -> None:
    lines = ["profiles:", "  p:", "    databases:", "      primary:", "        driver: postgresql"]
    *parents, leaf = key.split(".")
    indent = "        "
    for parent in parents:
        lines.append(f"{indent}{parent}:")
        indent += "  "
    lines.append(f"{indent}{leaf}: {written}")
    path = write_config("\n".join(lines) + "\n")
    config = load_profile("p", path=path, environ=environ).config.databases["primary"]
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    assert value == expected
    assert type(value) is type(expected)


def test_embedded_variable_is_not_parsed(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: "sqlite:///x.db"
                pool: {size: "${POOL:-5}0"}
        """
    )
    assert problems_of(path, environ={}) == [
        f"{path}:6:16 (via default of ${{POOL}} (unset)) profiles.p.databases.primary.pool.size: "
        "Input should be a valid integer (got '50')"
    ]


UNSET = """
    profiles:
      p:
        databases:
          primary:
            url: "sqlite:///x.db"
            application_name: {value}
    """


@pytest.mark.parametrize(
    ("value", "environ", "message"),
    [
        (
            "${APP}",
            {},
            "environment variable APP is not set; export it, or give a default: ${APP:-…}",
        ),
        (
            "'x ${APP} y'",
            {},
            "environment variable APP is not set; export it, or give a default: ${APP:-…}",
        ),
        (
            "${APP:?set it to the service name}",
            {},
            "environment variable APP is not set: set it to the service name",
        ),
        ("${APP:?set it}", {"APP": ""}, "environment variable APP is not set: set it"),
        ("${APP:?}", {}, "environment variable APP is not set: it is required"),
        ("${APP?set it}", {}, "environment variable APP is not set: set it"),
    ],
)
def test_unset_variable_is_an_error_naming_it_and_where(
    write_config: WriteConfig, value: str, environ: dict[str, str], message: str
) -> None:
    path = write_config(UNSET.format(value=value))
    assert problems_of(path, environ=environ) == [
        f"{path}:6:9 profiles.p.databases.primary.application_name: {message}"
    ]


def test_empty_is_fine_for_question_mark_without_colon(write_config: WriteConfig) -> None:
    path = write_config(UNSET.format(value="'${APP?set it}'"))
    loaded = load_profile("p", path=path, environ={"APP": ""})
    assert loaded.config.databases["primary"].application_name == ""


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("'${APP'", "${APP"),
        ("'a ${ b'", "${ b"),
        ("'${}'", "${}"),
        ("'${1APP}'", "${1APP}"),
        ("'${APP:+x}'", "${APP:+x}"),
        ("'${A B}'", "${A B}"),
    ],
)
def test_malformed_interpolation(write_config: WriteConfig, value: str, shown: str) -> None:
    path = write_config(UNSET.format(value=value))
    assert problems_of(path, environ={"APP": "x"}) == [
        f"{path}:6:9 profiles.p.databases.primary.application_name: malformed {shown}: "
        "write ${VAR}, ${VAR:-default}, ${VAR:?message}, or $$ for a literal $"
    ]


def test_env_values_are_taken_literally(write_config: WriteConfig) -> None:
    path = write_config(UNSET.format(value="file"))
    environ = {"DBCONF_DATABASES__PRIMARY__APPLICATION_NAME": "${APP}$$", "APP": "x"}
    loaded = load_profile("p", path=path, environ=environ)
    assert loaded.config.databases["primary"].application_name == "${APP}$$"


def test_variable_in_a_value_that_a_higher_layer_replaced_is_not_needed(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "${DATABASE_URL}"}
        """
    )
    environ = {"DBCONF_DATABASES__PRIMARY__URL": "sqlite:///env.db"}
    assert url_of(load_profile("p", path=path, environ=environ)) == "sqlite:///env.db"


# -- environment variables -------------------------------------------------------------------

TWO_DATABASES = """
    profiles:
      p:
        {default}
        databases:
          primary:
            url: "sqlite:///primary.db"
            sessions:
              batch: {{autoflush: false}}
          analytics:
            url: "sqlite:///analytics.db"
    """


def two_databases(write_config: WriteConfig, default: str = "") -> Path:
    return write_config(TWO_DATABASES.format(default=default))


def test_database_url_sets_the_first_database(write_config: WriteConfig) -> None:
    loaded = load_profile(
        "p", path=two_databases(write_config), environ={"DATABASE_URL": "sqlite:///env.db"}
    )
    assert url_of(loaded) == "sqlite:///env.db"
    assert url_of(loaded, "analytics") == "sqlite:///analytics.db"
    assert loaded.origin("databases", "primary", "url") == Origin("env", "DATABASE_URL")


def test_database_url_sets_the_declared_default_database(write_config: WriteConfig) -> None:
    path = two_databases(write_config, default="default_database: analytics")
    loaded = load_profile("p", path=path, environ={"DATABASE_URL": "sqlite:///env.db"})
    assert url_of(loaded, "analytics") == "sqlite:///env.db"
    assert url_of(loaded) == "sqlite:///primary.db"
    assert loaded.origin("databases", "analytics", "url") == Origin("env", "DATABASE_URL")


def test_database_url_follows_dbconf_default_database(write_config: WriteConfig) -> None:
    environ = {"DATABASE_URL": "sqlite:///env.db", "DBCONF_DEFAULT_DATABASE": "analytics"}
    loaded = load_profile("p", path=two_databases(write_config), environ=environ)
    assert loaded.config.default_name == "analytics"
    assert loaded.origin("default_database") == Origin("env", "DBCONF_DEFAULT_DATABASE")
    assert url_of(loaded, "analytics") == "sqlite:///env.db"
    assert url_of(loaded) == "sqlite:///primary.db"


def test_named_database_url(write_config: WriteConfig) -> None:
    environ = {"ANALYTICS_DATABASE_URL": "sqlite:///a.db", "PRIMARY_DATABASE_URL": "sqlite:///p.db"}
    loaded = load_profile("p", path=two_databases(write_config), environ=environ)
    assert (url_of(loaded), url_of(loaded, "analytics")) == ("sqlite:///p.db", "sqlite:///a.db")
    assert loaded.origin("databases", "analytics", "url") == Origin("env", "ANALYTICS_DATABASE_URL")


def test_named_database_url_beats_database_url(write_config: WriteConfig) -> None:
    environ = {"DATABASE_URL": "sqlite:///generic.db", "PRIMARY_DATABASE_URL": "sqlite:///p.db"}
    loaded = load_profile("p", path=two_databases(write_config), environ=environ)
    assert url_of(loaded) == "sqlite:///p.db"
    assert loaded.origin("databases", "primary", "url") == Origin("env", "PRIMARY_DATABASE_URL")


def test_database_url_alone_makes_a_primary_database(write_config: WriteConfig) -> None:
    path = write_config("profiles:\n  p: {}\n")
    loaded = load_profile("p", path=path, environ={"DATABASE_URL": "sqlite:///env.db"})
    assert list(loaded.config.databases) == ["primary"]
    assert url_of(loaded) == "sqlite:///env.db"


@pytest.mark.parametrize(
    ("var", "raw", "path", "expected"),
    [
        ("DBCONF_DATABASES__PRIMARY__POOL__SIZE", "50", ("pool", "size"), 50),
        ("DBCONF_DATABASES__PRIMARY__POOL__MAX_OVERFLOW", "-1", ("pool", "max_overflow"), -1),
        ("DBCONF_DATABASES__PRIMARY__POOL__RECYCLE", "30m", ("pool", "recycle"), 1800.0),
        ("DBCONF_DATABASES__PRIMARY__POOL__PRE_PING", "true", ("pool", "pre_ping"), True),
        ("DBCONF_DATABASES__PRIMARY__ECHO", "false", ("echo",), False),
        ("DBCONF_DATABASES__PRIMARY__TIMEOUTS__CONNECT", "10", ("timeouts", "connect"), 10.0),
        (
            "DBCONF_DATABASES__PRIMARY__SESSIONS__BATCH__AUTOFLUSH",
            "true",
            ("sessions", "batch", "autoflush"),
            True,
        ),
        (
            "DBCONF_DATABASES__PRIMARY__SESSIONS__DEFAULT__EXPIRE_ON_COMMIT",
            "false",
            ("sessions", "default", "expire_on_commit"),
            False,
        ),
        ("DBCONF_DATABASES__PRIMARY__PASSWORD", "123", ("password",), "123"),
        ("DBCONF_DATABASES__PRIMARY__APPLICATION_NAME", "007", ("application_name",), "007"),
        ("DBCONF_DATABASES__PRIMARY__HOST", "true", ("host",), "true"),
        ("dbconf_databases__primary__echo", "true", ("echo",), True),
    ],
)
def test_dbconf_env_vars_set_any_key(
    write_config: WriteConfig, var: str, raw: str, path: tuple[str, ...], expected: Any
) -> None:
    environ = {var: raw}
    if path in (("password",), ("host",)):  # SQLite takes neither: a server database here
        environ["DBCONF_DATABASES__PRIMARY__URL"] = "postgresql://h/db"
    loaded = load_profile("p", path=two_databases(write_config), environ=environ)
    value: Any = loaded.config.databases["primary"]
    for part in path:
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    assert value == expected
    assert type(value) is type(expected)
    assert loaded.origin("databases", "primary", *path) == Origin("env", var)


def test_dbconf_default_database(write_config: WriteConfig) -> None:
    environ = {"DBCONF_DEFAULT_DATABASE": "analytics"}
    loaded = load_profile("p", path=two_databases(write_config), environ=environ)
    assert loaded.config.default_name == "analytics"


def test_env_var_url_adds_a_database(write_config: WriteConfig) -> None:
    environ = {
        "DBCONF_DATABASES__CACHE__URL": "sqlite:///cache.db",
        "DBCONF_DATABASES__CACHE__POOL__SIZE": "2",
    }
    loaded = load_profile("p", path=two_databases(write_config), environ=environ)
    assert url_of(loaded, "cache") == "sqlite:///cache.db"
    assert loaded.config.databases["cache"].pool.size == 2
    assert loaded.origin("databases", "cache", "url") == Origin(
        "env", "DBCONF_DATABASES__CACHE__URL"
    )


def test_empty_or_null_env_value_resets_the_key(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "sqlite:///x.db", pool: {size: 5, max_overflow: 3}}
        """
    )
    environ = {
        "DBCONF_DATABASES__PRIMARY__POOL__SIZE": "",
        "DBCONF_DATABASES__PRIMARY__POOL__MAX_OVERFLOW": "null",
    }
    pool = load_profile("p", path=path, environ=environ).config.databases["primary"].pool
    assert (pool.size, pool.max_overflow) == (None, None)


def test_secrets_dir_files_named_like_env_vars(write_config: WriteConfig, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DBCONF_DATABASES__PRIMARY__PASSWORD").write_text("s3cret\n")
    (secrets / "DBCONF_DATABASES__PRIMARY__POOL__SIZE").write_text("7\r\n")
    (secrets / "unrelated.txt").write_text("ignored")
    # SQLite takes no password: a server database here
    environ = {"DBCONF_SECRETS_DIR": str(secrets), "DATABASE_URL": "postgresql://h/db"}
    loaded = load_profile("p", path=two_databases(write_config), environ=environ)
    primary = loaded.config.databases["primary"]
    assert primary.password is not None
    assert primary.password.get_secret_value() == "s3cret"
    assert primary.sqlalchemy_url.password == "s3cret"
    assert primary.pool.size == 7
    origin = loaded.origin("databases", "primary", "password")
    assert origin == Origin("secret", str(secrets / "DBCONF_DATABASES__PRIMARY__PASSWORD"))
    assert str(origin) == f"secrets file {secrets}/DBCONF_DATABASES__PRIMARY__PASSWORD"


def test_secrets_dir_that_is_not_a_directory(write_config: WriteConfig, tmp_path: Path) -> None:
    environ = {"DBCONF_SECRETS_DIR": str(tmp_path / "nope")}
    assert problems_of(two_databases(write_config), environ=environ) == [
        f"env DBCONF_SECRETS_DIR: {tmp_path / 'nope'} is not a directory"
    ]


def test_reserved_dbconf_vars_are_not_keys(write_config: WriteConfig, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    path = two_databases(write_config)
    environ = {
        "DBCONF_PROFILE": "p",
        "DBCONF_CONFIG": str(path),
        "DBCONF_SECRETS_DIR": str(secrets),
    }
    assert load_profile(environ=environ).name == "p"


# -- precedence --------------------------------------------------------------------------------

LAYERED = """
    profiles:
      base:
        databases:
          primary:
            url: "sqlite:///base.db"
            echo: true
      p:
        extends: base
        databases:
          primary:
            url: "sqlite:///profile.db"
    """
# The layers above the file, lowest first; each sets databases.primary.url (see load_layers).
LAYERS = ["profile", "DATABASE_URL", "DBCONF_", "secrets", "overrides"]


def load_layers(path: Path, secrets: Path, layers: set[str]) -> LoadedProfile:
    environ = {}
    overrides = None
    if "DATABASE_URL" in layers:
        environ["DATABASE_URL"] = "sqlite:///database_url.db"
    if "DBCONF_" in layers:
        environ["DBCONF_DATABASES__PRIMARY__URL"] = "sqlite:///dbconf_env.db"
    if "secrets" in layers:
        secrets.mkdir(exist_ok=True)
        (secrets / "DBCONF_DATABASES__PRIMARY__URL").write_text("sqlite:///secret.db\n")
        environ["DBCONF_SECRETS_DIR"] = str(secrets)
    if "overrides" in layers:
        overrides = {"databases": {"primary": {"url": "sqlite:///code.db"}}}
    return load_profile("p", path=path, environ=environ, overrides=overrides)


def test_builtin_default_below_extended_profile(write_config: WriteConfig) -> None:
    loaded = load_profile("p", path=write_config(LAYERED), environ={})
    primary = loaded.config.databases["primary"]
    assert primary.echo is True
    assert loaded.origin("databases", "primary", "echo") == Origin("file", str(loaded.path), 6, 9)
    assert primary.hide_parameters is True
    assert loaded.origin("databases", "primary", "hide_parameters") == Origin("default")


def test_extended_profile_below_profile(write_config: WriteConfig) -> None:
    loaded = load_profile("p", path=write_config(LAYERED), environ={})
    assert url_of(loaded) == "sqlite:///profile.db"
    assert loaded.origin("databases", "primary", "url") == Origin("file", str(loaded.path), 11, 9)


@pytest.mark.parametrize(
    ("lower", "upper", "url", "origin"),
    [
        ("profile", "DATABASE_URL", "sqlite:///database_url.db", "env DATABASE_URL"),
        (
            "DATABASE_URL",
            "DBCONF_",
            "sqlite:///dbconf_env.db",
            "env DBCONF_DATABASES__PRIMARY__URL",
        ),
        (
            "DBCONF_",
            "secrets",
            "sqlite:///secret.db",
            "secrets file {secrets}/DBCONF_DATABASES__PRIMARY__URL",
        ),
        ("secrets", "overrides", "sqlite:///code.db", f"overrides= at {__file__}:"),
    ],
)
def test_each_layer_beats_the_one_below(
    write_config: WriteConfig, tmp_path: Path, lower: str, upper: str, url: str, origin: str
) -> None:
    secrets = tmp_path / "secrets"
    path = write_config(LAYERED)
    below = load_layers(path, secrets, {lower})
    assert url_of(below) != url
    both = load_layers(path, secrets, {lower, upper})
    assert url_of(both) == url
    shown = str(both.origin("databases", "primary", "url"))
    if origin.endswith(":"):  # overrides=: the caller's file:line
        assert shown.startswith(origin)
        assert shown[len(origin) :].isdigit()
    else:
        assert shown == origin.format(secrets=secrets)


def test_all_layers_at_once_the_highest_wins(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config(LAYERED)
    loaded = load_layers(path, tmp_path / "secrets", set(LAYERS))
    assert url_of(loaded) == "sqlite:///code.db"
    code = loaded.origin("databases", "primary", "url")
    assert code.kind == "code"
    assert code.source.startswith(f"{__file__}:")
    # keys no layer above touched keep their file origin
    assert loaded.origin("databases", "primary", "echo") == Origin("file", str(path), 6, 9)


def test_pool_size_through_every_layer(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config(
        """
        profiles:
          base:
            databases:
              primary: {url: "sqlite:///x.db", pool: {size: 1}}
          p:
            extends: base
            databases:
              primary: {pool: {size: 2}}
        """
    )
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DBCONF_DATABASES__PRIMARY__POOL__SIZE").write_text("4\n")
    env = {"DBCONF_DATABASES__PRIMARY__POOL__SIZE": "3"}
    steps: list[tuple[dict[str, str], dict[str, Any] | None, int, Origin]] = [
        ({}, None, 2, Origin("file", str(path), 8, 24)),
        (env, None, 3, Origin("env", "DBCONF_DATABASES__PRIMARY__POOL__SIZE")),
        (
            {**env, "DBCONF_SECRETS_DIR": str(secrets)},
            None,
            4,
            Origin("secret", str(secrets / "DBCONF_DATABASES__PRIMARY__POOL__SIZE")),
        ),
        (
            {**env, "DBCONF_SECRETS_DIR": str(secrets)},
            {"databases.primary.pool.size": 5},
            5,
            Origin("code", f"{__file__}:{line_of(test_pool_size_through_every_layer)}"),
        ),
    ]
    for environ, overrides, size, origin in steps:
        loaded = load_profile("p", path=path, environ=environ, overrides=overrides)
        assert loaded.config.databases["primary"].pool.size == size
        assert loaded.origin("databases", "primary", "pool", "size") == origin


# -- url and password semantics across layers ---------------------------------------------------

PARTS = """
    profiles:
      base:
        databases:
          primary:
            driver: postgresql+psycopg2
            host: base-host
            port: 5433
            username: base-user
            password: base-password
            database: base-db
            query: {sslmode: require}
      p:
        extends: base
        databases:
          primary: {url: "postgresql://u@url-host/url-db"}
    """


def test_url_in_a_higher_layer_drops_lower_url_parts(write_config: WriteConfig) -> None:
    path = write_config(PARTS.replace("postgresql://u@url-host", "postgresql://u:url-pw@url-host"))
    loaded = load_profile("p", path=path, environ={})
    primary = loaded.config.databases["primary"]
    assert primary.sqlalchemy_url.password == "url-pw"
    assert (primary.host, primary.port, primary.password, primary.query) == (None,) * 4
    assert loaded.origin("databases", "primary", "host") == Origin("default")
    assert loaded.origin("databases", "primary", "password") == Origin("default")


def test_url_without_password_keeps_the_lower_password(write_config: WriteConfig) -> None:
    loaded = load_profile("p", path=write_config(PARTS), environ={})
    primary = loaded.config.databases["primary"]
    assert url_of(loaded) == "postgresql+psycopg2://u:base-password@url-host/url-db"
    assert primary.sqlalchemy_url.password == "base-password"
    assert (primary.host, primary.port, primary.query) == (None,) * 3


def test_url_without_password_keeps_a_password_file(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "postgresql://app@h/db", password_file: pw.txt}
        """
    )
    (path.parent / "pw.txt").write_text("from-file\n")
    loaded = load_profile("p", path=path, environ={"DATABASE_URL": "postgresql://app@env-host/db"})
    primary = loaded.config.databases["primary"]
    assert primary.password_file == str(path.parent / "pw.txt")  # read per new connection
    assert primary.sqlalchemy_url.password is None
    assert primary.sqlalchemy_url.host == "env-host"


def test_bare_null_pool_class_is_rejected(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "sqlite:///x.db", pool: {class: null}}
        """
    )
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=path, environ={})
    assert f"{path}:4:47 profiles.p.databases.primary.pool.class" in str(info.value)
    assert 'write class: "null" (quoted)' in str(info.value)


def test_database_url_env_drops_file_url_parts(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {driver: postgresql, host: file-host, port: 1, database: file-db}
        """
    )
    loaded = load_profile("p", path=path, environ={"DATABASE_URL": "postgresql://env-host/env-db"})
    assert url_of(loaded) == "postgresql+psycopg2://env-host/env-db"


def test_parts_above_a_url_refine_it(write_config: WriteConfig) -> None:
    environ = {"DATABASE_URL": "postgresql://u:pw@env-host/env-db"}
    overrides = {"databases.primary.host": "code-host"}
    loaded = load_profile("p", path=write_config(PARTS), environ=environ, overrides=overrides)
    assert url_of(loaded) == "postgresql+psycopg2://u:pw@code-host/env-db"


def test_url_and_password_in_one_layer_password_wins(write_config: WriteConfig) -> None:
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              primary:
                url: "postgresql://u:url-password@h/db"
                password: "{PASSWORD}"
        """
    )
    loaded = load_profile("p", path=path, environ={})
    assert loaded.config.databases["primary"].sqlalchemy_url.password == PASSWORD
    assert loaded.origin("databases", "primary", "password") == Origin("file", str(path), 6, 9)


def test_password_above_env_url_wins(write_config: WriteConfig) -> None:
    path = write_config("profiles:\n  p: {}\n")
    environ = {
        "DATABASE_URL": "postgresql://u:url-password@h/db",
        "DBCONF_DATABASES__PRIMARY__PASSWORD": PASSWORD,
    }
    loaded = load_profile("p", path=path, environ=environ)
    assert loaded.config.databases["primary"].sqlalchemy_url.password == PASSWORD


def test_password_file_is_read_relative_to_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "secrets").mkdir(parents=True)
    (conf / "secrets" / "pw").write_text(PASSWORD + "\n")
    path = conf / "databases.yaml"
    path.write_text(
        "profiles:\n"
        "  p:\n"
        "    databases:\n"
        "      primary: {url: 'postgresql://u@h/db', password_file: secrets/pw}\n"
    )
    assert Path.cwd() != conf
    loaded = load_profile("p", path=path, environ={})
    primary = loaded.config.databases["primary"]
    # made absolute, checked at load; its content is read for each new connection
    assert primary.password_file == str(conf / "secrets" / "pw")
    assert primary.sqlalchemy_url.password is None
    assert loaded.origin("databases", "primary", "password_file") == Origin(
        "file", str(path), 4, 45
    )


def test_missing_password_file_names_its_origin(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: "postgresql://u@h/db"
                password_file: missing
        """
    )
    assert problems_of(path, environ={}) == [
        f"{path}:6:9 profiles.p.databases.primary.password_file: cannot read password file "
        f"{tmp_path / 'missing'} (No such file or directory); fix the path or mount the secret"
    ]


def test_password_and_password_file_in_one_layer_is_an_error(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "pw").write_text("x")
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: "postgresql://u@h/db"
                password: a
                password_file: pw
        """
    )
    assert problems_of(path, environ={}) == [
        f"{path}:7:9 profiles.p.databases.primary.password_file: "
        "password and password_file are both set; password_file, password_command and "
        "credentials exclude each other and a fixed password (password, or one in url): keep one"
    ]


def test_password_file_above_replaces_password_below(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    path = write_config(
        """
        profiles:
          base:
            databases:
              primary: {url: "postgresql://u@h/db", password: from-base}
          p:
            extends: base
            databases:
              primary: {password_file: pw}
        """
    )
    loaded = load_profile("p", path=path, environ={})
    primary = loaded.config.databases["primary"]
    assert (primary.password, primary.password_file) == (None, str(tmp_path / "pw"))


def test_password_above_replaces_password_file_below(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "postgresql://u@h/db", password_file: /nonexistent/pw}
        """
    )
    environ = {"DBCONF_DATABASES__PRIMARY__PASSWORD": "from-env"}
    loaded = load_profile("p", path=path, environ=environ)
    primary = loaded.config.databases["primary"]
    assert primary.password_file is None
    assert primary.sqlalchemy_url.password == "from-env"


# -- null, extends ------------------------------------------------------------------------------


def test_null_resets_a_key_to_its_default(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          base:
            databases:
              primary:
                url: "sqlite:///x.db"
                application_name: base
                pool: {size: 5, max_overflow: 10}
                timeouts: {connect: 5s}
          p:
            extends: base
            databases:
              primary:
                application_name: null
                pool: {size: ~}
                timeouts: null
        """
    )
    loaded = load_profile("p", path=path, environ={})
    primary = loaded.config.databases["primary"]
    assert primary.application_name is None
    assert (primary.pool.size, primary.pool.max_overflow) == (None, 10)
    assert primary.timeouts.connect is None
    assert loaded.origin("databases", "primary", "pool", "size") == Origin("default")
    assert loaded.origin("databases", "primary", "timeouts", "connect") == Origin("default")


def test_three_level_extends_chain_deep_merges(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          base:
            databases:
              primary:
                url: "postgresql://h/db"
                pool: {size: 5, max_overflow: 10, recycle: 30m}
                sessions:
                  default: {expire_on_commit: false}
          staging:
            extends: base
            databases:
              primary:
                pool: {size: 10}
                sessions:
                  batch: {autoflush: false}
          production:
            extends: staging
            default_database: primary
            databases:
              primary:
                pool: {max_overflow: 5}
              analytics: {url: "postgresql://h/analytics"}
        """
    )
    loaded = load_profile("production", path=path, environ={})
    primary = loaded.config.databases["primary"]
    assert (primary.pool.size, primary.pool.max_overflow, primary.pool.recycle) == (10, 5, 1800.0)
    assert list(primary.sessions) == ["default", "batch"]
    assert primary.sessions["default"].expire_on_commit is False
    assert list(loaded.config.databases) == ["primary", "analytics"]
    assert loaded.config.extends is None
    pool = ("databases", "primary", "pool")
    assert loaded.origin(*pool, "recycle") == Origin("file", str(path), 6, 43)
    assert loaded.origin(*pool, "size") == Origin("file", str(path), 13, 16)
    assert loaded.origin(*pool, "max_overflow") == Origin("file", str(path), 21, 16)


def test_extends_unknown_profile_suggests(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          base: {}
          p:
            extends: bsae
        """
    )
    assert problems_of(path, environ={}) == [
        f"{path}:4:5 profiles.p.extends: extends unknown profile 'bsae' (did you mean 'base'?)"
    ]


@pytest.mark.parametrize(
    ("text", "profile", "where", "cycle"),
    [
        ("a: {extends: a}\n", "a", "a:2:", "a → a"),
        ("a: {extends: b}\n  b: {extends: a}\n", "a", "b:3:", "a → b → a"),
        (
            "a: {extends: b}\n  b: {extends: c}\n  c: {extends: b}\n",
            "a",
            "c:4:",
            "a → b → c → b",
        ),
    ],
)
def test_extends_cycle_shows_the_cycle(
    write_config: WriteConfig, text: str, profile: str, where: str, cycle: str
) -> None:
    path = write_config("profiles:\n  " + text)
    (problem,) = problems_of(path, profile, environ={})
    name, line = where.split(":")[:2]
    assert problem == (
        f"{path}:{line}:7 profiles.{name}.extends: profiles extend each other in a cycle: {cycle}"
    )


# -- errors: origin, key path, value, what is allowed -----------------------------------------

PRODUCTION = """
    profiles:
      base:
        databases:
          primary:
            pool: {size: 5, max_overflow: 10, recycle: 30m, pre_ping: true, timeout: 30s}
      production:
        extends: base
        databases:
          primary:
            url: ${DATABASE_URL}
            pool:
              size: 0
    """


def test_file_error_names_file_line_column_and_key_path(write_config: WriteConfig) -> None:
    path = write_config(PRODUCTION)
    environ = {"DATABASE_URL": "postgresql://db/app"}
    assert problems_of(path, "production", environ=environ) == [
        f"{path}:12:11 profiles.production.databases.primary.pool.size: "
        "Input should be greater than or equal to 1 (got 0)"
    ]


def test_env_error_names_the_env_var(write_config: WriteConfig) -> None:
    path = write_config(PRODUCTION)
    environ = {"DATABASE_URL": "postgresql://db/app", "DBCONF_DATABASES__PRIMARY__POOL__SIZE": "-3"}
    assert problems_of(path, "production", environ=environ) == [
        "env DBCONF_DATABASES__PRIMARY__POOL__SIZE profiles.production.databases.primary.pool.size:"
        " Input should be greater than or equal to 1 (got -3)"
    ]


def test_secret_and_code_errors_name_their_origin(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "DBCONF_DATABASES__PRIMARY__POOL__RECYCLE").write_text("soon\n")
    environ = {"DATABASE_URL": "postgresql://db/app", "DBCONF_SECRETS_DIR": str(tmp_path)}
    overrides = {"databases": {"primary": {"pool": {"size": 0}}}}
    problems = problems_of(
        write_config(PRODUCTION), "production", environ=environ, overrides=overrides
    )
    key = "profiles.production.databases.primary.pool"
    assert problems == [
        f"overrides= at {__file__}:{line_of(problems_of)} {key}.size: Input should be greater "
        "than or equal to 1 (got 0)",
        f"secrets file {tmp_path}/DBCONF_DATABASES__PRIMARY__POOL__RECYCLE {key}.recycle: "
        "expected a duration such as 250ms, 30s, 5m, 1h or a number of seconds (got 'soon')",
    ]


def test_unknown_keys_at_every_level_with_suggestions(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            default_databse: primary
            databases:
              primary:
                url: "postgresql://h/db"
                hots: h
                pool: {sise: 5}
                timeouts:
                  conect: 5s
                sessions:
                  batch: {autoflsh: false}
        """
    )
    pre = "profiles.p"
    assert sorted(problems_of(path, environ={})) == sorted(
        [
            f"{path}:3:5 {pre}.default_databse: unknown key 'default_databse' "
            "(did you mean 'default_database'?); "
            "allowed here: extends, default_database, workers, metrics, databases",
            f"{path}:7:9 {pre}.databases.primary.hots: unknown key 'hots' (did you mean 'hosts'?); "
            "allowed here: url, driver, async_driver, host, hosts, port, username, password, "
            "password_file, password_command, credentials, credentials_ttl, database, "
            "query, target_session_attrs, echo, hide_parameters, isolation_level, "
            "application_name, connect_args, "
            "execution_options, pool, timeouts, sqlite, leak_detection, retry, "
            "disconnect_sqlstates, sessions, replicas, routing, pooler, migrations",
            f"{path}:8:16 {pre}.databases.primary.pool.sise: unknown key 'sise' "
            "(did you mean 'size'?); allowed here: class, size, max_overflow, timeout, recycle, "
            "pre_ping, use_lifo, reset_on_return",
            f"{path}:10:11 {pre}.databases.primary.timeouts.conect: unknown key 'conect' "
            "(did you mean 'connect'?); "
            "allowed here: connect, statement, lock, idle_in_transaction",
            f"{path}:12:19 {pre}.databases.primary.sessions.batch.autoflsh: unknown key 'autoflsh' "
            "(did you mean 'autoflush'?); allowed here: class, role, autoflush, expire_on_commit, "
            "autobegin, autocommit, twophase, info",
        ]
    )


@pytest.mark.parametrize(
    ("var", "message"),
    [
        (
            "DBCONF_DATABASES__PRIMARY__POOL__SIZ",
            "profiles.p.databases.primary.pool.siz: unknown key 'siz' (did you mean 'size'?)",
        ),
        (
            "DBCONF_DEFAULT_DATABSE",
            "profiles.p.default_databse: unknown key 'default_databse' "
            "(did you mean 'default_database'?)",
        ),
        (
            "DBCONF_DATABASES__PRIAMRY__POOL__SIZE",
            "profiles.p.databases.priamry.pool.size: the profile declares no database 'priamry' "
            "(did you mean 'primary'?); set …__PRIAMRY__URL to add one",
        ),
        (
            "DBCONF_DATABASES__PRIMARY__SESSIONS__BACTH__AUTOFLUSH",
            "profiles.p.databases.primary.sessions.bacth.autoflush: database 'primary' declares "
            "no session flavour 'bacth' (did you mean 'batch'?)",
        ),
        (
            "DBCONF_DATABASES____POOL__SIZE",
            "empty key segment: separate keys with exactly two underscores, "
            "e.g. DBCONF_DATABASES__PRIMARY__URL",
        ),
    ],
)
def test_env_var_typos_are_errors_with_suggestions(
    write_config: WriteConfig, var: str, message: str
) -> None:
    (problem,) = problems_of(two_databases(write_config), environ={var: "true"})
    assert problem.startswith((f"env {var} profiles.p.", f"env {var}: "))
    assert message in problem


def test_secrets_file_typo_is_an_error(write_config: WriteConfig, tmp_path: Path) -> None:
    (tmp_path / "DBCONF_DATABASES__PRIMRY__PASSWORD").write_text("x\n")
    (problem,) = problems_of(
        two_databases(write_config), environ={"DBCONF_SECRETS_DIR": str(tmp_path)}
    )
    assert problem.startswith(f"secrets file {tmp_path}/DBCONF_DATABASES__PRIMRY__PASSWORD ")
    assert "declares no database 'primry' (did you mean 'primary'?)" in problem


def test_secret_may_complete_a_database_added_by_an_env_var(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "DBCONF_DATABASES__CACHE__PASSWORD").write_text("pw\n")
    environ = {
        "DBCONF_SECRETS_DIR": str(tmp_path),
        "DBCONF_DATABASES__CACHE__URL": "postgresql://u@cache/db",
    }
    loaded = load_profile("p", path=two_databases(write_config), environ=environ)
    assert loaded.config.databases["cache"].sqlalchemy_url.password == "pw"


def test_unknown_default_database_suggests(write_config: WriteConfig) -> None:
    path = two_databases(write_config, default="default_database: analytcs")
    assert problems_of(path, environ={}) == [
        f"{path}:3:5 profiles.p.default_database: default_database 'analytcs' is not a "
        "database of this "
        "profile (did you mean 'analytics'?)"
    ]


def test_every_problem_is_reported_at_once(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: "postgresql://${HOST}/db"
                pool: {size: 0, max_overflow: -2}
              other:
                url: "sqlite:///x.db"
                echo: "yes"
                timeouts: {connect: -1}
        """
    )
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=path, environ={"DBCONF_DATABASES__OTHER__POOL__USE_LIFO": "maybe"})
    error = info.value
    assert len(error.problems) == 6
    assert [p.path.removeprefix("profiles.p.databases.") for p in error.problems] == [
        "primary.url",
        "primary.pool.size",
        "primary.pool.max_overflow",
        "other.echo",
        "other.pool.use_lifo",
        "other.timeouts.connect",
    ]
    text = str(error)
    assert text.startswith("invalid database configuration (6 problems):\n  - ")
    assert f"{path}:5:9 profiles.p.databases.primary.url: environment variable HOST" in text
    assert "env DBCONF_DATABASES__OTHER__POOL__USE_LIFO" in text


def test_value_that_failed_to_interpolate_is_not_reported_twice(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "${URL}"}
        """
    )
    problems = problems_of(path, environ={})
    assert problems == [
        f"{path}:4:17 profiles.p.databases.primary.url: environment variable URL is not set; "
        "export it, or give a default: ${URL:-…}"
    ]


# -- cross-field and dialect checks, through the loader ------------------------------------

CHECKS = """
    profiles:
      p:
        databases:
          primary:
            url: "{url}"
            {key}: {value}
    """


@pytest.mark.parametrize(
    ("url", "key", "value", "at", "message"),
    [
        (
            "postgresql://h/db",
            "pool",
            '{class: "null", size: 5}',
            "pool.size",
            "pool.size cannot be used with pool.class null",
        ),
        (
            "sqlite://",
            "pool",
            "{size: 5}",
            "pool.size",
            "an in-memory SQLite database lives in one connection",
        ),
        (
            "postgresql://h/db",
            "pool",
            "{size: 0}",
            "pool.size",
            "Input should be greater than or equal to 1 (got 0)",
        ),
        (
            "postgresql://h/db",
            "pool",
            "{max_overflow: -2}",
            "pool.max_overflow",
            "Input should be greater than or equal to -1 (got -2)",
        ),
        (
            "postgresql://h/db",
            "pool",
            "{recycle: -5}",
            "pool.recycle",
            "a duration must not be negative",
        ),
        (
            "postgresql://h/db",
            "timeouts",
            "{statement: -5s}",
            "timeouts.statement",
            "a duration must not be negative (got '-5s')",
        ),
        (
            "sqlite:///x.db",
            "timeouts",
            "{idle_in_transaction: 1m}",
            "timeouts.idle_in_transaction",
            "timeouts.idle_in_transaction is not supported for sqlite",
        ),
        (
            "mysql://u@h/db",
            "timeouts",
            "{idle_in_transaction: 1m}",
            "timeouts.idle_in_transaction",
            "timeouts.idle_in_transaction is not supported for mysql: MySQL has no such timeout",
        ),
        (
            "postgresql://h/db",
            "sqlite",
            "{journal_mode: wal}",
            "sqlite",
            "sqlite is not supported for postgresql: the sqlite: pragmas apply to SQLite only",
        ),
        (
            "mariadb+pymysql://u@h/db",
            "timeouts",
            "{lock: 1.5s}",
            "timeouts.lock",
            "timeouts.lock is not supported for mariadb: MariaDB/MySQL take this timeout in "
            "whole seconds (at least 1s)",
        ),
        (
            "postgresql://h/db",
            "pool",
            '{pre_ping: "yes"}',
            "pool.pre_ping",
            "expected true (ping every checkout), false (never) or a duration such as 1s",
        ),
        (
            "postgresql://h/db",
            "pool",
            '{class: "null", pre_ping: 1s}',
            "pool.pre_ping",
            "pool.pre_ping cannot be used with pool.class null",
        ),
        (
            "postgresql://h/db",
            "pool",
            "{pre_ping: 0s}",
            "pool.pre_ping",
            "a pre_ping window must be greater than 0; use true to ping every checkout",
        ),
    ],
)
def test_checks_point_at_the_offending_key(
    write_config: WriteConfig, url: str, key: str, value: str, at: str, message: str
) -> None:
    path = write_config(CHECKS.format(url=url, key=key, value=value))
    line = path.read_text().splitlines()[5]  # line 6: the key under test
    col = line.index(at.split(".")[-1] + ":") + 1
    (problem,) = problems_of(path, environ={})
    assert problem.startswith(f"{path}:6:{col} profiles.p.databases.primary.{at}: {message}")


def test_boolean_from_env_is_parsed(write_config: WriteConfig) -> None:
    path = write_config(CHECKS.format(url="postgresql://h/db", key="echo", value="false"))
    environ = {"DBCONF_DATABASES__PRIMARY__POOL__PRE_PING": "true"}
    loaded = load_profile("p", path=path, environ=environ)
    assert loaded.config.databases["primary"].pool.pre_ping is True


def test_pre_ping_window_from_env_is_parsed(write_config: WriteConfig) -> None:
    path = write_config(CHECKS.format(url="postgresql://h/db", key="echo", value="false"))
    environ = {"DBCONF_DATABASES__PRIMARY__POOL__PRE_PING": "1s"}
    loaded = load_profile("p", path=path, environ=environ)
    assert loaded.config.databases["primary"].pool.pre_ping == 1.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("12", 12.0), ("1.5", 1.5)],
)
def test_durations_in_the_file(write_config: WriteConfig, value: str, seconds: float) -> None:
    path = write_config(
        CHECKS.format(url="postgresql://h/db", key="timeouts", value=f"{{statement: {value}}}")
    )
    loaded = load_profile("p", path=path, environ={})
    assert loaded.config.databases["primary"].timeouts.statement == seconds


# -- YAML features through the loader ---------------------------------------------------------


def test_anchors_and_merge_keys(write_config: WriteConfig) -> None:
    path = write_config(
        """
        x-pool: &pool
          size: 5
          pre_ping: true
        profiles:
          p:
            databases:
              primary:
                url: "postgresql://h/a"
                pool:
                  <<: *pool
                  size: 9
              secondary:
                url: "postgresql://h/b"
                pool: *pool
        """
    )
    loaded = load_profile("p", path=path, environ={})
    primary, secondary = loaded.config.databases.values()
    assert (primary.pool.size, primary.pool.pre_ping) == (9, True)
    assert (secondary.pool.size, secondary.pool.pre_ping) == (5, True)
    assert loaded.origin("databases", "primary", "pool", "pre_ping") == Origin(
        "file", str(path), 3, 3
    )
    assert loaded.origin("databases", "primary", "pool", "size") == Origin(
        "file", str(path), 11, 11
    )


def test_duplicate_key_through_the_loader(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "sqlite:///a.db", url: "sqlite:///b.db"}
        """
    )
    assert problems_of(path, environ={}) == [
        f"{path}:4:40: found duplicate key 'url'; remove one of them"
    ]


def test_malformed_yaml_through_the_loader(write_config: WriteConfig) -> None:
    path = write_config("profiles:\n  p:\n    databases: [\n")
    (problem,) = problems_of(path, environ={})
    assert problem.startswith(f"{path}:4:1: ")


def test_python_tag_through_the_loader_does_not_run(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              primary:
                url: !!python/object/apply:os.system ["echo hi > {marker}"]
        """
    )
    (problem,) = problems_of(path, environ={})
    assert problem.startswith(f"{path}:5:14: could not determine a constructor for the tag ")
    assert not marker.exists()


def test_top_level_x_keys_are_allowed_for_anchors(write_config: WriteConfig) -> None:
    path = write_config(
        """
        x-url: &url "sqlite:///x.db"
        .hidden: 1
        profiles:
          p:
            databases:
              primary: {url: *url}
        """
    )
    assert url_of(load_profile("p", path=path, environ={})) == "sqlite:///x.db"


# -- masking: a password with @ % : never shows ------------------------------------------------

SOURCES = ["url", "password", "password_file", "interpolated", "env", "secrets", "DATABASE_URL"]


def masked_setup(
    source: str, tmp_path: Path, extra: str = "", url: str | None = None
) -> tuple[Path, dict[str, str]]:
    """A config whose primary database gets PASSWORD from ``source``; ``extra`` adds a line."""
    (tmp_path / "secrets").mkdir(exist_ok=True)
    db = ["url: 'postgresql://app@db.example/app'"]
    environ: dict[str, str] = {}
    if source == "url":
        db = [f"url: 'postgresql://app:{ENCODED}@db.example/app'"]
    elif source == "password":
        db.append(f"password: '{PASSWORD}'")
    elif source == "password_file":
        (tmp_path / "pw").write_text(PASSWORD + "\n")
        db.append("password_file: pw")
    elif source == "interpolated":
        db.append("password: ${DB_PASSWORD}")
        environ["DB_PASSWORD"] = PASSWORD
    elif source == "env":
        environ["DBCONF_DATABASES__PRIMARY__PASSWORD"] = PASSWORD
    elif source == "secrets":
        (tmp_path / "secrets" / "DBCONF_DATABASES__PRIMARY__PASSWORD").write_text(PASSWORD + "\n")
        environ["DBCONF_SECRETS_DIR"] = str(tmp_path / "secrets")
    elif source == "DATABASE_URL":
        environ["DATABASE_URL"] = f"postgresql://app:{ENCODED}@db.example/app"
    if url is not None:  # a malformed url, carrying the password
        db = [line for line in db if not line.startswith("url:")]
        environ["DATABASE_URL"] = url
    if extra:
        db.append(extra)
    lines = ["profiles:", "  p:", "    databases:", "      primary:"]
    lines += [f"        {line}" for line in db]
    path = tmp_path / "databases.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, environ


def assert_hidden(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert ENCODED not in text
        assert "w%rd" not in text
        assert "w%25rd" not in text


@pytest.mark.parametrize("source", SOURCES)
def test_password_is_used_but_masked(tmp_path: Path, source: str) -> None:
    path, environ = masked_setup(source, tmp_path)
    loaded = load_profile("p", path=path, environ=environ)
    primary = loaded.config.databases["primary"]
    if source == "password_file":  # read for each new connection, never kept
        assert primary.sqlalchemy_url.password is None
        assert primary.masked_url() == "postgresql+psycopg2://app@db.example/app"
    else:
        assert primary.sqlalchemy_url.password == PASSWORD
        assert primary.masked_url() == "postgresql+psycopg2://app:***@db.example/app"
    assert_hidden(
        repr(loaded.config),
        str(loaded.config),
        repr(primary),
        str(primary),
        repr(loaded),
        str(loaded),
        primary.masked_url(),
        repr(loaded.origins),
    )


@pytest.mark.parametrize("source", SOURCES)
def test_password_is_masked_when_the_database_has_another_error(
    tmp_path: Path, source: str
) -> None:
    path, environ = masked_setup(source, tmp_path, extra="pool: {size: 0, pre_ping: 'yes'}")
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=path, environ=environ)
    error = info.value
    assert len(error.problems) == 2
    assert "pool.size" in str(error)
    # Not chained to pydantic's ValidationError: its text quotes key paths (a URL written as
    # a database name would show its password in a traceback); every error is in problems.
    assert error.__cause__ is None
    assert error.__suppress_context__
    assert_hidden(str(error), repr(error), *map(str, error.problems), *map(repr, error.problems))


MALFORMED_URLS = [
    f"postgresql://app:{PASSWORD}@db.example/app",  # not percent-encoded
    f"postgresql://app:{PASSWORD}@db.example:port/app",
    f"{PASSWORD}",
]


@pytest.mark.parametrize("url", MALFORMED_URLS)
@pytest.mark.parametrize("where", ["file", "DATABASE_URL", "DBCONF_", "secrets"])
def test_password_is_masked_when_the_url_is_malformed(tmp_path: Path, url: str, where: str) -> None:
    path, environ = masked_setup("password", tmp_path, url=url)
    environ.pop("DATABASE_URL")
    if where == "file":
        environ["URL"] = url
        text = path.read_text().replace("      primary:\n", "      primary:\n        url: ${URL}\n")
        path.write_text(text)
    elif where == "DATABASE_URL":
        environ["DATABASE_URL"] = url
    elif where == "DBCONF_":
        environ["DBCONF_DATABASES__PRIMARY__URL"] = url
    else:
        (tmp_path / "secrets" / "DBCONF_DATABASES__PRIMARY__URL").write_text(url)
        environ["DBCONF_SECRETS_DIR"] = str(tmp_path / "secrets")
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=path, environ=environ)
    error = info.value
    (problem,) = error.problems
    assert problem.path == "profiles.p.databases.primary.url"
    assert "is not a valid database URL" in problem.message
    assert_hidden(str(error), repr(error), str(error.__cause__), repr(error.__cause__))


@pytest.mark.parametrize(
    ("extra", "environ"),
    [
        (f"pasword: '{PASSWORD}'", {}),  # a typo'd key carrying the password
        ("", {"DBCONF_DATABASES__PRIMARY__PASWORD": PASSWORD}),
        ("", {"DBCONF_DATABASES__PRIMRY__PASSWORD": PASSWORD}),
        (f"password: ['{PASSWORD}']", {}),  # wrong type
        (f"query: {{password: ['{PASSWORD}']}}", {}),
    ],
)
def test_password_is_masked_in_errors_about_the_password_itself(
    tmp_path: Path, extra: str, environ: dict[str, str]
) -> None:
    path, _ = masked_setup("url", tmp_path, extra=extra)
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=path, environ=environ)
    error = info.value
    assert error.problems
    assert_hidden(str(error), repr(error), str(error.__cause__), repr(error.__cause__))


def test_null_pool_class(write_config: WriteConfig) -> None:
    # In the file, a bare `null` is YAML's null (it resets the key): the class must be quoted.
    path = write_config(CHECKS.format(url="postgresql://h/db", key="pool", value='{class: "null"}'))
    loaded = load_profile("p", path=path, environ={})
    assert loaded.config.databases["primary"].pool.class_ == "null"
    # From env vars and ${…} defaults, the value is the class name.
    path = write_config(CHECKS.format(url="postgresql://h/db", key="echo", value="false"))
    environ = {"DBCONF_DATABASES__PRIMARY__POOL__CLASS": "null"}
    loaded = load_profile("p", path=path, environ=environ)
    assert loaded.config.databases["primary"].pool.class_ == "null"
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: "postgresql://h/db"
                pool:
                  class: ${C:-null}
        """
    )
    loaded = load_profile("p", path=path, environ={})
    assert loaded.config.databases["primary"].pool.class_ == "null"


# -- review fixes: leaks through odd inputs, crashes, drivers, every problem at once -------


def test_raw_at_sign_in_an_interpolated_password_is_rejected_unquoted(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "postgresql+psycopg2://u:${PW}@127.0.0.1/test"}
        """
    )
    (problem,) = problems_of(path, environ={"PW": "Secr@tPart"})
    assert "profiles.p.databases.primary.url" in problem
    assert "percent-encode @" in problem
    assert "tPart" not in problem
    assert "Secr" not in problem


def test_malformed_interpolation_in_a_password_is_not_quoted(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "postgresql://u@h/db", password: 'ab${cdSECRET'}
        """
    )
    (problem,) = problems_of(path, environ={})
    assert "malformed a ${ (not shown: secret value)" in problem
    assert "SECRET" not in problem


def test_nested_interpolation_in_a_default_is_an_error(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "${A:-${B:-sqlite://}}"}
        """
    )
    (problem,) = problems_of(path, environ={})
    assert "a ${…} inside a default or message is not supported" in problem


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_durations_are_config_errors(write_config: WriteConfig, value: str) -> None:
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              primary: {{url: "sqlite:///x.db", timeouts: {{statement: {value}}}}}
        """
    )
    (problem,) = problems_of(path, environ={})
    assert "profiles.p.databases.primary.timeouts.statement" in problem


def test_non_utf8_files_are_config_errors(write_config: WriteConfig, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfeprofiles: {}")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_profile("p", path=bad, environ={})
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "postgresql://u@h/db", password_file: pw.bin}
        """
    )
    (tmp_path / "pw.bin").write_bytes(b"\xff\xfesecret")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DBCONF_DATABASES__PRIMARY__USERNAME").write_bytes(b"\xff")
    problems = problems_of(path, environ={"DBCONF_SECRETS_DIR": str(secrets)})
    assert len(problems) == 2
    assert all("it is not UTF-8 text" in p for p in problems)


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgres://u@h/db", "postgresql+psycopg2"),
        ("postgresql://u@h/db", "postgresql+psycopg2"),
        ("mysql://u@h/db", "mysql+pymysql"),
        ("mariadb://u@h/db", "mariadb+pymysql"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_a_url_without_driver_gets_the_supported_one(
    write_config: WriteConfig, url: str, driver: str
) -> None:
    path = write_config(f'profiles: {{p: {{databases: {{primary: {{url: "{url}"}}}}}}}}')
    loaded = load_profile("p", path=path, environ={})
    assert loaded.config.databases["primary"].sqlalchemy_url.drivername == driver


def test_unknown_driver_fails_at_load_with_a_suggestion(write_config: WriteConfig) -> None:
    path = write_config(
        'profiles: {p: {databases: {primary: {url: "postgressql+psycopg2://h/d"}}}}'
    )
    (problem,) = problems_of(path, environ={})
    assert problem.startswith(f"{path}:1:38 profiles.p.databases.primary.url: unknown database")
    assert "(did you mean 'postgresql+psycopg2'?)" in problem


def test_every_problem_at_once_across_databases(write_config: WriteConfig) -> None:
    path = write_config(
        """
        x-oops: 1
        profiles:
          p:
            databases:
              broken: {url: "sqlite:///x.db", echo: maybe}
              conflict:
                url: postgresql+psycopg2://app@db/app
                timeouts: {connect: 5s}
                connect_args: {connect_timeout: 3}
        """
    )
    problems = problems_of(path, environ={})
    assert len(problems) == 2, problems
    assert any("databases.broken.echo" in p for p in problems)
    assert any(
        p.startswith(f"{path}:8:20 profiles.p.databases.conflict.timeouts.connect")
        for p in problems
    )


def test_top_level_and_profile_problems_are_reported_together(write_config: WriteConfig) -> None:
    path = write_config(
        """
        extra: 1
        profiles:
          p:
            databases:
              primary: {url: "sqlite:///x.db", echo: maybe}
        """
    )
    problems = problems_of(path, environ={})
    assert len(problems) == 2
    assert "extra: unknown top-level key" in problems[0]
    assert "profiles.p.databases.primary.echo" in problems[1]


# -- user data of the wrong shape anywhere the loader walks it: a ConfigError with origin ---

SHAPE_PATHS = [
    ("databases",),
    ("databases", "primary"),
    ("databases", "primary", "pool"),
    ("databases", "primary", "sessions"),
    ("databases", "primary", "sessions", "batch"),
    ("databases", "primary", "timeouts"),
    ("databases", "primary", "connect_args"),
    ("databases", "primary", "query"),
    ("databases", "primary", "password_file"),
    ("default_database",),
    ("workers",),
    ("extends",),
]
ODD_VALUES: list[Any] = [[], ["primary", "b"], [{"a": 1}], "text", 5, True, {"x": [1]}, None]
WALKING_ENV = {
    "DATABASE_URL": "sqlite://",
    "PRIMARY_DATABASE_URL": "sqlite:///p.db",
    "DBCONF_DATABASES__PRIMARY__SESSIONS__BATCH__AUTOFLUSH": "true",
    "DBCONF_DATABASES__PRIMARY__POOL__SIZE": "3",
    "DBCONF_DATABASES__NEW__URL": "sqlite://",
    "DBCONF_DATABASES__PRIMARY__PASSWORD_FILE": "nope",
    "DBCONF_DATABASES": "[a]",
    "DBCONF_DATABASES__PRIMARY__SESSIONS": "x",
}


def shaped_profiles(where: str, path: tuple[str, ...], odd: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "databases": {
            "primary": {"url": "sqlite:///x.db", "pool": {"size": 2}, "sessions": {"batch": {}}}
        }
    }
    child: dict[str, Any] = {"extends": "base", "databases": {"primary": {"echo": True}}}
    node = base if where == "base" else child
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = odd
    return {"profiles": {"base": base, "p": child}}


@given(
    st.sampled_from(["base", "p"]),
    st.sampled_from(SHAPE_PATHS),
    st.sampled_from(ODD_VALUES),
    st.lists(st.sampled_from(sorted(WALKING_ENV)), max_size=4, unique=True),
    st.booleans(),
)
def test_any_value_of_the_wrong_shape_is_a_config_error_with_origin(
    tmp_path: Path,
    where: str,
    key_path: tuple[str, ...],
    odd: Any,
    names: list[str],
    as_secret: bool,
) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text(yaml.safe_dump(shaped_profiles(where, key_path, odd)))
    environ = {name: WALKING_ENV[name] for name in names}
    if as_secret and names:  # the first one as a secrets file, walked over env + file
        secrets = tmp_path / "secrets"
        secrets.mkdir(exist_ok=True)
        for old in secrets.iterdir():
            old.unlink()
        (secrets / names[0]).write_text(environ.pop(names[0]))
        (secrets / names[0]).chmod(0o600)
        environ["DBCONF_SECRETS_DIR"] = str(secrets)
    problems: tuple[Problem, ...] = ()
    try:
        load_profile("p", path=path, environ=environ)
    except ConfigError as e:  # any other exception fails the test
        problems = e.problems
    assert all(problem.origin for problem in problems)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([("databases.primary.echo", True)], "overrides= must be a mapping"),
        ("databases.primary.echo", "overrides= must be a mapping"),
        ({"databases..primary": 1}, "empty key segment in 'databases..primary'"),
        ({"databases": {"primary.": 1}}, "empty key segment in 'primary.'"),
    ],
)
def test_overrides_of_the_wrong_shape(
    write_config: WriteConfig, overrides: Any, message: str
) -> None:
    problems = problems_of(two_databases(write_config), environ={}, overrides=overrides)
    assert any(p.startswith(f"overrides= at {__file__}:") and message in p for p in problems)


def cyclic() -> dict[str, Any]:
    loop: list[Any] = []
    loop.append(loop)
    return {"databases.primary.connect_args": {"a": loop}}


def deep() -> dict[str, Any]:
    value: dict[str, Any] = {}
    node = value
    for _ in range(2000):
        node = node.setdefault("k", {})
    return {"databases.primary.connect_args": value}


@pytest.mark.parametrize("make", [cyclic, deep])
def test_overrides_that_are_not_a_plain_tree(
    write_config: WriteConfig, make: Callable[[], dict[str, Any]]
) -> None:
    (problem,) = problems_of(two_databases(write_config), environ={}, overrides=make())
    assert problem.startswith(f"overrides= at {__file__}:")
    assert " profiles.p.databases.primary.connect_args: " in problem
    assert "not a plain tree of values" in problem


def test_env_mapping_keys_must_be_strings(write_config: WriteConfig) -> None:
    var = "DBCONF_DATABASES__PRIMARY__CONNECT_ARGS"
    problems = problems_of(two_databases(write_config), environ={var: "{1: a, b: {2: c}}"})
    assert problems == [
        f"env {var} profiles.p.databases.primary.connect_args: key 1 must be a string; quote it",
        f"env {var} profiles.p.databases.primary.connect_args.b: key 2 must be a string; quote it",
    ]


# -- keys only the file sets ------------------------------------------------------------------


@pytest.mark.parametrize("source", ["env", "env lower", "secrets", "code", "code null"])
def test_extends_is_only_read_from_the_file(
    write_config: WriteConfig, tmp_path: Path, source: str
) -> None:
    path = two_databases(write_config)
    environ: dict[str, str] = {}
    overrides: dict[str, Any] | None = None
    if source.startswith("env"):
        environ = {"dbconf_extends" if source == "env lower" else "DBCONF_EXTENDS": "other"}
    elif source == "secrets":
        (tmp_path / "DBCONF_EXTENDS").write_text("other")
        environ = {"DBCONF_SECRETS_DIR": str(tmp_path)}
    else:
        overrides = {"extends": None if source == "code null" else "other"}
    (problem,) = problems_of(path, environ=environ, overrides=overrides)
    assert "profiles.p.extends: extends is read only from the file" in problem
    assert "set DBCONF_PROFILE (or pass profile= / --profile)" in problem
    where = {"env": "env DBCONF_EXTENDS", "env lower": "env dbconf_extends"}
    where |= {"secrets": f"secrets file {tmp_path}"}
    assert problem.startswith(where.get(source, f"overrides= at {__file__}:"))


# -- misspelt DBCONF_ names, and did-you-mean as a class -----------------------------------


@pytest.mark.parametrize(
    ("var", "meant"),
    [
        ("DBCONF_PROFIL", "DBCONF_PROFILE"),
        ("DBCONF_PROFLE", "DBCONF_PROFILE"),
        ("DBCONF_PROFILES", "DBCONF_PROFILE"),
        ("DBCONF_PROFILE_NAME", "DBCONF_PROFILE"),
        ("DBCONF_CONFIGS", "DBCONF_CONFIG"),
        ("DBCONF_CONFIG_FILE", "DBCONF_CONFIG"),
        ("DBCONF_CONF", "DBCONF_CONFIG"),
        ("DBCONF_SECRETS", "DBCONF_SECRETS_DIR"),
        ("DBCONF_SECRET_DIR", "DBCONF_SECRETS_DIR"),
        ("dbconf_secretsdir", "DBCONF_SECRETS_DIR"),
    ],
)
def test_a_name_close_to_a_reserved_var_suggests_it(
    write_config: WriteConfig, var: str, meant: str
) -> None:
    path = write_config(TWO_PROFILES)
    # even when the profile it was meant to pick is then missing, the typo is reported
    for profile in ("test", None):
        problems = problems_of(path, profile, environ={var: "test"})  # type: ignore[arg-type]
        assert (
            f"env {var}: {var} is not a setting dbconf reads (did you mean {meant!r}?)"
            in (problems[0])
        )


@pytest.mark.parametrize("var", ["dbconf_profile", "Dbconf_Config", "dbconf_SECRETS_DIR"])
def test_a_reserved_var_in_other_capitals_is_an_error(write_config: WriteConfig, var: str) -> None:
    (problem,) = problems_of(write_config(TWO_PROFILES), "test", environ={var: "x"})
    assert problem == f"env {var}: dbconf reads only {var.upper()}, in capitals: rename it"


def test_profile_keys_are_not_mistaken_for_reserved_names(write_config: WriteConfig) -> None:
    environ = {"DBCONF_WORKERS": "2", "DBCONF_DEFAULT_DATABASE": "primary"}
    assert (
        load_profile("test", path=write_config(TWO_PROFILES), environ=environ).config.workers == 2
    )


PROFILE_NAMES = """
    profiles:
      production: {databases: {primary: {url: "sqlite:///p.db"}}}
      staging: {databases: {primary: {url: "sqlite:///s.db"}}}
    """


@pytest.mark.parametrize(
    ("asked", "meant"),
    [
        ("prod", "production"),
        ("Production", "production"),
        ("PROD", "production"),
        ("stag", "staging"),
        ("production_eu", "production"),
        ("stagign", "staging"),
    ],
)
def test_unknown_profile_suggests_by_case_and_prefix(
    write_config: WriteConfig, asked: str, meant: str
) -> None:
    (problem,) = problems_of(write_config(PROFILE_NAMES), asked, environ={})
    assert f"no profile {asked!r} (did you mean {meant!r}?)" in problem


@given(
    st.text(string.ascii_lowercase + "_", min_size=3, max_size=12),
    st.integers(min_value=3, max_value=12),
    st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=12), max_size=4),
)
def test_did_you_mean_finds_prefixes_and_other_capitals(
    name: str, cut: int, others: list[str]
) -> None:
    candidates = [*others, name]
    assert did_you_mean(name.upper(), candidates) == f" (did you mean {name!r}?)" or (
        name.upper().lower() in [o.lower() for o in others]
    )
    prefix = name[: min(cut, len(name))]
    hint = did_you_mean(prefix, candidates)
    suggested = hint.removeprefix(" (did you mean '").removesuffix("'?)")
    assert suggested.startswith(prefix) or prefix.startswith(suggested)


def test_did_you_mean_stays_quiet_for_unrelated_words() -> None:
    assert did_you_mean("xy", ["production", "staging"]) == ""
    assert did_you_mean("p", ["production"]) == ""
    assert did_you_mean("analytics", ["production", "staging"]) == ""


# -- replicas: list items keep their own origins ----------------------------------------------


def test_replica_values_are_interpolated_with_their_own_origin(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: postgresql://app@db/app
                replicas:
                  - url: ${REPLICA_0_URL}
                  - host: ${REPLICA_1_HOST:-r1}
                    application_name: ${MISSING}
        """
    )
    environ = {"REPLICA_0_URL": f"postgresql://app:{ENCODED}@r0/app"}
    problems = problems_of(path, environ=environ)
    assert problems == [
        f"{path}:9:13 profiles.p.databases.primary.replicas[1].application_name: "
        "environment variable MISSING is not set; export it, or give a default: ${MISSING:-…}"
    ]
    path.write_text(path.read_text().replace("${MISSING}", "reports"))
    loaded = load_profile("p", path=path, environ=environ)
    replicas = loaded.config.databases["primary"].replica_configs
    assert replicas[0].sqlalchemy_url.password == PASSWORD
    assert [r.masked_url() for r in replicas] == [
        "postgresql+psycopg2://app:***@r0/app",
        "postgresql+psycopg2://app@r1/app",
    ]
    assert str(loaded.origin("databases", "primary", "replicas", "0", "url")) == (
        f"{path}:7:13 (via ${{REPLICA_0_URL}})"
    )
    assert str(loaded.origin("databases", "primary", "replicas", "1", "host")).startswith(
        f"{path}:8:13 (via default of ${{REPLICA_1_HOST}}"
    )
