"""dbconf.config.replica_config: replicas and routing in the configuration — what a replica
inherits, what it may set, and every load error with its origin and fix."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dbconf.cli import main
from dbconf.config import DatabaseConfig
from dbconf.config.replica_config import ReplicaConfig, RoutingConfig
from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile

WriteConfig = Callable[..., Path]
NoSecret = Callable[[Iterable[object], str], None]
PASSWORD = "primary-pw-1"
REPLICA_PASSWORD = "replica-pw-2"


def db(**kwargs: Any) -> DatabaseConfig:
    return DatabaseConfig.model_validate(kwargs)


def url(cfg: DatabaseConfig) -> str:
    return cfg.sqlalchemy_url.render_as_string(hide_password=False)


def problems_of(path: Path, environ: dict[str, str] | None = None, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=path, environ=environ or {}, **kwargs)
    return [str(problem) for problem in info.value.problems]


# -- what a replica inherits -----------------------------------------------------------------


def test_replica_parts_merge_over_the_primary() -> None:
    cfg = db(
        url=f"postgresql+psycopg://app:{PASSWORD}@db:5432/app?sslmode=require",
        application_name="web",
        timeouts={"connect": "5s", "statement": "30s"},
        pool={"size": 5, "recycle": "30m"},
        replicas=[{"host": "replica-1", "pool": {"size": 10}, "timeouts": {"statement": "2m"}}],
    )
    (replica,) = cfg.replica_configs
    assert url(replica) == f"postgresql+psycopg://app:{PASSWORD}@replica-1:5432/app?sslmode=require"
    assert (replica.pool.size, replica.pool.recycle) == (10, 1800.0)  # key by key
    assert (replica.timeouts.connect, replica.timeouts.statement) == (5.0, 120.0)
    assert replica.application_name == "web"
    assert replica.replicas == []
    assert replica.routing is None


def test_replica_inherits_the_pre_ping_window_or_sets_its_own() -> None:
    cfg = db(
        url="postgresql+psycopg2://app@db:5432/app",
        pool={"pre_ping": "1s"},
        replicas=[{"host": "r1"}, {"host": "r2", "pool": {"pre_ping": True}}],
    )
    first, second = cfg.replica_configs
    assert (first.pool.pre_ping, second.pool.pre_ping) == (1.0, True)


def test_replica_url_replaces_the_location_and_inherits_driver_and_password() -> None:
    cfg = db(
        url=f"postgresql+psycopg://app:{PASSWORD}@db/app",
        query={"sslmode": "require"},
        replicas=[{"url": "postgresql://reader@replica-1:6432/app_ro"}],
    )
    replica = cfg.replica_configs[0]
    # the URL is the whole location (the primary's query: goes); no driver in it: the
    # primary's; no password in it: the primary's
    assert url(replica) == f"postgresql+psycopg://reader:{PASSWORD}@replica-1:6432/app_ro"
    assert replica.async_url is not None
    assert replica.async_url.drivername == "postgresql+psycopg_async"


def test_replica_password_wins_and_password_key_is_inherited() -> None:
    primary = {"driver": "postgresql", "host": "db", "username": "app", "password": PASSWORD}
    cfg = db(
        **primary,
        replicas=[
            {"url": f"postgresql://app:{REPLICA_PASSWORD}@r1/app"},
            {"url": "postgresql://app@r2/app", "password": REPLICA_PASSWORD},
            {"host": "r3"},
        ],
    )
    passwords = [r.sqlalchemy_url.password for r in cfg.replica_configs]
    assert passwords == [REPLICA_PASSWORD, REPLICA_PASSWORD, PASSWORD]
    assert REPLICA_PASSWORD not in repr(cfg)
    assert PASSWORD not in repr(cfg.replica_configs)
    assert PASSWORD not in cfg.replica_configs[2].masked_url()


def test_async_primary_url_gives_its_replicas_the_same_drivers() -> None:
    cfg = db(url="postgresql+asyncpg://app@db/app", replicas=[{"url": "postgresql://app@r/app"}])
    replica = cfg.replica_configs[0]
    assert replica.async_url is not None
    assert replica.async_url.drivername == "postgresql+asyncpg"
    assert (replica.names_driver(False), replica.names_driver(True)) == (False, True)


def test_sessions_and_target_session_attrs_are_not_inherited() -> None:
    cfg = db(
        url="postgresql://app@db/app",
        hosts=["db-1:5432", "db-2:5432"],
        target_session_attrs="read-write",
        sessions={"reporting": {"role": "replica"}},
        replicas=[{"host": "replica-1"}],
    )
    replica = cfg.replica_configs[0]
    assert list(replica.sessions) == ["default"]
    assert url(replica) == "postgresql+psycopg2://app@replica-1/app"  # host replaced hosts


def test_replica_connect_args_merge_key_by_key_and_hide_secrets() -> None:
    cfg = db(
        url="postgresql://app@db/app",
        connect_args={"keepalives": 1, "sslpassword": "s3cret-key"},
        replicas=[{"host": "r", "connect_args": {"keepalives_idle": 30}}],
    )
    replica = cfg.replica_configs[0]
    assert replica.connect_args is not None
    assert set(replica.connect_args) == {"keepalives", "sslpassword", "keepalives_idle"}
    assert "s3cret-key" not in repr(cfg.replicas) + repr(replica.connect_args)


def test_routing_defaults_and_positive_durations() -> None:
    assert RoutingConfig() == RoutingConfig(
        max_lag=5.0, check_interval=1.0, read_your_writes=True, fallback="primary"
    )
    assert db(url="postgresql://h/d", replicas=[{"host": "r"}]).routing_config.max_lag == 5.0
    for key in ("max_lag", "check_interval"):
        with pytest.raises(ValidationError, match="must be greater than 0"):
            RoutingConfig.model_validate({key: "0s"})


def test_replica_keys_are_what_a_replica_may_change() -> None:
    allowed = set(ReplicaConfig.model_fields)
    assert {"url", "host", "hosts", "target_session_attrs", "pool", "timeouts"} <= allowed
    assert {"leak_detection", "connect_args", "query", "application_name"} <= allowed
    assert not {"sessions", "replicas", "routing", "driver", "migrations"} & allowed


# -- load errors, each with its origin and fix --------------------------------------------------


def at(path: Path, needle: str, nth: int = 0) -> str:
    """``file:line:col`` of the ``nth`` occurrence of ``needle`` in the written file."""
    found = [
        f"{path}:{number}:{line.index(needle) + 1}"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if needle in line
    ]
    return found[nth]


MYSQL_URL = 'url: "mysql'
BAD_MODELS = """
    profiles:
      p:
        databases:
          primary:
            url: postgresql://app@db/app
            pool: {size: 5}
            replicas:
              - {url: "mysql://app@r0/app"}
              - {host: r1, pool: {class: static}}
          lite:
            url: sqlite:///x.db
            replicas: [{url: "sqlite:///y.db"}]
          other:
            url: postgresql://app@db/other
            routing: {}
            sessions:
              web: {role: auto}
              reporting: {role: replica}
    """


def test_every_replica_problem_at_once_with_origin_and_fix(write_config: WriteConfig) -> None:
    path = write_config(BAD_MODELS)
    pre = "profiles.p.databases"
    assert sorted(problems_of(path)) == sorted(
        [
            f"{at(path, MYSQL_URL)} {pre}.primary.replicas[0].url: replicas[0] is a mysql "
            "URL but its primary is postgresql: a replica is a copy of its primary, on the same "
            "kind of server; fix its url",
            # a key the replica inherits: at the primary's key, saying which replica
            f"{at(path, 'size')} {pre}.primary.pool.size: pool.size cannot be used with "
            "pool.class static: only the queue pool has a size, overflow, timeout or LIFO "
            "order; remove them or use class: queue (in replicas[1], which inherits pool.size)",
            f"{at(path, 'replicas', 1)} {pre}.lite.replicas: SQLite has no replicas (a SQLite "
            "database is one local file); remove replicas, or use a server database",
            f"{at(path, 'routing')} {pre}.other.routing: routing is set but the database has no "
            "replicas; add replicas: [{url: …}] or remove routing",
            f"{at(path, 'role: auto')} {pre}.other.sessions.web.role: role auto reads from "
            "replicas, but the database has none; add replicas: [{url: …}] or use role: "
            "primary (the default)",
            f"{at(path, 'role: replica')} {pre}.other.sessions.reporting.role: role replica "
            "reads from replicas, but the database has none; add replicas: [{url: …}] or use "
            "role: primary (the default)",
        ]
    )


def test_replica_and_routing_keys_are_checked_with_origin(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: postgresql://app@db/app
                replicas:
                  - {host: r2, sesions: {}}
                  - {host: r3, pool: {size: 0}}
                routing: {max_lag: 0s, fallbak: error}
        """
    )
    pre = "profiles.p.databases.primary"
    assert sorted(problems_of(path)) == sorted(
        [
            f"{at(path, 'sesions')} {pre}.replicas[0].sesions: unknown key 'sesions'; allowed "
            "here: url, host, hosts, port, username, password, password_file, password_command, "
            "credentials, credentials_ttl, database, query, target_session_attrs, "
            "application_name, connect_args, pool, timeouts, leak_detection",
            f"{at(path, 'size')} {pre}.replicas[1].pool.size: Input should be greater than or "
            "equal to 1 (got 0)",
            f"{at(path, 'max_lag')} {pre}.routing.max_lag: must be greater than 0 (e.g. "
            "max_lag: 5s, check_interval: 1s) (got '0s')",
            f"{at(path, 'fallbak')} {pre}.routing.fallbak: unknown key 'fallbak' (did you mean "
            "'fallback'?); allowed here: max_lag, check_interval, read_your_writes, fallback",
        ]
    )


def test_unknown_replica_key_suggests_the_close_one(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: postgresql://app@db/app
                replicas:
                  - host: r1
                    timeout: {connect: 1s}
        """
    )
    (problem,) = problems_of(path)
    assert problem.startswith(
        f"{at(path, 'timeout:')} profiles.p.databases.primary.replicas[0].timeout: "
    )
    assert "unknown key 'timeout' (did you mean 'timeouts'?)" in problem


def test_a_problem_in_what_the_replica_sets_points_at_the_replica(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: postgresql://app@db/app
                timeouts: {connect: 5s}
                replicas:
                  - {host: r0}
                  - {host: r1, connect_args: {connect_timout: 3}}
        """
    )
    (problem,) = problems_of(path)
    assert problem == (
        f"{at(path, 'connect_timout')} profiles.p.databases.primary.replicas[1].connect_args."
        "connect_timout: 'connect_timout' is not an argument of the psycopg2 driver (did you "
        "mean 'connect_timeout'?); remove it (it would fail at connect)"
    )
    # what only building would find (an unknown driver) is checked on replicas too
    path.write_text(path.read_text().replace("{host: r1, connect_args", "{url: 'x+y://r/a', c"))
    path.write_text(
        path.read_text().replace(
            "- {url: 'x+y://r/a', c", '- {url: "postgresql+nodriver://r2/app"} #'
        )
    )
    (problem,) = problems_of(path)
    assert problem.startswith(
        f"{at(path, 'url: ', 1)} profiles.p.databases.primary.replicas[1].url: unknown "
        "database driver 'postgresql+nodriver'"
    )


def test_replica_password_file_is_read_and_masked(
    write_config: WriteConfig, tmp_path: Path, assert_no_secret: NoSecret
) -> None:
    secret = tmp_path / "replica_pw"
    secret.write_text(REPLICA_PASSWORD + "\n")
    secret.chmod(0o600)
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              primary:
                url: "postgresql://app:{PASSWORD}@db/app"
                replicas:
                  - {{host: r1, password_file: {secret}}}
                  - {{url: "postgresql://app@r2/app", password_file: missing.txt}}
        """
    )
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0].startswith(
        f"{at(path, 'password_file: missing')} profiles.p.databases.primary.replicas[1]."
        "password_file: cannot read "
        "password file"
    )
    path.write_text(path.read_text().replace(", password_file: missing.txt", ""))
    loaded = load_profile("p", path=path, environ={})
    replica = loaded.config.databases["primary"].replica_configs[0]
    # read for each new connection (dbconf.runtime.credentials), not kept; the primary's url
    # password is not inherited beside it
    assert replica.password_file == str(secret)
    assert replica.sqlalchemy_url.password is None
    assert replica.sqlalchemy_url.host == "r1"
    assert_no_secret([loaded.config, problems], REPLICA_PASSWORD)


# -- dbconf show ---------------------------------------------------------------------------


def test_show_origin_lists_replicas_with_origins_masked(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str], assert_no_secret: NoSecret
) -> None:
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              primary:
                url: "postgresql://app:{PASSWORD}@db/app"
                replicas:
                  - url: "postgresql://app:{REPLICA_PASSWORD}@r0/app"
                  - {{host: r1, pool: {{size: 3}}}}
                routing: {{max_lag: 2s}}
        """
    )
    environ = {"DBCONF_DATABASES__PRIMARY__REPLICAS__1__PORT": "6432"}
    code = main(["show", "--origin", "--config", str(path), "-p", "p"], environ=environ)
    out = capsys.readouterr().out
    assert code == 0
    rows = {line.split(" = ")[0].strip(): line for line in out.splitlines() if " = " in line}
    first = "databases.primary.replicas[0]"
    assert rows[f"{first}.url"].endswith(f'"postgresql://app:***@r0/app"    # {at(path, "url", 1)}')
    assert '"postgresql+psycopg2://app:***@r0/app"' in rows[f"{first}.effective_url"]
    second = "databases.primary.replicas[1]"
    assert rows[f"{second}.port"].endswith(
        "= 6432    # env DBCONF_DATABASES__PRIMARY__REPLICAS__1__PORT"
    )
    assert rows[f"{second}.pool.size"].endswith(f"= 3    # {at(path, 'size')}")
    assert '"postgresql+psycopg2://app:***@r1:6432/app"' in rows[f"{second}.effective_url"]
    assert rows["databases.primary.routing.max_lag"].endswith(f"= 2.0    # {at(path, 'max_lag')}")
    assert_no_secret([out], PASSWORD)
    assert_no_secret([out], REPLICA_PASSWORD)
    code = main(["show", "--format", "json", "--config", str(path), "-p", "p"], environ=environ)
    out = capsys.readouterr().out
    assert code == 0
    assert '"effective_url": "postgresql+psycopg2://app:***@r1:6432/app"' in out
    assert_no_secret([out], PASSWORD)
    assert_no_secret([out], REPLICA_PASSWORD)


def test_mysql_and_mariadb_urls_are_one_family() -> None:
    cfg = db(url="mariadb+pymysql://app@db/app", replicas=[{"url": "mysql://app@r/app"}])
    assert url(cfg.replica_configs[0]) == "mariadb+pymysql://app@r/app"  # the primary's driver
    with pytest.raises(
        ValidationError, match="replicas\\[0\\] is a postgresql URL but its primary"
    ):
        db(url="mariadb://app@db/app", replicas=[{"url": "postgresql://app@r/app"}])


def test_a_replica_credential_replaces_every_credential_of_its_primary(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: "postgresql://app@db/app"
                password_command: [vault, read, primary]
                credentials_ttl: 60s
                replicas:
                  - {host: r1, password: own}
                  - {host: r2, credentials: "os:fspath"}
                  - {host: r3}
        """
    )
    loaded = load_profile("p", path=path, environ={})
    own, token, inherits = loaded.config.databases["primary"].replica_configs
    assert own.password is not None
    assert (own.password_command, own.credentials_ttl) == (None, None)
    assert own.sqlalchemy_url.password == "own"
    assert (token.credentials, token.password_command, token.credentials_ttl) == (
        "os:fspath",
        None,
        None,
    )
    assert (inherits.password_command, inherits.credentials_ttl) == (
        ["vault", "read", "primary"],
        60.0,
    )


def test_replicas_are_never_migrated(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                url: "postgresql://app@db/app"
                migrations: {path: migrations/primary, version_table: primary_version}
                replicas: [{host: r1}]
        """
    )
    primary = load_profile("p", path=path, environ={}).config.databases["primary"]
    assert primary.migrations is not None
    assert primary.replica_configs[0].migrations is None
