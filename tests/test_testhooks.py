"""dbconf.runtime.testhooks: the load hook and the binder the pytest plugin sets (on SQLite
files)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import dbconf
from dbconf.runtime import testhooks


@pytest.fixture
def restore_hooks() -> Iterator[None]:
    previous = testhooks.get()
    yield
    testhooks.set_hooks(*previous)


@pytest.fixture
def registry(
    write_config: Callable[[str], Path], tmp_path: Path, restore_hooks: None
) -> Iterator[dbconf.Registry]:
    path = write_config(
        f"""
        profiles:
          test:
            databases:
              primary:
                url: sqlite:///{tmp_path}/app.db
                sessions:
                  reporting: {{autocommit: true}}
        """
    )
    with dbconf.load("test", path=path) as dbs:
        with dbs.default.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE hook_t (x INTEGER)")
        yield dbs


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM hook_t").scalar_one())


def test_a_binding_joins_every_session_and_its_end_restores_the_cached_maker(
    registry: dbconf.Registry,
) -> None:
    db = registry.default
    cached = db.sessionmaker()
    conn = db.engine.connect()
    outer = conn.begin()
    testhooks.set_hooks(None, lambda name, config: testhooks.Binding(conn))
    try:
        with db.session() as s:  # commits: releases a savepoint of the outer transaction
            assert s.get_bind() is conn
            s.execute(sa.text("INSERT INTO hook_t VALUES (1)"))
        with db.session("reporting") as s:  # an autocommit flavour joins too
            s.execute(sa.text("INSERT INTO hook_t VALUES (2)"))
        assert db.run_in_transaction(lambda s: s.execute(sa.text("SELECT 7")).scalar()) == 7
        maker = db.sessionmaker()
        assert maker is not cached
        assert maker.kw["join_transaction_mode"] == "create_savepoint"
        assert conn.exec_driver_sql("SELECT count(*) FROM hook_t").scalar() == 2
    finally:
        testhooks.set_hooks(None, None)
        outer.rollback()
        conn.close()
    assert db.sessionmaker() is cached
    assert _count(db.engine) == 0  # everything was rolled back


def test_the_binder_may_refuse_a_session(registry: dbconf.Registry) -> None:
    def refuse(name: str, config: dbconf.DatabaseConfig) -> testhooks.Binding | None:
        raise RuntimeError(f"no session on {name} here")

    testhooks.set_hooks(None, refuse)
    with pytest.raises(RuntimeError, match="no session on primary here"):
        registry.default.session().__enter__()


def test_the_load_hook_adds_overrides_to_the_profile(
    write_config: Callable[[str], Path], tmp_path: Path, restore_hooks: None
) -> None:
    path = write_config(
        f"""
        profiles:
          test:
            databases:
              primary: {{url: "sqlite:///{tmp_path}/real.db", pool: {{size: 2}}}}
          other:
            databases:
              primary: {{url: "sqlite:///{tmp_path}/other.db"}}
        """
    )
    seen: list[tuple[str, Path]] = []

    def hook(profile: str, where: Path) -> dict[str, str] | None:
        seen.append((profile, where))
        if profile != "test":
            return None
        return {"databases.primary.database": str(tmp_path / "redirected.db")}

    previous = testhooks.set_hooks(hook, None)
    assert previous == (None, None, None)
    dbs = dbconf.load("test", path=path, overrides={"databases.primary.pool.size": 3})
    assert dbs.default.config.sqlalchemy_url.database == str(tmp_path / "redirected.db")
    assert dbs.default.config.pool.size == 3  # the caller's overrides still apply
    other = dbconf.load("other", path=path)
    assert other.default.config.sqlalchemy_url.database == str(tmp_path / "other.db")
    assert seen == [("test", path), ("other", path)]
