"""``pooler:`` in the configuration: its forms, and what is rejected at load behind PgBouncer
(each problem naming file:line and key path), and the per-driver arguments it brings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dbconf.cli.budget import compute_budget
from dbconf.config import DatabaseConfig, ProfileConfig
from dbconf.dialects.pgbouncer import local_settings_sql
from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile
from dbconf.runtime.builder import engine_kwargs

WriteConfig = Callable[..., Path]
PG = "postgresql://app@pgbouncer.internal:6432/app"
PSYCOPG = PG.replace("postgresql:", "postgresql+psycopg:")
ASYNCPG = PG.replace("postgresql:", "postgresql+asyncpg:")
SECRET = "hunter2-pooler"


def db(**data: Any) -> DatabaseConfig:
    return DatabaseConfig.model_validate({"url": PG, **data})


def problems(write_config: WriteConfig, body: str, url: str = PG) -> list[str]:
    path = write_config(
        "profiles:\n  p:\n    databases:\n      main:\n        url: " + url + "\n" + body
    )
    with pytest.raises(ConfigError) as err:
        load_profile("p", path=path, environ={})
    return [str(p) for p in err.value.problems]


def test_shorthand_and_block_forms() -> None:
    short = db(pooler="pgbouncer_transaction")
    assert short.pooler is not None
    assert (short.pooler.mode, short.pooler.direct_url) == ("pgbouncer_transaction", None)
    block = db(
        pooler={"mode": "pgbouncer_session", "direct_url": f"postgresql://app:{SECRET}@db/app"}
    )
    assert block.pooler is not None
    assert block.pooler.direct_url is not None
    assert block.pooler.mode == "pgbouncer_session"
    assert SECRET not in repr(block)
    assert SECRET not in block.model_dump_json()


def test_unknown_mode_and_bad_direct_url_are_refused(write_config: WriteConfig) -> None:
    found = problems(write_config, "        pooler: pgbouncer_statement\n")
    assert len(found) == 1
    assert "databases.yaml:6" in found[0]
    assert "pooler.mode" in found[0]
    found = problems(
        write_config,
        "        pooler:\n          mode: pgbouncer_session\n"
        "          direct_url: mysql://root@h/db\n",
    )
    assert "databases.yaml:8" in found[0]
    assert "direct_url must be a PostgreSQL URL" in found[0]


def test_not_postgresql_is_refused(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              main:
                url: mariadb+pymysql://root@127.0.0.1/test
                pooler: pgbouncer_transaction
        """
    )
    with pytest.raises(ConfigError) as err:
        load_profile("p", path=path, environ={})
    (problem,) = err.value.problems
    assert problem.path.endswith("main.pooler")
    assert "databases.yaml:6" in str(problem)
    assert "for PostgreSQL databases" in problem.message
    assert "not mariadb" in problem.message


@pytest.mark.parametrize(
    ("body", "line", "at", "says", "url"),
    [
        (
            "        timeouts: {idle_in_transaction: 30s}\n",
            7,
            "timeouts.idle_in_transaction",
            "idle_transaction_timeout in pgbouncer.ini",
            PG,
        ),
        ("        isolation_level: AUTOCOMMIT\n", 7, "isolation_level", "pooler.direct_url", PG),
        (
            "        sessions:\n          events:\n            autocommit: true\n",
            9,
            "sessions.events.autocommit",
            "would land on another client's connection",
            PG,
        ),
        (
            "        connect_args: {prepare_threshold: 5}\n",
            7,
            "connect_args.prepare_threshold",
            "psycopg 3 prepares",
            PSYCOPG,
        ),
        (
            "        connect_args: {statement_cache_size: 100}\n",
            7,
            "connect_args.statement_cache_size",
            "asyncpg prepares",
            ASYNCPG,
        ),
    ],
)
def test_transaction_mode_rejects_at_load(
    write_config: WriteConfig, body: str, line: int, at: str, says: str, url: str
) -> None:
    found = problems(write_config, "        pooler: pgbouncer_transaction\n" + body, url)
    assert len(found) == 1, found
    assert f"databases.yaml:{line}" in found[0]
    assert f"main.{at}" in found[0]
    assert says in found[0]


def test_session_mode_allows_what_transaction_mode_rejects() -> None:
    cfg = db(
        url=PSYCOPG,
        pooler="pgbouncer_session",
        timeouts={"idle_in_transaction": "30s"},
        sessions={"events": {"autocommit": True}},
        connect_args={"prepare_threshold": 5},
    )
    assert cfg.pooler is not None


@pytest.mark.parametrize("mode", ["pgbouncer_transaction", "pgbouncer_session"])
def test_startup_parameters_pgbouncer_refuses_are_rejected(
    write_config: WriteConfig, mode: str
) -> None:
    found = problems(
        write_config,
        f"        pooler: {mode}\n        connect_args:\n          options: -c search_path=app\n",
    )
    assert len(found) == 1, found
    assert "main.connect_args.options" in found[0]
    assert "startup parameter options" in found[0]
    found = problems(
        write_config,
        f"        pooler: {mode}\n"
        "        connect_args:\n          server_settings: {jit: 'off', application_name: x}\n",
        ASYNCPG,
    )
    assert len(found) == 1, found
    assert "main.connect_args.server_settings" in found[0]
    assert "startup parameter(s) jit:" in found[0]
    found = problems(
        write_config, f"        pooler: {mode}\n        query: {{options: -cstatement_timeout=5}}\n"
    )
    assert "main.query.options" in found[0]


def test_driver_arguments_behind_pgbouncer() -> None:
    timeouts = {"connect": 3, "statement": "2s", "lock": "500ms"}
    cfg = db(pooler="pgbouncer_transaction", timeouts=timeouts, application_name="api")
    # psycopg2: no options (PgBouncer refuses them); application_name stays a startup parameter
    assert engine_kwargs(cfg)["connect_args"] == {"connect_timeout": 3, "application_name": "api"}
    assert engine_kwargs(cfg, use_async=True)["connect_args"] == {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "timeout": 3,
        "server_settings": {"application_name": "api"},
    }
    psycopg = db(url=PSYCOPG, pooler="pgbouncer_transaction")
    assert engine_kwargs(psycopg)["connect_args"] == {"prepare_threshold": None}
    assert engine_kwargs(psycopg, use_async=True)["connect_args"] == {"prepare_threshold": None}
    assert local_settings_sql(cfg) == (
        "SELECT set_config('statement_timeout', '2000', true), "
        "set_config('lock_timeout', '500', true)"
    )
    # session mode: prepared statements stay on (one server connection per client connection)
    session = db(pooler="pgbouncer_session", timeouts={"idle_in_transaction": "1m"})
    assert "connect_args" not in engine_kwargs(session, use_async=True)
    assert local_settings_sql(session) == (
        "SELECT set_config('idle_in_transaction_session_timeout', '60000', true)"
    )
    # without a pooler: startup options as before
    plain = db(timeouts=timeouts)
    assert "statement_timeout=2000" in engine_kwargs(plain)["connect_args"]["options"]


def test_migrations_connect_to_direct_url_unless_migrations_url() -> None:
    direct = "postgresql://app@db-primary:5432/app"
    cfg = db(pooler={"mode": "pgbouncer_transaction", "direct_url": direct})
    migration = cfg.migration_config
    assert migration.sqlalchemy_url.render_as_string() == direct.replace(
        "postgresql:", "postgresql+psycopg2:"
    )
    assert migration.pooler is None  # on PostgreSQL itself: startup options work again
    assert migration.pool.class_ == "null"
    own = "postgresql://app@db-migrator:5432/app"
    cfg = db(
        pooler={"mode": "pgbouncer_transaction", "direct_url": direct},
        migrations={"url": own},
    )
    assert cfg.migration_config.sqlalchemy_url.host == "db-migrator"
    # no direct URL: the migrations go through PgBouncer, with its rules (timeouts per
    # transaction; the migration's idle_in_transaction is 0, allowed)
    through = db(pooler="pgbouncer_transaction").migration_config
    assert through.pooler is not None
    assert through.sqlalchemy_url.port == 6432


def test_pooled_databases_are_left_out_of_the_connection_budget() -> None:
    direct = "postgresql://app@db:5432/app"
    profile = ProfileConfig.model_validate(
        {
            "workers": 100,
            "databases": {
                "pooled": {"url": PG, "pooler": "pgbouncer_transaction"},
                "direct": {"url": direct},
            },
        }
    )
    (budget,) = compute_budget(profile)
    assert [p.database for p in budget.pools] == ["direct"]
