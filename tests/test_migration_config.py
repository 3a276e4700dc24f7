"""The migrations: block and the configuration migrations connect with (no server needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SECRET_PASSWORD, assert_no_secret
from sqlalchemy.pool import NullPool, StaticPool

from dbconf.cli import main
from dbconf.config import DatabaseConfig
from dbconf.config.migration_config import MigrationsConfig, migration_database
from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile
from dbconf.runtime.builder import engine_kwargs

ENCODED = "p%40ss%3Aw%25rd%2F1"  # SECRET_PASSWORD percent-encoded


def db(**data: object) -> DatabaseConfig:
    return DatabaseConfig.model_validate(data)


def test_defaults_turn_statement_and_idle_timeouts_off_and_keep_lock_and_connect() -> None:
    cfg = db(
        url="postgresql+psycopg2://app@h/app",
        timeouts={"statement": 15.0, "lock": 5.0, "idle_in_transaction": 10.0, "connect": 3.0},
        pool={"size": 20, "pre_ping": True},
        isolation_level="SERIALIZABLE",
        sessions={"batch": {"autoflush": False}},
    )
    assert cfg.migrations is None
    m = cfg.migration_config
    assert m.timeouts.model_dump() == {
        "connect": 3.0,
        "statement": 0.0,
        "lock": 5.0,
        "idle_in_transaction": 0.0,
    }
    assert m.pool.class_ == "null"
    assert m.isolation_level is None
    assert list(m.sessions) == ["default"]
    assert m.migrations is None
    # what reaches create_engine: NullPool and the timeouts off in libpq's options
    kwargs = engine_kwargs(m)
    assert kwargs["poolclass"] is NullPool
    assert "-c statement_timeout=0" in kwargs["connect_args"]["options"]
    assert "-c idle_in_transaction_session_timeout=0" in kwargs["connect_args"]["options"]
    assert "-c lock_timeout=5000" in kwargs["connect_args"]["options"]


def test_block_timeouts_win_and_version_table_and_path() -> None:
    cfg = db(
        url="postgresql://app@h/app",
        timeouts={"statement": 15.0, "lock": 5.0},
        migrations={
            "path": "db/billing",
            "version_table": "billing_version",
            "timeouts": {"lock": 30.0, "statement": 600.0},
        },
    )
    assert cfg.migrations == MigrationsConfig(
        path="db/billing",
        version_table="billing_version",
        timeouts={"lock": 30.0, "statement": 600.0},  # type: ignore[arg-type]
    )
    assert cfg.migration_config.timeouts.lock == 30.0
    assert cfg.migration_config.timeouts.statement == 600.0
    assert cfg.migrations.script_path("billing") == "db/billing"
    assert MigrationsConfig().script_path("billing") == "migrations/billing"
    assert MigrationsConfig().version_table == "alembic_version"
    assert MigrationsConfig().managed is True


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # MariaDB: idle_transaction_timeout = 0 is "no timeout"
        ("mariadb+pymysql://u@h/db", {"statement": 0.0, "idle_in_transaction": 0.0}),
        ("mysql+pymysql://u@h/db", {"statement": 0.0}),  # MySQL has no idle timeout
        ("sqlite:///x.db", {"statement": 0.0}),  # no server session on SQLite
        ("oracle://u@h/db", {}),  # dbconf translates no timeout for it: nothing set
        ("postgresql+pg8000://u@h/db", {}),  # nor for this driver
    ],
)
def test_off_by_default_only_where_the_dialect_takes_it(
    url: str, expected: dict[str, float]
) -> None:
    timeouts = db(url=url).migration_config.timeouts.model_dump(exclude_none=True)
    assert timeouts == expected


def test_sqlite_busy_timeout_from_the_block_wins() -> None:
    cfg = db(
        url="sqlite:///x.db", timeouts={"connect": 5.0}, migrations={"timeouts": {"lock": 60.0}}
    )
    assert cfg.migration_config.timeouts.lock == 60.0
    assert cfg.migration_config.timeouts.connect is None
    assert engine_kwargs(cfg.migration_config)["connect_args"]["timeout"] == 60.0


def test_in_memory_sqlite_keeps_its_static_pool() -> None:
    kwargs = engine_kwargs(db(url="sqlite://").migration_config)
    assert kwargs["poolclass"] is StaticPool


def test_direct_url_replaces_the_location_and_keeps_a_separate_password() -> None:
    cfg = db(
        driver="postgresql+psycopg2",
        host="pgbouncer",
        port=6432,
        username="app",
        password=SECRET_PASSWORD,
        database="app",
        migrations={"url": "postgresql+psycopg2://app@db-primary:5432/app"},
    )
    url = cfg.migration_config.sqlalchemy_url
    assert (url.host, url.port, url.database, url.password) == (
        "db-primary",
        5432,
        "app",
        SECRET_PASSWORD,
    )
    assert cfg.migration_config.masked_url() == "postgresql+psycopg2://app:***@db-primary:5432/app"
    with_password = db(
        url=f"postgresql://app:{ENCODED}@pgbouncer:6432/app",
        migrations={"url": "postgresql://owner:other@db-primary/app"},
    )
    assert with_password.migration_config.sqlalchemy_url.password == "other"
    assert_no_secret([cfg, cfg.migrations, cfg.migration_config], SECRET_PASSWORD)


def test_migration_database_is_the_function_behind_the_property() -> None:
    cfg = db(url="postgresql://app@h/app", migrations={"managed": False})
    assert migration_database(cfg) == cfg.migration_config


@pytest.mark.parametrize(
    ("block", "path", "message"),
    [
        ("{version_table: 'alembic version'}", "migrations.version_table", "is not a table name"),
        ("{path: ''}", "migrations.path", "is empty"),
        ("{managed: maybe}", "migrations.managed", "boolean"),
        ("{timeout: {lock: 1s}}", "migrations.timeout", "did you mean 'timeouts'"),
        ("{timeouts: {lock: soon}}", "migrations.timeouts.lock", "expected a duration"),
        ("{url: 'not a url'}", "migrations.url", "is not a valid database URL"),
        # the merged connection is validated too: MariaDB takes whole seconds
        ("{timeouts: {lock: 500ms}}", "migrations.timeouts.lock", "whole seconds"),
    ],
)
def test_errors_name_the_origin_and_key_path(
    write_config: Callable[[str], Path], block: str, path: str, message: str
) -> None:
    config = write_config(
        f"""
        profiles:
          development:
            databases:
              primary:
                url: mariadb+pymysql://u@h/db
                migrations: {block}
        """
    )
    with pytest.raises(ConfigError) as info:
        load_profile("development", path=config, environ={})
    problems = info.value.problems
    assert [p.path for p in problems] == [f"profiles.development.databases.primary.{path}"], str(
        info.value
    )
    assert problems[0].origin.startswith(f"{config}:6:")
    assert message in problems[0].message


def test_env_sets_the_direct_url_and_show_masks_it(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        """
        profiles:
          development:
            databases:
              primary:
                url: postgresql://app@pgbouncer:6432/app
                migrations: {version_table: app_version}
        """
    )
    env = {
        "DBCONF_DATABASES__PRIMARY__MIGRATIONS__URL": f"postgresql://owner:{ENCODED}@db:5432/app"
    }
    loaded = load_profile("development", path=config, environ=env)
    primary = loaded.config.databases["primary"]
    assert primary.migration_config.sqlalchemy_url.password == SECRET_PASSWORD
    assert primary.migrations is not None
    assert primary.migrations.version_table == "app_version"
    assert str(loaded.origin("databases", "primary", "migrations", "url")).startswith("env ")
    code = main(["show", "-c", str(config), "--origin"], environ=env)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "databases.primary.migrations.url" in out
    assert "postgresql://owner:***@db:5432/app" in out
    assert_no_secret([out, err, primary, loaded.config], SECRET_PASSWORD)
