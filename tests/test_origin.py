"""dbconf.config.origin: what an error may echo of a bad value (never a URL or a secret)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_no_secret
from hypothesis import given
from hypothesis import strategies as st

from dbconf.config.origin import shown_value
from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile

WriteConfig = Callable[[str], Path]
SECRET = "Zq9-s3cr3t"
URL = f"postgresql://app:{SECRET}@db.example/app"


def error_of(path: Path, environ: dict[str, str] | None = None, **overrides: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=path, environ=environ or {}, overrides=overrides or None)
    return info.value


@pytest.fixture
def config(write_config: WriteConfig) -> Path:
    return write_config("profiles:\n  p:\n    databases:\n      primary: {url: 'sqlite://'}\n")


def test_database_written_as_a_url_string_is_not_echoed(write_config: WriteConfig) -> None:
    path = write_config(f"profiles:\n  p:\n    databases:\n      primary: {URL}\n")
    error = error_of(path)
    assert_no_secret([error], SECRET)
    (problem,) = error.problems
    assert problem.path == "profiles.p.databases.primary"
    assert "got a URL (not shown: it may hold a password)" in problem.message
    assert "write it as primary: {url: ...}" in problem.message


@pytest.mark.parametrize(
    "environ",
    [
        {"DBCONF_DATABASES__PRIMARY": URL},  # the whole database set to a URL
        {"DBCONF_DATABASES__PRIMARY__POOL": URL},
        {"DBCONF_DATABASES__PRIMARY__POOL__SIZE": URL},
        {"DBCONF_DATABASES__PRIMARY__TIMEOUTS__CONNECT": URL},
        {"DBCONF_DATABASES__PRIMARY__ECHO": URL},
        {"DBCONF_DATABASES__PRIMARY__QUERY": URL},
        {"DBCONF_DATABASES__PRIMARY__CONNECT_ARGS": URL},
        {"DBCONF_DATABASES__PRIMARY__ISOLATION_LEVEL": URL},
        {"DBCONF_DEFAULT_DATABASE": URL},
        {"DBCONF_WORKERS": URL},
    ],
)
def test_url_in_a_key_of_the_wrong_type_is_not_echoed(
    config: Path, environ: dict[str, str]
) -> None:
    assert_no_secret([error_of(config, environ)], SECRET)


@pytest.mark.parametrize(
    "primary",
    [
        {"connect_args": "password=424242"},
        {"connect_args": {"password": 424242, "sslpassword": ["424242"]}, "pool": {"size": 0}},
        {"query": {"password": 424242}},
        {"query": {"sslpassword": ["424242"]}},
        {"query": {"sslpassword": 424242}},
        {"query": {"auth_token": 424242.5}},
        {"query": {"sslmode": 424242}},
        {"query": "password=424242"},
        {"password": 424242},
        {"url": 424242},
    ],
)
def test_secret_values_of_the_wrong_type_are_not_echoed(config: Path, primary: Any) -> None:
    error = error_of(config, databases={"primary": primary})
    assert "424242" not in str(error)


# A URL written where a name or a key belongs: the message and the key path mask it (the
# ValidationError the loader chains as __cause__ still names the key: pydantic prints locs).
NO_DOT_URL = f"postgresql://app:{SECRET}@localhost/app"  # overrides= splits keys at dots


def test_database_name_that_is_a_url_is_not_echoed(config: Path) -> None:
    error = error_of(config, databases={NO_DOT_URL: {"url": "sqlite://"}})
    assert_no_secret([str(error), *error.problems], SECRET)
    assert "database name '***' must be lower-case" in str(error)


def test_unknown_key_that_is_a_url_is_not_echoed(config: Path) -> None:
    error = error_of(config, databases={"primary": {"pool": {NO_DOT_URL: 1}}})
    assert_no_secret([str(error), *error.problems], SECRET)
    assert "unknown key '***'" in str(error)


def test_default_database_that_is_a_url_is_not_echoed(config: Path) -> None:
    error = error_of(config, {"DBCONF_DEFAULT_DATABASE": URL})
    assert_no_secret([error], SECRET)
    assert "default_database '***' is not a database of this profile" in str(error)


def test_plain_values_are_still_echoed(config: Path) -> None:
    error = error_of(config, databases={"primary": {"pool": {"size": "ten", "use_lifo": "yes"}}})
    assert "(got 'ten')" in str(error)
    assert "(got 'yes')" in str(error)


@given(
    value=st.one_of(
        st.text(max_size=60).map(lambda t: f"{t}://{t}:{SECRET}@h"),
        st.text(max_size=20).map(lambda t: t + "@" + SECRET),
        st.just(SECRET),
        st.integers(),
        st.floats(allow_nan=False),
    ),
    key=st.sampled_from(["password", "url", "query", "connect_args", "sslpassword", "api_key"]),
)
def test_shown_value_hides_urls_and_anything_under_a_secret_key(value: Any, key: str) -> None:
    assert shown_value(value, ("databases", "primary", key, "x")) == "'***'"
    if isinstance(value, str) and "@" in value:  # a URL (or part of one) under any key
        assert shown_value(value, ("pool", "size")) == "'***'"


@given(value=st.integers(min_value=-(10**30), max_value=10**30) | st.booleans())
def test_shown_value_shows_numbers_and_booleans(value: Any) -> None:
    shown = shown_value(value, ("pool", "size"))
    assert shown == (repr(value) if value.bit_length() <= 64 else "a number too large")


def test_a_huge_number_is_summarised_not_printed(config: Path) -> None:
    error = error_of(config, databases={"primary": {"pool": {"size": 10**5000}}})
    assert "a number too large" in str(error)


MISTAKES = [
    "{s}",  # the password alone
    "postgresql://app:{s}@db.example:port/app",  # a placeholder port
    "postgresql://app:{s}@@db.example/app",
    "app:{s}@db.example/app",  # no scheme
    "postgresql:/app:{s}@db.example/app",
    " postgresql://app:{s}@db.example/app",
    "postgresql://app:{s}@db.example:5432/app?sslmode=require&password={s}&password={s}",
    "sqlite://app:{s}@/x.db",
    "postgresql://app:{s}@db.example:99999/app",
    "mysql://app@db.example/app?password={s}&reconnect=true",  # a raw & splits the password
    "postgresql://app@db.example/app?sslmode=require&sslpassword={s}",
]


@given(
    shape=st.sampled_from(MISTAKES),
    secret=st.text(alphabet="abcXYZ019@:/%?#&=+ ", min_size=4, max_size=10).map(
        lambda t: "Zq9" + t
    ),
    var=st.sampled_from(
        ["DATABASE_URL", "PRIMARY_DATABASE_URL", "DBCONF_DATABASES__PRIMARY__URL", "URL_IN_FILE"]
    ),
)
def test_malformed_database_urls_from_anywhere_never_show_the_password(
    write_config: WriteConfig, shape: str, secret: str, var: str
) -> None:
    url = "${URL_IN_FILE}" if var == "URL_IN_FILE" else "sqlite://"
    path = write_config(f"profiles:\n  p:\n    databases:\n      primary: {{url: '{url}'}}\n")
    sources: list[object]
    try:
        loaded = load_profile("p", path=path, environ={var: shape.format(s=secret)})
    except ConfigError as e:
        sources = [e]
    else:  # a shape that still parses: its displays must mask the password
        sources = [repr(loaded), loaded.config.databases["primary"].masked_url()]
    assert_no_secret(sources, secret)


@pytest.mark.parametrize(
    "password_line",
    [
        "password: &pw Tiger7",
        "url: &pw postgresql://app:Tiger7@db/app",
        "connect_args: {sslpassword: &pw Tiger7}",
    ],
)
@pytest.mark.parametrize(
    "misuse",
    [
        "pool: {size: *pw}",
        "workers_typo: *pw",
        "isolation_level: *pw",
        "sessions: {web: {autoflush: *pw}}",
        "timeouts: {statement: *pw}",
    ],
)
def test_a_secret_copied_under_a_shown_key_is_masked(
    write_config: WriteConfig, password_line: str, misuse: str
) -> None:
    """An alias (or a slip) can put a password where values are echoed: the loader masks
    every secret it holds in every problem it reports."""
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              primary:
                driver: postgresql
                host: db
                {password_line}
                {misuse}
        """
    )
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=path, environ={})
    assert "Tiger7" not in str(info.value)
    assert "Tiger7" not in repr(info.value.problems)
