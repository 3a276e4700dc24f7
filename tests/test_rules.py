"""dbconf.runtime.rules: every problem of one database at once; install hints that name real
extras."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile
from dbconf.runtime.rules import KNOWN_DRIVERS, missing_driver_hint

WriteConfig = Callable[[str], Path]
PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"


def problems_of(path: Path) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=path, environ={})
    return [
        (p.origin, p.path.removeprefix("profiles.p.databases.db."), p.message)
        for p in info.value.problems
    ]


def test_every_rule_of_one_database_is_reported_with_its_own_origin(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              db:
                url: "sqlite://"
                pool: {size: 3}
                isolation_level: READ COMMITTED
                disconnect_sqlstates: ["57P01"]
                timeouts: {idle_in_transaction: 3s, connect: 1s, lock: 2s}
        """
    )
    found = problems_of(path)
    file = str(path)
    assert {p for _, p, _ in found} == {
        "pool.size",
        "isolation_level",
        "disconnect_sqlstates",
        "timeouts.idle_in_transaction",
        "timeouts.connect",
    }
    assert all(o.startswith(file + ":") for o, _, _ in found)  # each points at its own line
    assert len({o for o, _, _ in found}) == len(found)


def test_url_problems_and_rules_are_reported_together(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              db:
                url: "postgresql://h:70000/db?sslmod=require"
                sqlite: {foreign_keys: true}
                disconnect_sqlstates: ["57P01"]
        """
    )
    paths = [p for _, p, _ in problems_of(path)]
    assert sorted(paths) == ["sqlite", "url", "url"]


RULES: list[tuple[str, dict[str, Any]]] = [
    ("pool.size", {"pool": {"size": 2}}),
    ("timeouts.idle_in_transaction", {"timeouts": {"idle_in_transaction": 5}}),
    ("isolation_level", {"isolation_level": "REPEATABLE READ"}),
    ("disconnect_sqlstates", {"disconnect_sqlstates": ["57P01"]}),
    ("url", {"url": "sqlite://?bogus=1"}),
]


@given(chosen=st.sets(st.sampled_from(range(len(RULES))), min_size=1))
def test_any_set_of_broken_rules_is_reported_in_full(chosen: set[int]) -> None:
    from pydantic import ValidationError

    from dbconf.config import DatabaseConfig
    from dbconf.config.origin import validation_problems

    fields: dict[str, Any] = {"url": "sqlite://"}
    for i in chosen:
        fields |= RULES[i][1]
    with pytest.raises(ValidationError) as info:
        DatabaseConfig.model_validate(fields)
    found = validation_problems(info.value, DatabaseConfig, {}, (), "here")
    assert sorted(p.path for p in found) == sorted(RULES[i][0] for i in chosen)


# -- install hints name extras that exist ---------------------------------------------------


def test_every_extra_a_hint_can_name_exists_in_pyproject() -> None:
    section = PYPROJECT.read_text().split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = set(re.findall(r"^([\w-]+) = ", section, re.MULTILINE))
    assert {"postgresql", "mysql"} <= extras
    backends = {d.partition("+")[0] for d in KNOWN_DRIVERS} | {"oracle", "mssql", "postgres"}
    drivers = {d.partition("+")[2] for d in KNOWN_DRIVERS} | {"", "asyncpg", "cx_oracle", "pyodbc"}
    named = set()
    for backend, driver in itertools.product(backends, drivers):
        hint = missing_driver_hint(f"{backend}+{driver}", driver, driver)
        if "dbconf[" in hint:
            named.add(hint.split("dbconf[")[1].split("]")[0])
        else:
            assert "dbconf ships no extra for it" in hint
    assert named  # some hints do name an extra
    assert named <= extras, f"hints name extras pyproject.toml lacks: {named - extras}"


@pytest.mark.parametrize(
    ("drivername", "driver", "expected"),
    [
        ("postgresql+psycopg2", "psycopg2", "pip install 'dbconf[postgresql]'"),
        ("mariadb+pymysql", "pymysql", "pip install 'dbconf[mysql]'"),
        ("oracle+cx_oracle", "cx_oracle", "dbconf ships no extra for it: install the cx_oracle"),
        ("sqlite+pysqlcipher", "pysqlcipher", "install the pysqlcipher driver itself"),
        ("postgresql+asyncpg", "asyncpg", "pip install 'dbconf[asyncpg]'"),
        ("postgresql+psycopg_async", "psycopg_async", "pip install 'dbconf[psycopg]'"),
        ("sqlite+aiosqlite", "aiosqlite", "pip install 'dbconf[aiosqlite]'"),
        ("mariadb+aiomysql", "aiomysql", "pip install 'dbconf[aiomysql]'"),
    ],
)
def test_missing_driver_hint(drivername: str, driver: str, expected: str) -> None:
    assert expected in missing_driver_hint(drivername, driver, driver)


@given(
    driver=st.one_of(
        st.text(min_size=1, max_size=30).filter(lambda d: "Pw7x" not in d),
        st.sampled_from(["nope://u:Pw7x@127.0.0.1:1/db", "a.b", "a+b+c", "postgresql+", "+x"]),
    )
)
def test_any_driver_value_loads_or_is_a_config_error_without_echo(
    tmp_path_factory: pytest.TempPathFactory, driver: str
) -> None:
    path = tmp_path_factory.mktemp("driver") / "databases.yaml"
    path.write_text(
        "profiles:\n  p:\n    databases:\n      db:\n"
        f"        driver: {json.dumps(driver)}\n        host: h\n        password: Pw7x\n"
    )
    try:
        load_profile("p", path=path, environ={})
        text = ""
    except ConfigError as e:
        text = str(e)
    assert "Pw7x" not in text
    assert "://" not in driver or driver not in text


@pytest.mark.parametrize("scheme", ["a+b+c", "postgresql+psycopg2+x", "mysql+pymysql+x"])
def test_url_scheme_with_two_drivers_is_an_unknown_driver(
    write_config: WriteConfig, scheme: str
) -> None:
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              db: {{url: "{scheme}://u:Pw7x@h/db"}}
        """
    )
    [(_, key, message)] = problems_of(path)
    assert key == "url"
    assert message.startswith("unknown database driver")
    assert "Pw7x" not in message
