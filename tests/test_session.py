"""Session scopes: commit, rollback on any exception, always close — on real servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from dbconf.config import ProfileConfig
from dbconf.runtime.registry import Database, Registry
from dbconf.sessions.session import session_scope, transaction_scope


class Cancelled(BaseException):
    """Stands in for cancellation / KeyboardInterrupt: not an Exception."""


def insert_then_raise(
    scope: AbstractContextManager[Any], table: str, *ids: int, error: BaseException | None
) -> None:
    """Insert ``ids`` inside ``scope``, then raise ``error`` (if any) from inside it."""
    with scope as s:
        for n in ids:
            s.execute(sa.text(f"INSERT INTO {table} VALUES ({n})"))
        if error is not None:
            raise error


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg_table(pg_admin: sa.Engine) -> Iterator[str]:
    table = unique("t_scope")
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    yield table
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"DROP TABLE {table}")


def count(admin: sa.Engine, table: str) -> int:
    with admin.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    app = unique("dbconf_s")
    config = ProfileConfig.model_validate(
        {
            "databases": {
                "main": {
                    "url": pg_url,
                    "application_name": app,
                    "pool": {"size": 1, "max_overflow": 0, "timeout": 1},
                    "sessions": {"manual": {"autobegin": False}},
                }
            }
        }
    )
    with Registry(config) as dbs:
        yield dbs["main"]


def test_commit_on_success(pg_db: Database, pg_table: str, pg_admin: sa.Engine) -> None:
    with pg_db.session() as s:
        s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (1)"))
    assert count(pg_admin, pg_table) == 1
    assert pg_db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("error", [ValueError("boom"), Cancelled()])
def test_rollback_on_any_exception(
    pg_db: Database, pg_table: str, pg_admin: sa.Engine, error: BaseException
) -> None:
    with pytest.raises(type(error)):
        insert_then_raise(pg_db.session(), pg_table, 1, error=error)
    assert count(pg_admin, pg_table) == 0
    assert pg_db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_failed_commit_is_rolled_back_and_released(pg_db: Database, pg_table: str) -> None:
    with pg_db.session() as s:
        s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (1)"))
    with pytest.raises(sa.exc.IntegrityError):
        insert_then_raise(pg_db.session(), pg_table, 2, 1, error=None)
    with pg_db.session() as s:  # failure mode 4: the next scope works (pool size 1)
        ids = s.execute(sa.text(f"SELECT id FROM {pg_table}")).scalars().all()
    assert ids == [1]


def test_thousand_raising_scopes_leak_nothing(
    pg_db: Database, pg_table: str, pg_admin: sa.Engine
) -> None:
    for n in range(1000):
        with pytest.raises(ValueError, match="boom"):
            insert_then_raise(pg_db.session(), pg_table, n, error=ValueError("boom"))
    assert pg_db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    app = pg_db.config.application_name
    with pg_admin.connect() as conn:
        states = (
            conn.execute(
                sa.text("SELECT state FROM pg_stat_activity WHERE application_name = :app"),
                {"app": app},
            )
            .scalars()
            .all()
        )
    assert states == ["idle"]  # the one pooled connection, not "idle in transaction"
    assert count(pg_admin, pg_table) == 0


def test_transaction_scope_with_savepoints(
    pg_db: Database, pg_table: str, pg_admin: sa.Engine
) -> None:
    with pg_db.transaction() as s:
        s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (1)"))

        def inner_fails() -> None:
            with s.begin_nested():
                s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (2)"))
                raise ValueError("inner")

        with pytest.raises(ValueError, match="inner"):
            inner_fails()
        with s.begin_nested():
            s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (3)"))
    assert count(pg_admin, pg_table) == 2
    with pytest.raises(Cancelled):
        insert_then_raise(pg_db.transaction(), pg_table, 4, error=Cancelled())
    assert count(pg_admin, pg_table) == 2
    assert pg_db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_autobegin_false_flavour_in_both_scopes(
    pg_db: Database, pg_table: str, pg_admin: sa.Engine
) -> None:
    with pg_db.session("manual") as s:
        pass  # nothing begun: nothing to commit, no error
    with pg_db.session("manual") as s:
        with pytest.raises(sa.exc.InvalidRequestError, match=r"[Aa]utobegin"):
            s.execute(sa.text("SELECT 1"))
        s.begin()
        s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (1)"))
    with pg_db.transaction("manual") as s:
        s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (2)"))
    assert count(pg_admin, pg_table) == 2


def test_scopes_on_a_plain_sessionmaker_with_sqlite(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/s.db")
    factory = sessionmaker(bind=engine)
    with session_scope(factory) as s:
        s.execute(sa.text("CREATE TABLE t (x int)"))
        s.execute(sa.text("INSERT INTO t VALUES (1)"))
    with pytest.raises(KeyError):
        insert_then_raise(session_scope(factory), "t", 2, error=KeyError("x"))
    with transaction_scope(factory) as s:
        assert s.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 1
        assert s.in_transaction()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    engine.dispose()
