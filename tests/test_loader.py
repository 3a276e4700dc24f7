"""dbconf.loader: profiles + environment → one validated profile, every value with its origin.

Every test reads a real file written to a tmp dir and passes the environment as a dict.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dbconf.errors import ConfigError, DbconfError
from dbconf.loader import LoadedProfile, list_profiles, load_profile
from dbconf.origin import Origin

WriteConfig = Callable[..., Path]
PASSWORD = "p@ss:w%rd"
ENCODED = "p%40ss%3Aw%25rd"  # PASSWORD percent-encoded for a URL


def problems_of(path: Path, profile: str = "p", **kwargs: Any) -> list[str]:
    """Load and expect a ConfigError; return its problems as strings."""
    with pytest.raises(ConfigError) as info:
        load_profile(profile, path=path, **kwargs)
    return [str(problem) for problem in info.value.problems]


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
        ("tset", {}, "profile= in code"),
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
    (problem,) = problems_of(write_config(text), environ={})
    assert message in problem


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
    loaded = load_profile("p", path=path, environ={"PORT": "6543"})
    assert url_of(loaded) == "postgresql://localhost:6543/db"
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
        f"{path}:6:16 (via ${{POOL}}) profiles.p.databases.primary.pool.size: "
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
    loaded = load_profile("p", path=two_databases(write_config), environ={var: raw})
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
    environ = {"DBCONF_SECRETS_DIR": str(secrets)}
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
# (layer, url it sets, origin of that url) lowest first; the file layers are always present.
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
        ("secrets", "overrides", "sqlite:///code.db", "overrides= in code"),
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
    assert str(both.origin("databases", "primary", "url")) == origin.format(secrets=secrets)


def test_all_layers_at_once_the_highest_wins(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config(LAYERED)
    loaded = load_layers(path, tmp_path / "secrets", set(LAYERS))
    assert url_of(loaded) == "sqlite:///code.db"
    assert loaded.origin("databases", "primary", "url") == Origin("code")
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
            Origin("code"),
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
    loaded = load_profile("p", path=write_config(PARTS), environ={})
    primary = loaded.config.databases["primary"]
    assert url_of(loaded) == "postgresql://u@url-host/url-db"
    assert (primary.host, primary.port, primary.password, primary.query) == (None,) * 4
    assert loaded.origin("databases", "primary", "host") == Origin("default")


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
    assert url_of(loaded) == "postgresql://env-host/env-db"


def test_parts_above_a_url_refine_it(write_config: WriteConfig) -> None:
    environ = {"DATABASE_URL": "postgresql://u:pw@env-host/env-db"}
    overrides = {"databases.primary.host": "code-host"}
    loaded = load_profile("p", path=write_config(PARTS), environ=environ, overrides=overrides)
    assert url_of(loaded) == "postgresql://u:pw@code-host/env-db"


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
    assert primary.sqlalchemy_url.password == PASSWORD
    assert loaded.origin("databases", "primary", "password") == Origin(
        "secret", str(conf / "secrets" / "pw")
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
        "password and password_file are both set at the same level; keep one"
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
    assert loaded.config.databases["primary"].sqlalchemy_url.password == "from-file"


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
