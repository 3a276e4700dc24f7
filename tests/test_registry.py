"""Registry and Database: lazy engines, flavours, several dialects, dispose, check."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import dbconf
from dbconf.config import ProfileConfig
from dbconf.errors import ConfigError, DbconfError, UnknownDatabaseError, UnknownSessionFlavourError
from dbconf.runtime.registry import Registry

UNREACHABLE = "postgresql+psycopg2://app:s3cr3t-pw@127.0.0.1:1/nowhere"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def registry(databases: dict[str, Any], **profile: Any) -> Registry:
    return Registry(
        ProfileConfig.model_validate({"databases": databases, **profile}), profile="test"
    )


def backends(pg_admin: sa.Engine, app: str) -> int:
    with pg_admin.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"),
                {"a": app},
            ).scalar_one()
        )


def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_names_default_lookup_and_suggestions() -> None:
    dbs = registry(
        {"primary": {"url": "sqlite://"}, "analytics": {"url": "sqlite://"}},
        default_database="analytics",
    )
    assert dbs.names == ("primary", "analytics")
    assert dbs.default is dbs["analytics"]
    assert dbs.profile == "test"
    assert dbs.config.default_database == "analytics"
    assert "primary" in dbs
    assert len(dbs) == 2
    with pytest.raises(UnknownDatabaseError, match=r"'primry' \(did you mean 'primary'\?\)") as e:
        dbs["primry"]
    assert isinstance(e.value, LookupError)
    assert "declared: primary, analytics" in str(e.value)


def test_load_builds_no_engine_and_connects_nowhere() -> None:
    dbs = registry({"main": {"url": UNREACHABLE, "timeouts": {"connect": 1}}})
    db = dbs["main"]
    assert not db.engine_built
    maker = db.sessionmaker()  # builds the engine, still no connection
    assert db.engine_built
    assert maker is db.sessionmaker("default")
    assert "s3cr3t" not in repr(db)
    with pytest.raises(sa.exc.OperationalError), db.session() as s:
        s.execute(sa.text("SELECT 1"))


def test_dbconf_load_from_a_yaml_file(write_config: Callable[[str], Path]) -> None:
    path = write_config(
        """
        profiles:
          development:
            databases:
              main:
                url: sqlite://
                sessions:
                  batch: {autoflush: false}
        """
    )
    with dbconf.load("development", path=path, environ={}) as dbs:
        assert dbs.profile == "development"
        assert dbs.names == ("main",)
        assert not dbs.default.engine_built
        with dbs.default.session("batch") as s:
            assert s.autoflush is False
            assert s.execute(sa.text("SELECT 1")).scalar_one() == 1


def test_engine_is_built_once_under_concurrency() -> None:
    db = registry({"main": {"url": "sqlite://"}})["main"]
    engines: list[sa.Engine] = []
    barrier = threading.Barrier(8)

    def grab() -> None:
        barrier.wait()
        engines.append(db.engine)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(engines) == 8
    assert all(e is engines[0] for e in engines)


def test_unknown_flavour_names_the_known_ones() -> None:
    db = registry({"main": {"url": "sqlite://", "sessions": {"batch": {}, "reporting": {}}}})[
        "main"
    ]
    assert db.flavours == ("default", "batch", "reporting")
    for call in (db.sessionmaker, db.session, db.transaction, db.dependency):
        with pytest.raises(UnknownSessionFlavourError, match=r"did you mean 'batch'") as e:
            call("bacth")
        assert isinstance(e.value, DbconfError)
        assert "declared: default, batch, reporting" in str(e.value)
    assert not db.engine_built  # dependency() checks the flavour without building anything


def test_every_flavour_has_its_flags(pg_url: str) -> None:
    flavours = {
        "default": {},
        "batch": {"autoflush": False, "expire_on_commit": False},
        "manual": {"autobegin": False},
        "tagged": {"info": {"role": "reporting"}},
        "auto": {"autocommit": True},
    }
    with registry({"main": {"url": pg_url, "sessions": flavours}}) as dbs:
        db = dbs["main"]
        makers = {name: db.sessionmaker(name) for name in flavours}
        assert len({id(m) for m in makers.values()}) == len(flavours)
        assert all(db.sessionmaker(name) is makers[name] for name in flavours)
        with db.session("batch") as s:
            assert (s.autoflush, s.expire_on_commit) == (False, False)
        with db.session("default") as s:
            assert (s.autoflush, s.expire_on_commit) == (True, True)
        with db.session("manual") as s, pytest.raises(sa.exc.InvalidRequestError):
            s.execute(sa.text("SELECT 1"))
        with db.session("tagged") as s:
            assert s.info == {"role": "reporting"}
        txid = sa.text("SELECT txid_current()")
        with db.session("auto") as s:  # each statement is its own server transaction
            assert s.connection().get_execution_options()["isolation_level"] == "AUTOCOMMIT"
            assert s.execute(txid).scalar() != s.execute(txid).scalar()
        with db.session("default") as s:
            assert s.execute(txid).scalar() == s.execute(txid).scalar()


def test_autocommit_flavour_write_is_visible_without_commit(
    pg_url: str, pg_admin: sa.Engine
) -> None:
    table = unique("t_auto")
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id int)")
    try:
        with registry({"main": {"url": pg_url, "sessions": {"auto": {"autocommit": True}}}}) as d:
            with d["main"].session("auto") as s:
                s.execute(sa.text(f"INSERT INTO {table} VALUES (1)"))
                with pg_admin.connect() as conn:  # before the scope commits
                    assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 1

            def insert_then_fail() -> None:
                with d["main"].session("auto") as s:
                    s.execute(sa.text(f"INSERT INTO {table} VALUES (2)"))
                    raise RuntimeError  # autocommit: the rollback cannot undo it (documented)

            with pytest.raises(RuntimeError):
                insert_then_fail()
            with pg_admin.connect() as conn:
                assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 2
    finally:
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f"DROP TABLE {table}")


def test_three_dialects_in_one_registry(pg_url: str, maria_url: str, tmp_path: Path) -> None:
    table = unique("t_multi")
    dbs = registry(
        {
            "primary": {"url": pg_url},
            "legacy": {"url": maria_url},
            "cache": {"url": f"sqlite:///{tmp_path}/cache.db", "sqlite": {"foreign_keys": True}},
        }
    )
    with dbs:
        try:
            for n, db in enumerate(dbs):
                with db.transaction() as s:
                    s.execute(sa.text(f"CREATE TABLE {table} (id int)"))
                    s.execute(sa.text(f"INSERT INTO {table} VALUES ({n})"))
            seen = {}
            for db in dbs:
                with db.session() as s:
                    seen[db.name] = s.execute(sa.text(f"SELECT id FROM {table}")).scalar_one()
            assert seen == {"primary": 0, "legacy": 1, "cache": 2}
            assert [db.engine.dialect.name for db in dbs] == ["postgresql", "mariadb", "sqlite"]
        finally:
            for db in dbs:
                with db.engine.begin() as conn:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


def test_dispose_closes_every_server_connection(pg_url: str, pg_admin: sa.Engine) -> None:
    app = unique("dbconf_r")
    dbs = registry(
        {
            "main": {"url": pg_url, "application_name": app, "pool": {"size": 3}},
            "other": {"url": pg_url, "application_name": app},
        }
    )
    with dbs:
        held = [dbs["main"].sessionmaker()() for _ in range(3)]
        for s in held:
            s.execute(sa.text("SELECT 1"))
        with dbs["other"].session() as s:
            s.execute(sa.text("SELECT 1"))
        for s in held:
            s.close()
        assert backends(pg_admin, app) == 4
        dbs.dispose()
        assert wait_for(lambda: backends(pg_admin, app) == 0)
        with dbs["main"].session() as s:  # still usable after dispose: a fresh pool
            s.execute(sa.text("SELECT 1"))
        assert backends(pg_admin, app) == 1
    assert wait_for(lambda: backends(pg_admin, app) == 0)  # leaving the block disposes


def test_closing_with_threads_mid_scope_closes_their_connections_when_returned(
    pg_url: str, pg_admin: sa.Engine
) -> None:
    app = unique("dbconf_close")
    dbs = registry({"main": {"url": pg_url, "application_name": app, "pool": {"size": 5}}})
    inside, release = threading.Barrier(6), threading.Event()
    errors: list[BaseException] = []

    def mid_scope() -> None:
        try:
            with dbs["main"].session() as s:
                s.execute(sa.text("SELECT 1"))
                inside.wait(10)
                release.wait(10)
                s.execute(sa.text("SELECT 2"))  # the held connection still works
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=mid_scope) for _ in range(5)]
    gc.disable()  # closed at once, not whenever the garbage collector runs
    try:
        with dbs:
            for t in threads:
                t.start()
            inside.wait(10)
            assert backends(pg_admin, app) == 5
        release.set()
        for t in threads:
            t.join(10)
        assert errors == []
        # the server sees a closed connection go away asynchronously: poll, with a deadline
        assert wait_for(lambda: backends(pg_admin, app) == 0, seconds=10)
    finally:
        gc.enable()
        release.set()


async def _async_engine(db: Any) -> object:
    return db.async_engine


async def _nothing(_session: object) -> None:
    return None


def _uses(dbs: Registry) -> dict[str, Callable[[], object]]:
    db = dbs._databases["main"]
    return {
        "registry[name]": lambda: dbs["main"],
        "registry.default": lambda: dbs.default,
        "registry.check()": dbs.check,
        "db.engine": lambda: db.engine,
        "db.sessionmaker()": db.sessionmaker,
        "db.session()": db.session,
        "db.transaction()": db.transaction,
        "db.run_in_transaction()": lambda: db.run_in_transaction(lambda s: None),
        "db.retrying()": db.retrying,
        "db.dependency()": db.dependency,
        "db.async_session()": lambda: asyncio.run(db.async_session().__aenter__()),
        "db.async_transaction()": lambda: asyncio.run(db.async_transaction().__aenter__()),
        "db.async_engine": lambda: asyncio.run(_async_engine(db)),
        "db.async_sessionmaker()": db.async_sessionmaker,
        "db.run_in_transaction_async()": lambda: asyncio.run(db.run_in_transaction_async(_nothing)),
        "db.async_dependency()": db.async_dependency,
        "db.async_check()": lambda: asyncio.run(db.async_check()),
        "registry.async_check()": lambda: asyncio.run(dbs.async_check()),
        "db.pool_status()": db.pool_status,
        "db.check()": db.check,
    }


@pytest.mark.parametrize("built", [False, True], ids=["engine unbuilt", "engine built"])
def test_a_closed_registry_raises_instead_of_building_a_new_pool(built: bool) -> None:
    dbs = registry({"main": {"url": UNREACHABLE}})
    db = dbs["main"]
    if built:
        engine = db.engine
    with dbs:
        pass
    assert dbs.closed
    assert db.closed
    for use, call in _uses(dbs).items():
        with pytest.raises(dbconf.RegistryClosedError) as err:
            call()
        assert isinstance(err.value, DbconfError), use
        assert "'main' belongs to a closed Registry" in str(err.value), use
        assert "s3cr3t-pw" not in str(err.value)
    assert db.engine_built == built
    if built:
        assert db._engine is engine
    assert dbs.names == ("main",)  # describing it still works
    dbs.close()  # closing twice is harmless


def test_check_reports_reachable_and_unreachable(pg_url: str, maria_url: str) -> None:
    dbs = registry(
        {
            "pg": {"url": pg_url, "pool": {"size": 2}, "timeouts": {"statement": "5s"}},
            "maria": {"url": maria_url},
            "lite": {"url": "sqlite://"},
            "down": {"url": UNREACHABLE, "timeouts": {"connect": 1}},
        }
    )
    with dbs:
        reports = {r.name: r for r in dbs.check()}
        assert [reports[n].ok for n in ("pg", "maria", "lite", "down")] == [True, True, True, False]
        pg = reports["pg"]
        assert pg.dialect == "postgresql"
        assert pg.server_version is not None
        assert pg.server_version.startswith("15")
        assert pg.latency_ms is not None
        assert pg.latency_ms > 0
        assert pg.pool["size"] == 2
        assert pg.pool["pre_ping"] is True
        assert pg.timeouts == {"statement": 5.0}
        assert reports["maria"].dialect == "mariadb"
        assert reports["lite"].pool["class"] == "StaticPool"
        down = reports["down"]
        assert down.error is not None
        assert "\n" not in down.error
        assert "OperationalError" in down.error
        assert "s3cr3t-pw" not in down.error + down.render() + down.url
        assert "UNREACHABLE" in down.render()
        assert "server 15" in pg.render()
        assert [r.name for r in dbs.check(["lite"])] == ["lite"]


def test_dependency_generator_without_fastapi(tmp_path: Path) -> None:
    db = registry({"main": {"url": f"sqlite:///{tmp_path}/d.db"}})["main"]
    with db.transaction() as s:
        s.execute(sa.text("CREATE TABLE t (x int)"))
    dep = db.dependency()
    ok = dep()
    next(ok).execute(sa.text("INSERT INTO t VALUES (1)"))
    with pytest.raises(StopIteration):
        next(ok)  # the framework finishing the request: commit and close
    failing = dep()
    next(failing).execute(sa.text("INSERT INTO t VALUES (2)"))
    with pytest.raises(ValueError, match="request failed"):
        failing.throw(ValueError("request failed"))
    with db.session() as s:
        assert s.execute(sa.text("SELECT x FROM t")).scalars().all() == [1]
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    db.dispose()


def test_translation_conflict_names_its_origin(write_config: Callable[..., Path]) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              main:
                url: postgresql+psycopg2://app@db/app
                timeouts: {connect: 5s}
                connect_args: {connect_timeout: 3}
        """
    )
    with pytest.raises(ConfigError) as info:
        dbconf.load("p", path=path, environ={})
    (problem,) = info.value.problems
    assert problem.origin == f"{path}:6:20"
    assert problem.path == "profiles.p.databases.main.timeouts.connect"
