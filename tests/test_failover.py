"""dbconf.config.failover: ``hosts`` + ``target_session_attrs``, rendered for psycopg2, psycopg 3
and asyncpg, checked at load, and proven on the real primary (5432) and its standby (5433)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from dbconf.config import DatabaseConfig
from dbconf.runtime.builder import engine_kwargs
from dbconf.runtime.database import Database

PORT = "select inet_server_port()"


def db(**kwargs: Any) -> DatabaseConfig:
    return DatabaseConfig.model_validate(kwargs)


def issue_of(**kwargs: Any) -> str:
    with pytest.raises(ValidationError) as info:
        db(**kwargs)
    return str(info.value)


# -- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg", "asyncpg", "psycopg_async"])
def test_hosts_render_as_sqlalchemys_multi_host_url(driver: str) -> None:
    cfg = db(
        url=f"postgresql+{driver}://app:pw@ignored:1111/app?krbsrvname=pg&host=old",
        hosts=["a.internal:5433", "10.0.0.2", "b"],
        port=6432,  # the port of the hosts that name none
        target_session_attrs="read-write",
    )
    for url in (cfg.sqlalchemy_url, cfg.async_url):
        assert url is not None
        assert (url.host, url.port) == (None, None)
        assert url.query["host"] == ("a.internal:5433", "10.0.0.2:6432", "b:6432")
        assert url.query["target_session_attrs"] == "read-write"
        assert url.query["krbsrvname"] == "pg"
    # what each SQLAlchemy dialect passes to its driver (both sides of the database)
    for url in (cfg.sqlalchemy_url, cfg.async_url):
        assert url is not None
        dialect = url.get_dialect()()
        _, kwargs = dialect.create_connect_args(url)
        if url.get_driver_name() == "asyncpg":
            assert kwargs["host"] == ["a.internal", "10.0.0.2", "b"]
            assert kwargs["port"] == [5433, 6432, 6432]
        else:
            assert (kwargs["host"], kwargs["port"]) == ("a.internal,10.0.0.2,b", "5433,6432,6432")
        assert kwargs["target_session_attrs"] == "read-write"
    assert cfg.masked_url().endswith(
        "app:***@/app?host=a.internal:5433&host=10.0.0.2:6432&host=b:6432&krbsrvname=pg"
        "&target_session_attrs=read-write"
    )


def test_one_host_is_the_urls_host_and_the_default_port_fills_in() -> None:
    cfg = db(driver="postgresql+psycopg2", hosts=["only"], username="app", database="app")
    assert cfg.masked_url() == "postgresql+psycopg2://app@only:5432/app"
    attrs_only = db(url="postgresql://app@db/app", target_session_attrs="prefer-standby")
    assert attrs_only.masked_url() == (
        "postgresql+psycopg2://app@db/app?target_session_attrs=prefer-standby"
    )


def test_hosts_as_one_comma_separated_string() -> None:
    """An env var gives ``DBCONF_…__HOSTS=a:5432,b:5433``."""
    cfg = db(url="postgresql://app@/app", hosts="a:5432, b:5433")
    assert cfg.hosts == ["a:5432", "b:5433"]
    assert cfg.sqlalchemy_url.query["host"] == ("a:5432", "b:5433")


def test_engine_kwargs_keep_the_hosts_out_of_connect_args() -> None:
    cfg = db(url="postgresql://app@/app", hosts=["a", "b"], timeouts={"connect": "2s"})
    assert engine_kwargs(cfg)["connect_args"] == {"connect_timeout": 2}


# -- errors -------------------------------------------------------------------------------------


def test_hosts_and_host_in_one_place() -> None:
    message = issue_of(url="postgresql://app@db/app", host="x", hosts=["a", "b"])
    assert "hosts and host are both set; keep one" in message


@pytest.mark.parametrize(
    "entry", ["[::1]:5432", "::1", "a:0", "a:70000", "a:b", "", "a,b,", "user@a", "a b"]
)
def test_a_bad_hosts_entry(entry: str) -> None:
    message = issue_of(url="postgresql://app@db/app", hosts=["ok:5432", entry])
    assert "a hosts entry is host or host:port" in message
    assert "hosts.1" in message


@pytest.mark.parametrize("url", ["mysql+pymysql://u@h/d", "mariadb://u@h/d", "sqlite:///x.db"])
@pytest.mark.parametrize("key", ["hosts", "target_session_attrs"])
def test_not_postgresql(url: str, key: str) -> None:
    value: Any = ["a", "b"] if key == "hosts" else "read-write"
    message = issue_of(url=url, **{key: value})
    assert f"{key} is for PostgreSQL" in message


def test_a_driver_that_cannot_fail_over() -> None:
    message = issue_of(url="postgresql+pg8000://u@/d", hosts=["a", "b"])
    assert "the pg8000 driver cannot take hosts; use one that can" in message
    message = issue_of(
        url="postgresql://u@/d", async_driver="someasync", target_session_attrs="primary"
    )
    assert "someasync" in message


def test_target_session_attrs_given_twice_or_unknown() -> None:
    message = issue_of(
        url="postgresql://u@/d?target_session_attrs=any", target_session_attrs="primary"
    )
    assert "target_session_attrs is also given in the URL query or query:; keep one" in message
    message = issue_of(url="postgresql://u@/d", target_session_attrs="writable")
    assert "'any', 'read-write', 'read-only', 'primary', 'standby' or 'prefer-standby'" in message


# -- real servers: the primary on 5432, its streaming standby on 5433 -------------------------


def _hosts(pg_url: str, standby_url: str, primary_first: bool) -> list[str]:
    primary, standby = make_url(pg_url), make_url(standby_url)
    hosts = [f"{primary.host}:{primary.port or 5432}", f"{standby.host}:{standby.port or 5432}"]
    return hosts if primary_first else hosts[::-1]


def _database(pg_url: str, driver: str, hosts: list[str], attrs: str) -> Database:
    base = make_url(pg_url)
    cfg = db(
        url=base.set(drivername=f"postgresql+{driver}")
        ._replace(host=None, port=None)
        .render_as_string(hide_password=False),
        hosts=hosts,
        target_session_attrs=attrs,
        timeouts={"connect": "5s"},
    )
    return Database("failover", cfg)


def _ports(database: Database, use_async: bool) -> int:
    if not use_async:
        with database.session() as session:
            return int(session.execute(sa.text(PORT)).scalar_one())

    async def read() -> int:
        async with database.async_session() as session:
            return int((await session.execute(sa.text(PORT))).scalar_one())

    return asyncio.run(read())


SIDES = [
    ("psycopg2", False),
    ("psycopg", False),
    ("psycopg", True),  # psycopg_async, the twin
    ("asyncpg", True),
]


@pytest.mark.parametrize(("driver", "use_async"), SIDES)
@pytest.mark.parametrize("attrs", ["read-write", "primary"])
@pytest.mark.parametrize("primary_first", [False, True])
def test_failover_picks_the_writable_host_whatever_the_order(
    pg_url: str, standby_url: str, driver: str, use_async: bool, attrs: str, primary_first: bool
) -> None:
    hosts = _hosts(pg_url, standby_url, primary_first)
    database = _database(pg_url, driver, hosts, attrs)
    try:
        assert _ports(database, use_async) == (make_url(pg_url).port or 5432)
    finally:
        database.close()


@pytest.mark.parametrize(("driver", "use_async"), SIDES)
@pytest.mark.parametrize("primary_first", [False, True])
def test_prefer_standby_picks_the_standby(
    pg_url: str, standby_url: str, driver: str, use_async: bool, primary_first: bool
) -> None:
    hosts = _hosts(pg_url, standby_url, primary_first)
    database = _database(pg_url, driver, hosts, "prefer-standby")
    try:
        assert _ports(database, use_async) == (make_url(standby_url).port or 5432)
    finally:
        database.close()
