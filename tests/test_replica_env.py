"""Replicas from the environment: ``DBCONF_DATABASES__PRIMARY__REPLICAS__<N>__…`` (merging.py's
index rule), ``<NAME>_REPLICA_<N>_DATABASE_URL`` (dbconf.loading.replica_env), secrets files and
``overrides=`` — each value with the variable as its origin."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from dbconf.errors import ConfigError
from dbconf.loading.loader import LoadedProfile, load_profile

WriteConfig = Callable[..., Path]
NoSecret = Callable[[Iterable[object], str], None]
R = "DBCONF_DATABASES__PRIMARY__REPLICAS__"
PASSWORD = "env-replica-pw"

FILE = """
    profiles:
      p:
        databases:
          primary:
            url: postgresql://app:primary-pw@db/app
            replicas:
              - {host: r0, port: 6432}
              - {host: r1, pool: {size: 3}}
    """


def load(write_config: WriteConfig, environ: dict[str, str], **kwargs: Any) -> LoadedProfile:
    return load_profile("p", path=write_config(FILE), environ=environ, **kwargs)


def problems_of(write_config: WriteConfig, environ: dict[str, str], **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(write_config, environ, **kwargs)
    return [str(problem) for problem in info.value.problems]


def urls(loaded: LoadedProfile) -> list[str]:
    return [r.masked_url() for r in loaded.config.databases["primary"].replica_configs]


def test_an_env_var_changes_one_key_of_a_declared_replica(write_config: WriteConfig) -> None:
    loaded = load(write_config, {R + "1__POOL__SIZE": "7", R + "0__HOST": "r0-new"})
    primary = loaded.config.databases["primary"]
    assert urls(loaded) == [
        "postgresql+psycopg2://app:***@r0-new:6432/app",
        "postgresql+psycopg2://app:***@r1/app",
    ]
    assert primary.replica_configs[1].pool.size == 7
    assert str(loaded.origin("databases", "primary", "replicas", "1", "pool", "size")) == (
        f"env {R}1__POOL__SIZE"
    )
    assert str(loaded.origin("databases", "primary", "replicas", "1", "host")).endswith(":8:14")


def test_a_replica_url_from_env_replaces_that_replicas_location(write_config: WriteConfig) -> None:
    loaded = load(write_config, {R + "0__URL": f"postgresql://reader:{PASSWORD}@r9/app"})
    assert urls(loaded)[0] == "postgresql+psycopg2://reader:***@r9/app"  # host/port below: gone
    replica = loaded.config.databases["primary"].replica_configs[0]
    assert replica.sqlalchemy_url.password == PASSWORD
    assert str(loaded.origin("databases", "primary", "replicas", "0", "url")) == f"env {R}0__URL"


def test_the_next_index_adds_a_replica_a_larger_one_is_an_error(
    write_config: WriteConfig,
) -> None:
    loaded = load(write_config, {R + "2__HOST": "r2", R + "3__HOST": "r3"})
    assert urls(loaded)[2:] == [
        "postgresql+psycopg2://app:***@r2/app",
        "postgresql+psycopg2://app:***@r3/app",
    ]
    assert problems_of(write_config, {R + "5__HOST": "r5"}) == [
        f"env {R}5__HOST profiles.p.databases.primary.replicas[5]: there are 2 replicas below "
        "this setting, so replica 5 would leave a gap; add replica 2 first (an index may change "
        "a declared replica or add the next one)"
    ]


def test_what_is_not_an_index_or_removes_one_replica_is_an_error(
    write_config: WriteConfig,
) -> None:
    problems = problems_of(write_config, {R + "01__HOST": "x", R + "FIRST__HOST": "y", R + "1": ""})
    assert sorted(problems) == sorted(
        [
            f"env {R}01__HOST profiles.p.databases.primary.replicas[01]: '01' is not a replica "
            "index: number replicas from 0",
            f"env {R}FIRST__HOST profiles.p.databases.primary.replicas.first: 'first' is not a "
            "replica index: number replicas from 0",
            f"env {R}1 profiles.p.databases.primary.replicas[1]: one replica cannot be removed "
            "(the others would change index); set the whole replicas list instead",
        ]
    )


def test_a_whole_list_from_env_replaces_the_file_list(write_config: WriteConfig) -> None:
    loaded = load(write_config, {"DBCONF_DATABASES__PRIMARY__REPLICAS": "[{host: only}]"})
    assert urls(loaded) == ["postgresql+psycopg2://app:***@only/app"]
    loaded = load(write_config, {"DBCONF_DATABASES__PRIMARY__REPLICAS": ""})  # null: none
    assert urls(loaded) == []


def test_replicas_added_to_a_database_without_any(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "postgresql://app@db/app"}
        """
    )
    environ = {"PRIMARY_REPLICA_0_DATABASE_URL": "postgresql://app@r0/app", R + "1__HOST": "r1"}
    loaded = load_profile("p", path=path, environ=environ)
    assert urls(loaded) == ["postgresql+psycopg2://app@r0/app", "postgresql+psycopg2://app@r1/app"]
    assert str(loaded.origin("databases", "primary", "replicas", "0", "url")) == (
        "env PRIMARY_REPLICA_0_DATABASE_URL"
    )


def test_name_replica_n_database_url(write_config: WriteConfig, assert_no_secret: NoSecret) -> None:
    environ = {
        "PRIMARY_REPLICA_1_DATABASE_URL": f"postgresql://app:{PASSWORD}@r1-env/app",
        "PRIMARY_REPLICA_2_DATABASE_URL": "postgresql://app@r2-env/app",
        "ANALYTICS_REPLICA_0_DATABASE_URL": "postgresql://x@y/z",  # no such database: ignored
    }
    loaded = load(write_config, environ)
    assert urls(loaded) == [
        "postgresql+psycopg2://app:***@r0:6432/app",
        "postgresql+psycopg2://app:***@r1-env/app",
        "postgresql+psycopg2://app:***@r2-env/app",  # the primary's password, inherited
    ]
    assert_no_secret([loaded.config, urls(loaded)], PASSWORD)
    # DBCONF_ variables are above <NAME>_REPLICA_<N>_DATABASE_URL
    environ[R + "1__URL"] = "postgresql://app@r1-dbconf/app"
    assert urls(load(write_config, environ))[1] == "postgresql+psycopg2://app:***@r1-dbconf/app"
    problems = problems_of(write_config, {"PRIMARY_REPLICA_4_DATABASE_URL": "postgresql://r/a"})
    assert problems == [
        "env PRIMARY_REPLICA_4_DATABASE_URL profiles.p.databases.primary.replicas[4]: there are "
        "2 replicas below this setting, so replica 4 would leave a gap; add replica 2 first (an "
        "index may change a declared replica or add the next one)"
    ]


def test_a_database_named_like_a_replica_variable_takes_it(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "postgresql://app@db/app"}
              primary_replica_0: {url: "postgresql://app@other/app"}
        """
    )
    environ = {"PRIMARY_REPLICA_0_DATABASE_URL": "postgresql://app@from-env/app"}
    loaded = load_profile("p", path=path, environ=environ)
    assert loaded.config.databases["primary"].replicas == []
    other = loaded.config.databases["primary_replica_0"]
    assert other.masked_url() == "postgresql+psycopg2://app@from-env/app"


def test_routing_from_env(write_config: WriteConfig) -> None:
    environ = {"DBCONF_DATABASES__PRIMARY__ROUTING__MAX_LAG": "250ms"}
    loaded = load(write_config, environ)
    assert loaded.config.databases["primary"].routing_config.max_lag == 0.25
    environ = {"DBCONF_DATABASES__PRIMARY__ROUTING__MAX_LAGG": "2s", R + "0__POOL__SISE": "1"}
    assert sorted(problems_of(write_config, environ)) == [
        "env DBCONF_DATABASES__PRIMARY__REPLICAS__0__POOL__SISE profiles.p.databases.primary."
        "replicas[0].pool.sise: unknown key 'sise' (did you mean 'size'?); allowed here: class, "
        "size, max_overflow, timeout, recycle, pre_ping, use_lifo, reset_on_return",
        "env DBCONF_DATABASES__PRIMARY__ROUTING__MAX_LAGG profiles.p.databases.primary.routing."
        "max_lagg: unknown key 'max_lagg' (did you mean 'max_lag'?); allowed here: max_lag, "
        "check_interval, read_your_writes, fallback",
    ]


def test_secrets_file_and_overrides_set_replicas_by_index(
    write_config: WriteConfig, tmp_path: Path, assert_no_secret: NoSecret
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / (R + "1__PASSWORD")).write_text(PASSWORD + "\n")
    (secrets / (R + "1__PASSWORD")).chmod(0o600)
    environ = {"DBCONF_SECRETS_DIR": str(secrets)}
    loaded = load(write_config, environ, overrides={"databases.primary.replicas.2.host": "r2"})
    replicas = loaded.config.databases["primary"].replica_configs
    assert replicas[1].sqlalchemy_url.password == PASSWORD
    assert replicas[0].sqlalchemy_url.password == "primary-pw"
    assert replicas[2].masked_url() == "postgresql+psycopg2://app:***@r2/app"
    where = ("databases", "primary", "replicas")
    assert (
        str(loaded.origin(*where, "1", "password"))
        == f"secrets file {secrets / (R + '1__PASSWORD')}"
    )
    # the caller's line: load() above calls load_profile
    assert str(loaded.origin(*where, "2", "host")) == f"overrides= at {__file__}:34"
    assert_no_secret([loaded.config, urls(loaded)], PASSWORD)
