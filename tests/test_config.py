"""dbconf.config: the frozen, validated models and their cross-field rules (no files here)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from dbconf.config import DatabaseConfig, PoolConfig, ProfileConfig

PASSWORD = "p@ss:w%rd"
PG = "postgresql+psycopg2://app@db.example:5432/app"


def db(**fields: Any) -> DatabaseConfig:
    return DatabaseConfig.model_validate(fields)


def error_of(**fields: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        db(**fields)
    return info.value


# -- durations ------------------------------------------------------------------------------


DURATION_KEYS = [
    ("pool", "timeout"),
    ("pool", "recycle"),
    ("timeouts", "connect"),
    ("timeouts", "statement"),
    ("timeouts", "lock"),
    ("timeouts", "idle_in_transaction"),
    ("leak_detection", "threshold"),
    ("leak_detection", "long_transaction"),
    ("retry", "backoff"),
    ("retry", "max_backoff"),
]
TOO_LONG = [1.0e308, 10**400, 10**20, "1" * 400, "400000000s", 2e9, "9000000h"]


@pytest.mark.parametrize(("section", "key"), DURATION_KEYS)
@pytest.mark.parametrize("value", TOO_LONG)
def test_every_duration_is_bounded_with_a_clear_message(section: str, key: str, value: Any) -> None:
    (detail,) = error_of(url=PG, **{section: {key: value}}).errors()
    assert detail["loc"] == (section, key)
    assert detail["msg"] in (
        "a duration must be at most 365 days",
        "a timeout must be at most 2147483.647s (about 24.8 days: PostgreSQL takes an int of "
        "milliseconds); use 0 to turn it off",
    )
    assert ("timeout must be at most" in detail["msg"]) == (section == "timeouts")


@given(
    seconds=st.floats(min_value=0, max_value=2147483.647),
    key=st.sampled_from(["connect", "statement", "lock", "idle_in_transaction"]),
)
def test_every_timeout_in_bounds_translates_for_postgresql(seconds: float, key: str) -> None:
    from dbconf.runtime.builder import engine_kwargs

    args = engine_kwargs(db(url=PG, timeouts={key: seconds}))["connect_args"]
    value = args["connect_timeout"] if key == "connect" else int(args["options"].split("=")[-1])
    assert 0 <= value <= 2147483647


def test_longest_timeout_and_duration_are_accepted() -> None:
    config = db(url=PG, timeouts={"statement": 2147483.647}, pool={"recycle": "8760h"})
    assert config.timeouts.statement == 2147483.647
    assert config.pool.recycle == 365 * 86400


@pytest.mark.parametrize(
    ("model", "fields", "loc"),
    [
        (PoolConfig, {"size": 10**6}, ("size",)),
        (PoolConfig, {"size": 10**400}, ("size",)),
        (PoolConfig, {"max_overflow": 100_001}, ("max_overflow",)),
        (ProfileConfig, {"workers": 10**9, "databases": {"a": {"url": PG}}}, ("workers",)),
        (DatabaseConfig, {"url": PG, "port": 10**30}, ("port",)),
    ],
)
def test_counts_are_bounded(model: Any, fields: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate(fields)
    (detail,) = info.value.errors()
    assert detail["loc"] == loc
    assert detail["type"] == "less_than_equal"


def test_durations_in_the_model_are_float_seconds() -> None:
    config = db(
        url=PG,
        pool={"timeout": "30s", "recycle": "30m"},
        timeouts={"connect": 10, "statement": "250ms", "lock": "5s", "idle_in_transaction": "1h"},
    )
    assert config.pool.timeout == 30.0
    assert config.pool.recycle == 1800.0
    assert config.timeouts.model_dump() == {
        "connect": 10.0,
        "statement": 0.25,
        "lock": 5.0,
        "idle_in_transaction": 3600.0,
    }


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ({"timeout": -1}, "a duration must not be negative"),
        ({"recycle": -30}, "a duration must not be negative"),
        ({"timeout": 0}, "the pool timeout must be greater than 0"),
        ({"size": 0}, "greater than or equal to 1"),
        ({"max_overflow": -2}, "greater than or equal to -1"),
        ({"class": "lifo"}, "Input should be 'queue', 'null', 'static' or 'singleton'"),
        ({"pre_ping": "yes"}, "expected true (ping every checkout), false (never) or a duration"),
        ({"pre_ping": 0}, "a pre_ping window must be greater than 0; use true"),
        ({"pre_ping": "0s"}, "a pre_ping window must be greater than 0; use true"),
        ({"pre_ping": "-1s"}, "a pre_ping window must be greater than 0; use true"),
        ({"pre_ping": -1}, "a pre_ping window must be greater than 0; use true"),
        ({"pre_ping": "1x"}, "expected true (ping every checkout), false (never) or a duration"),
        ({"pre_ping": "400d"}, "expected true (ping every checkout), false (never) or a duration"),
        ({"pre_ping": 10**9}, "a duration must be at most 365 days"),
        ({"size": "5"}, "Input should be a valid integer"),
        ({"size": 5.0}, "Input should be a valid integer"),
    ],
)
def test_bad_pool_values(pool: dict[str, Any], message: str) -> None:
    assert message in str(error_of(url=PG, pool=pool))


def test_max_overflow_minus_one_means_unlimited_and_is_allowed() -> None:
    assert db(url=PG, pool={"max_overflow": -1}).pool.max_overflow == -1


# -- pool classes ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ["null", "static", "singleton"])
@pytest.mark.parametrize("key", ["size", "max_overflow", "timeout", "use_lifo"])
def test_pool_class_without_a_size_rejects_sizing(cls: str, key: str) -> None:
    value: Any = True if key == "use_lifo" else 5
    error = error_of(url=PG, pool={"class": cls, key: value})
    (detail,) = error.errors()
    assert detail["loc"] == ()
    assert detail["ctx"]["at"] == f"pool.{key}"
    assert f"pool.{key} cannot be used with pool.class {cls}" in detail["msg"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("1s", 1.0), ("250ms", 0.25), (2, 2.0), (0.5, 0.5)],
)
def test_pre_ping_takes_a_bool_or_a_window(value: Any, expected: bool | float) -> None:
    pre_ping = db(url=PG, pool={"pre_ping": value}).pool.pre_ping
    assert pre_ping == expected
    assert type(pre_ping) is type(expected)  # True stays a bool, never the window 1.0


@pytest.mark.parametrize("value", [True, "1s"])
def test_null_pool_rejects_pre_ping(value: Any) -> None:
    (detail,) = error_of(url=PG, pool={"class": "null", "pre_ping": value}).errors()
    assert detail["ctx"]["at"] == "pool.pre_ping"
    assert "pool.pre_ping cannot be used with pool.class null" in detail["msg"]


def test_null_pool_takes_pre_ping_false() -> None:
    assert db(url=PG, pool={"class": "null", "pre_ping": False}).pool.pre_ping is False


@pytest.mark.parametrize(
    ("url", "cls"),
    [(PG, "static"), (PG, "singleton"), ("sqlite://", None), ("sqlite:///:memory:", "static")],
)
def test_pre_ping_window_needs_the_queue_pool(url: str, cls: str | None) -> None:
    pool: dict[str, Any] = {"pre_ping": "1s"} if cls is None else {"class": cls, "pre_ping": "1s"}
    (detail,) = error_of(url=url, pool=pool).errors()
    assert detail["ctx"]["at"] == "pool.pre_ping"
    assert "a pool.pre_ping window (1s) needs the queue pool" in detail["msg"]
    assert f"pool.class {cls or 'static'} use pre_ping: true or false" in detail["msg"]


@pytest.mark.parametrize("cls", ["static", "singleton"])
def test_pools_that_ping_take_pre_ping_true(cls: str) -> None:
    assert db(url=PG, pool={"class": cls, "pre_ping": True}).pool.pre_ping is True


def test_queue_pool_takes_sizing() -> None:
    pool = db(url=PG, pool={"class": "queue", "size": 5, "max_overflow": 0}).pool
    assert (pool.class_, pool.size, pool.max_overflow) == ("queue", 5, 0)


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"]
)
def test_sqlite_memory_rejects_pool_size(url: str) -> None:
    (detail,) = error_of(url=url, pool={"size": 5}).errors()
    assert "an in-memory SQLite database lives in one connection" in detail["msg"]
    assert detail["ctx"]["at"] == "pool.size"


@pytest.mark.parametrize("cls", ["queue", "null"])
def test_sqlite_memory_rejects_pool_classes_that_lose_the_data(cls: str) -> None:
    (detail,) = error_of(url="sqlite://", pool={"class": cls}).errors()
    assert detail["ctx"]["at"] == "pool.class"


def test_sqlite_file_takes_a_sized_pool() -> None:
    config = db(url="sqlite:///var/app.db", pool={"size": 2})
    assert not config.is_sqlite_memory
    assert config.pool.size == 2


# -- dialect checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "at", "message"),
    [
        (
            {"url": "sqlite:///x.db", "timeouts": {"idle_in_transaction": "1m"}},
            "timeouts.idle_in_transaction",
            "timeouts.idle_in_transaction is not supported for sqlite",
        ),
        (
            {"url": "sqlite:///x.db", "timeouts": {"connect": "1s", "lock": "2s"}},
            "timeouts.connect",
            "both are the busy timeout on SQLite",
        ),
        (
            {"url": "mysql+pymysql://u@h/db", "timeouts": {"idle_in_transaction": "1m"}},
            "timeouts.idle_in_transaction",
            "MySQL has no such timeout",
        ),
        (
            {"url": PG, "sqlite": {"foreign_keys": True}},
            "sqlite",
            "sqlite is not supported for postgresql: the sqlite: pragmas apply to SQLite only",
        ),
        (
            {"url": "mariadb+pymysql://u@h/db", "timeouts": {"lock": "1500ms"}},
            "timeouts.lock",
            "MariaDB/MySQL take this timeout in whole seconds",
        ),
        (
            {"url": "mariadb+pymysql://u@h/db", "timeouts": {"lock": "500ms"}},
            "timeouts.lock",
            "whole seconds (at least 1s)",
        ),
        (
            {"url": "oracle://u@h/db", "timeouts": {"statement": "1s"}},
            "timeouts",
            "timeouts/application_name is not supported for oracle",
        ),
    ],
)
def test_dialect_cannot_honour(fields: dict[str, Any], at: str, message: str) -> None:
    (detail,) = error_of(**fields).errors()
    assert detail["ctx"]["at"] == at
    assert message in detail["msg"]


@pytest.mark.parametrize(
    "fields",
    [
        {"url": "mariadb+pymysql://u@h/db", "timeouts": {"lock": "5s", "idle_in_transaction": 60}},
        {"url": "sqlite:///x.db", "timeouts": {"connect": "5s", "lock": "5s"}},
        {"url": "sqlite:///x.db", "sqlite": {"journal_mode": "wal", "foreign_keys": True}},
        {"url": PG, "timeouts": {"lock": "250ms", "idle_in_transaction": "1m"}},
    ],
)
def test_dialect_can_honour(fields: dict[str, Any]) -> None:
    assert db(**fields).backend in ("mariadb", "sqlite", "postgresql")


# -- url, parts, passwords ------------------------------------------------------------------


def test_url_parts_build_the_url() -> None:
    config = db(
        driver="postgresql+psycopg2",
        host="db",
        port=6543,
        username="app",
        password=PASSWORD,
        database="app",
        query={"sslmode": "require"},
    )
    assert config.sqlalchemy_url.password == PASSWORD
    assert config.masked_url() == "postgresql+psycopg2://app:***@db:6543/app?sslmode=require"
    assert config.backend == "postgresql"


def test_password_wins_over_the_url_password_and_parts_over_url_parts() -> None:
    config = db(url="postgresql://u:old@h:1/db", password=PASSWORD, host="other", port=2)
    url = config.sqlalchemy_url
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "u",
        PASSWORD,
        "other",
        2,
        "db",
    )


def test_no_location_is_an_error() -> None:
    assert "no database location" in str(error_of(host="h"))


def test_malformed_url_is_an_error_without_the_url() -> None:
    url = f"not a url {PASSWORD}"
    error = error_of(url=url)
    assert "is not a valid database URL" in str(error)
    assert PASSWORD not in str(error)
    assert PASSWORD not in repr(error)


def test_password_is_masked_in_repr_and_str() -> None:
    encoded = "p%40ss%3Aw%25rd"
    config = db(url=f"postgresql://u:{encoded}@h/db", password=PASSWORD)
    assert isinstance(config.password, SecretStr)
    assert isinstance(config.url, SecretStr)
    for text in (repr(config), str(config), config.masked_url()):
        assert PASSWORD not in text
        assert encoded not in text
    assert config.password is not None
    assert config.password.get_secret_value() == PASSWORD


@pytest.mark.parametrize("key", ["password", "sslpassword", "PASSWD", "auth_token", "api_key"])
@pytest.mark.parametrize("value", [PASSWORD, 424242, ["x", PASSWORD]])
def test_secret_connect_args_are_masked_in_dumps_and_repr(key: str, value: Any) -> None:
    args = {key: value, "ssl": {key: value}, "keepalives": 1}  # no driver check on sqlite
    config = db(url="sqlite:///x.db", connect_args=args)
    texts = [repr(config), str(config.model_dump()), config.model_dump_json()]
    texts += [str(config.connect_args), str(config.model_dump(mode="json"))]
    for text in texts:
        assert str(PASSWORD) not in text
        assert "424242" not in text
    assert config.model_dump(mode="json")["connect_args"]["keepalives"] == 1


def test_secret_query_values_are_masked_in_dumps() -> None:
    config = db(url=PG, query={"sslpassword": PASSWORD, "sslmode": "require"})
    assert PASSWORD not in config.model_dump_json()
    assert PASSWORD not in str(config.model_dump())
    assert config.model_dump()["query"]["sslmode"] == "require"
    assert config.sqlalchemy_url.query["sslpassword"] == PASSWORD  # what the driver gets


# -- sessions, names, profile ---------------------------------------------------------------


def test_default_session_flavour_always_exists() -> None:
    config = db(url=PG, sessions={"batch": {"autoflush": False}})
    assert list(config.sessions) == ["default", "batch"]
    assert config.sessions["batch"].autoflush is False


def test_autocommit_and_twophase_exclude_each_other() -> None:
    error = error_of(url=PG, sessions={"x": {"autocommit": True, "twophase": True}})
    assert "autocommit and twophase exclude each other" in str(error)


@pytest.mark.parametrize("name", ["Batch", "batch-job", "1st", "a__b"])
def test_session_flavour_names_must_fit_env_vars(name: str) -> None:
    message = f"session flavour name '{name}' must be lower-case letters"
    assert message in str(error_of(url=PG, sessions={name: {}}))


def test_unknown_keys_are_rejected_everywhere() -> None:
    error = error_of(
        url=PG,
        colour=1,
        pool={"sise": 1},
        timeouts={"conect": 1},
        sessions={"default": {"autoflsh": True}},
    )
    locs = {detail["loc"] for detail in error.errors() if detail["type"] == "extra_forbidden"}
    assert locs == {
        ("colour",),
        ("pool", "sise"),
        ("timeouts", "conect"),
        ("sessions", "default", "autoflsh"),
    }


def test_models_are_frozen() -> None:
    config = db(url=PG)
    with pytest.raises(ValidationError, match="frozen"):
        config.echo = True
    with pytest.raises(ValidationError, match="frozen"):
        PoolConfig(size=1).size = 2


def test_profile_default_database() -> None:
    databases = {"primary": {"url": PG}, "analytics": {"url": PG}}
    assert ProfileConfig.model_validate({"databases": databases}).default_name == "primary"
    chosen = ProfileConfig.model_validate({"databases": databases, "default_database": "analytics"})
    assert chosen.default_name == "analytics"
    with pytest.raises(
        ValidationError,
        match=r"default_database 'analytcs' is not a database of this profile "
        r"\(did you mean 'analytics'\?\)",
    ):
        ProfileConfig.model_validate({"databases": databases, "default_database": "analytcs"})


def test_profile_needs_a_database() -> None:
    with pytest.raises(ValidationError, match="the profile declares no databases"):
        ProfileConfig.model_validate({})


@pytest.mark.parametrize("name", ["Primary", "my-db"])
def test_database_names_must_fit_env_vars(name: str) -> None:
    with pytest.raises(ValidationError, match=f"database name '{name}' must be lower-case"):
        ProfileConfig.model_validate({"databases": {name: {"url": PG}}})


@pytest.mark.parametrize(
    ("given", "stored"), [(25006, "25006"), ("25006", "25006"), (8006, "08006")]
)
def test_disconnect_sqlstates_are_five_characters(given: Any, stored: str) -> None:
    config = db(url="postgresql://h/d", disconnect_sqlstates=[given])
    assert config.disconnect_sqlstates == [stored]


@pytest.mark.parametrize("bad", ["nonsense!!", "2500", "250066"])
def test_bad_sqlstates_are_rejected(bad: str) -> None:
    error = error_of(url="postgresql://h/d", disconnect_sqlstates=[bad])
    assert error.errors()[0]["loc"] == ("disconnect_sqlstates", 0)


@pytest.mark.parametrize("url", ["mariadb+pymysql://h/d", "sqlite:///x.db"])
def test_disconnect_sqlstates_only_on_postgresql(url: str) -> None:
    error = error_of(url=url, disconnect_sqlstates=["25006"])
    assert "only PostgreSQL errors carry a SQLSTATE" in str(error)


def test_isolation_level_is_checked() -> None:
    assert "Input should be 'AUTOCOMMIT'" in str(
        error_of(url="sqlite://", isolation_level="SERIAL")
    )
    assert "SQLite offers SERIALIZABLE" in str(
        error_of(url="sqlite:///x.db", isolation_level="READ COMMITTED")
    )
    assert db(url="postgresql://h/d", isolation_level="REPEATABLE READ").isolation_level == (
        "REPEATABLE READ"
    )
