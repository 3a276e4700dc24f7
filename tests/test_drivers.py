"""Async translation per driver (what reaches create_async_engine), its conflicts, which side of
a database is checked at load and which when built, and missing/unknown drivers as
ConfigErrors naming a real extra (dbconf.runtime.drivers)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dbconf.config import DatabaseConfig
from dbconf.dialects import DIALECTS
from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile
from dbconf.runtime.builder import build_async_engine, build_engine, engine_kwargs
from dbconf.runtime.drivers import SUPPORTED, driver_problem, require_driver
from dbconf.runtime.rules import build_problems

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
TIMEOUTS = {"connect": "2.5s", "statement": "1.5s", "lock": "2s", "idle_in_transaction": "1m"}


def db(**data: Any) -> DatabaseConfig:
    return DatabaseConfig.model_validate(data)


def problems(**data: Any) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in build_problems({"main": db(**data)}, {}, "p")]


def extras() -> dict[str, str]:
    """pyproject's extras: name → its requirement list as written (one line each)."""
    section = PYPROJECT.read_text().split("[project.optional-dependencies]")[1].split("\n[")[0]
    return dict(re.findall(r"^([\w-]+) = (.*)$", section, re.MULTILINE))


# --- translation per async driver --------------------------------------------------------------


def test_asyncpg_gets_timeout_and_server_settings() -> None:
    cfg = db(url="postgresql://u@h/d", application_name="app", timeouts=TIMEOUTS)
    assert engine_kwargs(cfg, use_async=True)["connect_args"] == {
        "timeout": 2.5,
        "server_settings": {
            "statement_timeout": "1500",
            "lock_timeout": "2000",
            "idle_in_transaction_session_timeout": "60000",
            "application_name": "app",
        },
    }
    # connect: 0 is "no connect timeout" (asyncpg: None), as on libpq
    assert engine_kwargs(db(url="postgresql://h/d", timeouts={"connect": 0}), use_async=True)[
        "connect_args"
    ] == {"timeout": None}


def test_psycopg_async_gets_exactly_the_libpq_translation() -> None:
    sync = db(url="postgresql+psycopg://u@h/d", application_name="app", timeouts=TIMEOUTS)
    both = db(url="postgresql+psycopg_async://u@h/d", application_name="app", timeouts=TIMEOUTS)
    expected = {
        "connect_timeout": 3,
        "application_name": "app",
        "options": "-c statement_timeout=1500 -c lock_timeout=2000 "
        "-c idle_in_transaction_session_timeout=60000",
    }
    assert engine_kwargs(sync)["connect_args"] == expected
    assert engine_kwargs(both, use_async=True)["connect_args"] == expected
    assert both.sqlalchemy_url.drivername == "postgresql+psycopg"  # its twin, not psycopg2


def test_aiomysql_and_aiosqlite_get_the_sync_translation(tmp_path: Path) -> None:
    maria = db(url="mariadb://u@h/d", application_name="app", timeouts={"connect": 0})
    assert maria.async_url is not None
    assert maria.async_url.drivername == "mariadb+aiomysql"
    assert engine_kwargs(maria, use_async=True)["connect_args"] == {
        "connect_timeout": None,
        "program_name": "app",
    }
    lite = db(url=f"sqlite:///{tmp_path}/x.db", timeouts={"lock": "1.5s"})
    assert engine_kwargs(lite, use_async=True)["connect_args"] == {
        "check_same_thread": False,
        "timeout": 1.5,
    }


@pytest.mark.parametrize(
    ("connect_args", "key", "arg"),
    [
        (
            {"server_settings": {"statement_timeout": "9"}},
            "timeouts.statement",
            "statement_timeout",
        ),
        ({"server_settings": {"application_name": "x"}}, "application_name", "application_name"),
        ({"command_timeout": 5}, "timeouts.statement", "command_timeout"),
        ({"timeout": 5}, "timeouts.connect", "timeout"),
    ],
)
def test_asyncpg_setting_given_twice_is_a_config_error(
    connect_args: dict[str, Any], key: str, arg: str
) -> None:
    cfg = db(
        url="postgresql+asyncpg://h/d",
        application_name="app",
        timeouts=TIMEOUTS,
        connect_args=connect_args,
    )
    with pytest.raises(ConfigError) as err:
        engine_kwargs(cfg, use_async=True)
    assert [p.path for p in err.value.problems] == [key]
    assert arg in str(err.value)
    # and it fails the load, the async driver being named in the URL
    assert [path for path, _ in problems(**cfg.model_dump(by_alias=True, exclude_unset=True))]


def test_asyncpg_user_server_settings_are_merged() -> None:
    cfg = db(
        url="postgresql+asyncpg://h/d",
        connect_args={"server_settings": {"search_path": "app"}},
        timeouts={"lock": "1s"},
    )
    args = engine_kwargs(cfg, use_async=True)["connect_args"]
    assert args["server_settings"] == {"search_path": "app", "lock_timeout": "1000"}


def test_async_driver_of_a_backend_without_a_dialect_is_taken_as_written() -> None:
    other = db(url="mssql+pyodbc://h/d", async_driver="aioodbc")
    assert other.async_url is not None
    assert other.async_url.drivername == "mssql+aioodbc"


# --- the named side is checked at load, the implied one when built -------------------------


def test_query_the_implied_async_driver_rejects_fails_only_when_built() -> None:
    data = {"url": "postgresql://u@h/d?sslmode=require"}
    assert problems(**data) == []  # a sync app never needs asyncpg to take sslmode
    with pytest.raises(ConfigError, match=r"'sslmode' is not taken by the asyncpg driver"):
        engine_kwargs(db(**data), use_async=True)
    with pytest.raises(Exception, match=r"asyncpg driver .* both the sync \(psycopg2\)"):
        db(**data, async_driver="asyncpg")  # named: the model rejects it at load
    assert problems(**data, async_driver="psycopg_async") == []  # libpq takes it


def test_async_url_connect_args_are_the_async_drivers() -> None:
    data = {"url": "postgresql+asyncpg://h/d", "connect_args": {"command_timeout": 5}}
    assert problems(**data) == []
    cfg = db(**data)
    with pytest.raises(ConfigError, match="'command_timeout' is not an argument of the psycopg2"):
        engine_kwargs(cfg)  # the implied sync side cannot take it
    with pytest.raises(Exception, match="is not an argument of the psycopg2"):
        db(url="postgresql://h/d", async_driver="asyncpg", connect_args={"command_timeout": 5})


def test_psycopg3_connect_args_are_checked() -> None:
    assert db(url="postgresql+psycopg://h/d", connect_args={"prepare_threshold": None})
    with pytest.raises(Exception, match="did you mean 'prepare_threshold'"):
        db(url="postgresql+psycopg://h/d", connect_args={"prepared_threshold": 5})


def test_missing_async_driver_fails_load_only_when_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # not installed
    assert problems(url="postgresql://h/d") == []
    [(path, message)] = problems(url="postgresql+asyncpg://h/d")
    assert path == "profiles.p.databases.main.url"
    assert "pip install 'dbconf[asyncpg]'" in message
    [(path, message)] = problems(url="postgresql://h/d", async_driver="asyncpg")
    assert path == "profiles.p.databases.main.async_driver"
    cfg = db(url="postgresql://h/d")
    with pytest.raises(ConfigError, match=re.escape("pip install 'dbconf[asyncpg]'")):
        build_async_engine("main", cfg)
    build_engine("main", cfg).dispose()  # the sync side does not need it


def test_missing_sync_driver_of_an_async_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    cfg = db(url="postgresql+asyncpg://h/d")
    assert problems(url="postgresql+asyncpg://h/d") == []
    with pytest.raises(ConfigError, match=re.escape("pip install 'dbconf[postgresql]'")):
        build_engine("main", cfg)


def test_missing_greenlet_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "greenlet", None)
    cfg = db(url="sqlite://")
    with pytest.raises(ConfigError, match=re.escape("greenlet")) as err:
        require_driver(cfg, use_async=True)
    assert "pip install 'dbconf[aiosqlite]'" in str(err.value)
    require_driver(cfg, use_async=False)  # sync needs no greenlet


SYNC_WITHOUT_GREENLET = """
import sys
sys.modules["greenlet"] = None  # as after `pip install dbconf` (no async extra)
import sqlalchemy as sa
import dbconf
from dbconf.integrations import fastapi
with dbconf.load("p", path=sys.argv[1], environ={}) as dbs:
    with dbs["main"].session() as s:
        assert s.execute(sa.text("SELECT 1")).scalar_one() == 1
print("sqlalchemy.ext.asyncio" in sys.modules)
"""


def test_sync_use_imports_nothing_async(tmp_path: Path) -> None:
    """README command 1 installs no greenlet: importing dbconf (and its FastAPI helpers) and a
    sync scope must not import sqlalchemy.ext.asyncio, which raises ImportError without it."""
    config = tmp_path / "databases.yaml"
    config.write_text("profiles:\n  p:\n    databases:\n      main: {url: 'sqlite://'}\n")
    out = subprocess.run(
        [sys.executable, "-c", SYNC_WITHOUT_GREENLET, str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_unknown_driver_did_you_mean_and_supported_list() -> None:
    [(_, message)] = problems(url="postgresql+asyncpgg://h/d")
    assert "did you mean 'postgresql+asyncpg'" in message
    assert message.endswith(f"dbconf supports {SUPPORTED}")
    for dialect in DIALECTS:
        for driver in (*dialect.drivers, *dialect.async_drivers):
            assert f"{dialect.backends[0]}+{driver}" in SUPPORTED


def test_a_sync_driver_is_not_an_async_one() -> None:
    with pytest.raises(Exception, match="not an async driver of postgresql"):
        db(url="postgresql://h/d", async_driver="psycopg2")
    found = driver_problem(sa.make_url("postgresql+psycopg2://h/d"), use_async=True)
    assert found is not None
    assert "is not an async driver" in found


def test_every_extra_in_the_dialect_tables_exists_in_pyproject() -> None:
    declared = extras()
    for dialect in DIALECTS:
        for driver, extra in {**dialect.drivers, **dialect.async_drivers}.items():
            if extra is None:
                continue
            assert extra in declared, f"{dialect.name} {driver}: no extra {extra!r}"
            if driver in dialect.async_drivers:
                assert "SQLAlchemy[asyncio]" in declared[extra], f"{extra} lacks greenlet"


def test_a_named_async_driver_not_installed_fails_load_with_its_origin(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "aiomysql", None)
    config = write_config(
        textwrap.dedent(
            """\
            profiles:
              p:
                databases:
                  sync_only: {url: "mariadb://u@h/d"}
                  both:
                    url: "mariadb://u@h/d"
                    async_driver: aiomysql
            """
        )
    )
    with pytest.raises(ConfigError) as err:
        load_profile("p", path=config, environ={})
    [problem] = err.value.problems
    assert problem.path == "profiles.p.databases.both.async_driver"
    assert problem.origin.startswith(f"{config}:7:")
    assert "pip install 'dbconf[aiomysql]'" in problem.message


def test_sqlite_memory_sync_and_async_are_two_databases() -> None:
    """As documented in dbconf.dialects.sqlite: each engine holds its own connection."""
    cfg = db(url="sqlite://")
    engine = build_engine("lite", cfg)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE drivers_t (x int)")

        async def main() -> list[str]:
            aengine = build_async_engine("lite", cfg)
            try:
                async with aengine.connect() as conn:
                    result = await conn.exec_driver_sql(
                        "SELECT name FROM sqlite_master WHERE type = 'table'"
                    )
                    return list(result.scalars())
            finally:
                await aengine.dispose()

        assert asyncio.run(main()) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "sync", "async_"),
    [
        ("postgresql+psycopg://h/d", "postgresql+psycopg", "postgresql+psycopg_async"),
        ("postgresql+psycopg_async://h/d", "postgresql+psycopg", "postgresql+psycopg_async"),
        ("postgresql+asyncpg://h/d", "postgresql+psycopg2", "postgresql+asyncpg"),
        ("postgresql://h/d", "postgresql+psycopg2", "postgresql+asyncpg"),
        ("mariadb+aiomysql://h/d", "mariadb+pymysql", "mariadb+aiomysql"),
        ("sqlite+aiosqlite:///x.db", "sqlite", "sqlite+aiosqlite"),
    ],
)
def test_the_other_side_is_the_twin_driver_else_the_default(
    url: str, sync: str, async_: str
) -> None:
    """One package serves both sides where it can: psycopg 3's sync and async drivers pair up,
    so `dbconf[psycopg]` alone is enough for `postgresql+psycopg://` used sync and async."""
    cfg = db(url=url)
    assert cfg.sqlalchemy_url.drivername == sync
    assert cfg.async_url is not None
    assert cfg.async_url.drivername == async_


def test_async_driver_beats_the_twin() -> None:
    cfg = db(url="postgresql+psycopg://h/d", async_driver="asyncpg")
    assert cfg.async_url is not None
    assert cfg.async_url.drivername == "postgresql+asyncpg"
