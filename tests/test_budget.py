"""Connection budget: pure computation, and `dbconf check` against the real PostgreSQL limit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dbconf.cli import main
from dbconf.cli.budget import (
    ServerLimit,
    compute_budget,
    evaluate,
    pool_budget,
    query_limit,
)
from dbconf.config import DatabaseConfig, ProfileConfig

PG = "postgresql+psycopg2://app@db1:5432/app"


def profile(workers: int = 1, **databases: dict[str, Any]) -> ProfileConfig:
    return ProfileConfig.model_validate({"workers": workers, "databases": databases})


def db(**kw: Any) -> DatabaseConfig:
    return DatabaseConfig.model_validate({"url": PG, **kw})


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        ({}, 15),  # SQLAlchemy's QueuePool defaults: 5 + 10
        ({"size": 3}, 13),
        ({"max_overflow": 0}, 5),
        ({"size": 20, "max_overflow": 5}, 25),
        ({"class": "queue", "size": 2, "max_overflow": 1}, 3),
        ({"class": "static"}, 1),
        ({"class": "null"}, None),
        ({"class": "singleton"}, None),
        ({"max_overflow": -1}, None),
    ],
)
def test_pool_budget(pool: dict[str, Any], expected: int | None) -> None:
    assert pool_budget("main", db(pool=pool)).connections == expected


def test_grouping_by_server_and_workers() -> None:
    config = profile(
        4,
        main={"url": PG, "pool": {"size": 10, "max_overflow": 0}},
        replica={"url": "postgresql+psycopg2://app@db1/app", "pool": {"size": 2}},  # default port
        other_host={"url": "postgresql+psycopg2://app@db2:5432/app"},
        maria={"url": "mariadb+pymysql://app@db1:3306/app"},
        mysql_same={"url": "mysql+pymysql://app@db1/app", "pool": {"class": "static"}},
        lite={"url": "sqlite:///app.db"},
    )
    budgets = {b.server: b for b in compute_budget(config)}
    assert set(budgets) == {
        "postgresql://db1:5432",
        "postgresql://db2:5432",
        "mysql://db1:3306",
    }
    db1 = budgets["postgresql://db1:5432"]
    assert [p.database for p in db1.pools] == ["main", "replica"]
    assert (db1.per_worker, db1.workers, db1.total) == (10 + 12, 4, 88)
    mysql = budgets["mysql://db1:3306"]  # mariadb and mysql URLs on one port: one server
    assert (mysql.per_worker, mysql.total) == (16, 64)


def test_evaluate_levels() -> None:
    limit = ServerLimit(100, 3)
    assert limit.available == 97
    ok = evaluate(compute_budget(profile(6, main={"url": PG}))[0], limit)  # 90 ≤ 97
    assert (ok.level, ok.messages, ok.failed) == ("ok", (), False)
    assert ok.render().endswith(": ok")

    warn = evaluate(compute_budget(profile(7, main={"url": PG}))[0], limit)  # 105 > 97
    assert warn.level == "warning"
    assert not warn.failed
    text = warn.render()
    assert "7 workers x (main 15) = 105 connections, server allows 97" in text
    assert "(max_connections 100 - 3 reserved)" in text
    assert "WARNING: 7 workers can open up to 105 connections" in text
    assert "lower pool.size/pool.max_overflow or workers" in text

    big = {"url": PG, "pool": {"size": 90, "max_overflow": 10}}
    error = evaluate(compute_budget(profile(1, main=big))[0], limit)
    assert error.level == "error"
    assert error.failed
    assert "ERROR: one worker's pools can open 100 connections" in error.render()


def test_unbounded_pool_is_a_warning_that_says_so() -> None:
    config = profile(2, main={"url": PG, "pool": {"size": 1, "max_overflow": 0}},
                     bouncer={"url": PG, "pool": {"class": "null"}})  # fmt: skip
    report = evaluate(compute_budget(config)[0], ServerLimit(100, 3))
    assert report.level == "warning"
    text = report.render()
    assert "bouncer unbounded" in text
    assert "= 2+ connections" in text
    assert "database 'bouncer' has no connection cap (null pool" in text
    # an error stays an error, and the unbounded finding keeps its own level
    config = profile(1, main={"url": PG, "pool": {"size": 200, "max_overflow": 0}},
                     bouncer={"url": PG, "pool": {"class": "null"}})  # fmt: skip
    report = evaluate(compute_budget(config)[0], ServerLimit(100, 3))
    assert report.level == "error"
    assert [level for level, _ in report.messages] == ["error", "warning"]


def test_sqlite_only_profile_has_no_budget() -> None:
    assert compute_budget(profile(8, main={"url": "sqlite:///x.db"})) == []


# --- against the real server ------------------------------------------------------------


def _pg_limit(pg_admin: sa.Engine) -> ServerLimit:
    with pg_admin.connect() as conn:
        limit = query_limit(conn)
        max_conn = int(conn.execute(sa.text("SHOW max_connections")).scalar_one())
        reserved = int(conn.execute(sa.text("SHOW superuser_reserved_connections")).scalar_one())
    assert limit.max_connections == max_conn
    assert limit.reserved >= reserved
    return limit


def _check(
    capsys: pytest.CaptureFixture[str], write_config: Callable[[str], Path], yaml: str
) -> tuple[int, str, str]:
    code = main(["check", "-p", "p", "-c", str(write_config(yaml))], environ={})
    out, err = capsys.readouterr()
    return code, out, err


def test_check_warns_when_workers_exceed_real_max_connections(
    pg_url: str,
    pg_admin: sa.Engine,
    write_config: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    available = _pg_limit(pg_admin).available
    workers = available // 3 + 1  # 3 connections per worker → just over the limit
    code, out, err = _check(
        capsys,
        write_config,
        f"""
        profiles:
          p:
            workers: {workers}
            databases:
              main: {{url: "{pg_url}", pool: {{size: 2, max_overflow: 1}}}}
        """,
    )
    assert code == 0, out + err  # a warning does not fail the check
    assert f"{workers} workers x (main 3) = {workers * 3} connections" in out
    assert f"server allows {available}" in out
    assert f"WARNING: {workers} workers can open up to {workers * 3} connections" in out
    assert ": warning" in out


def test_check_fails_when_one_worker_exceeds_real_max_connections(
    pg_url: str,
    pg_admin: sa.Engine,
    write_config: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    available = _pg_limit(pg_admin).available
    code, out, err = _check(
        capsys,
        write_config,
        f"""
        profiles:
          p:
            databases:
              main: {{url: "{pg_url}", pool: {{size: {available}, max_overflow: 1}}}}
        """,
    )
    assert code == 1, out + err
    assert f"ERROR: one worker's pools can open {available + 1} connections" in out
    assert "Traceback" not in out + err


def test_check_small_profile_has_no_warning(
    pg_url: str,
    maria_url: str,
    write_config: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _check(
        capsys,
        write_config,
        f"""
        profiles:
          p:
            workers: 2
            databases:
              main: {{url: "{pg_url}", pool: {{size: 2, max_overflow: 0}}}}
              maria: {{url: "{maria_url}", pool: {{size: 1, max_overflow: 1}}}}
        """,
    )
    assert code == 0, out + err
    assert "2 workers x (main 2) = 4 connections, server allows" in out
    assert "2 workers x (maria 2) = 4 connections, server allows" in out
    assert "(max_connections " in out
    assert "WARNING" not in out
    assert "ERROR" not in out
    assert out.count(": ok\n") == 2
