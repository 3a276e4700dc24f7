"""builder: engine_kwargs (pure) and the translated settings, read back from real servers."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.pool import NullPool, QueuePool, SingletonThreadPool, StaticPool

from dbconf.config import DatabaseConfig, SessionConfig, TimeoutsConfig
from dbconf.dialects.mysql import session_sql as mysql_session_sql
from dbconf.dialects.postgresql import pg_option_names
from dbconf.errors import ConfigError
from dbconf.runtime.builder import build_engine, build_sessionmaker, engine_kwargs
from dbconf.runtime.registry import Registry

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
SLOW_CTE = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def db(**data: Any) -> DatabaseConfig:
    return DatabaseConfig.model_validate(data)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# --- engine_kwargs: only what the user wrote, plus the documented defaults --------------------


def test_server_database_gets_only_documented_defaults() -> None:
    assert engine_kwargs(db(url=PG)) == {"hide_parameters": True, "pool_pre_ping": True}


def test_sqlite_file_and_memory_defaults(tmp_path: Path) -> None:
    assert engine_kwargs(db(url=f"sqlite:///{tmp_path}/a.db")) == {
        "hide_parameters": True,
        "connect_args": {"check_same_thread": False},
    }
    assert engine_kwargs(db(url="sqlite://")) == {
        "hide_parameters": True,
        "poolclass": StaticPool,
        "connect_args": {"check_same_thread": False},
    }
    # a singleton pool on :memory: is the user's choice: SQLAlchemy's own thread check stays
    singleton = engine_kwargs(db(url="sqlite://", pool={"class": "singleton"}))
    assert singleton == {"hide_parameters": True, "poolclass": SingletonThreadPool}


def test_written_options_are_passed_unwritten_ones_are_not() -> None:
    kwargs = engine_kwargs(
        db(
            url=PG,
            echo=False,
            hide_parameters=False,
            isolation_level="REPEATABLE READ",
            execution_options={"stream_results": True},
            pool={
                "class": "queue",
                "size": 3,
                "max_overflow": 0,
                "timeout": "1.5s",
                "recycle": "5m",
                "pre_ping": False,
                "use_lifo": True,
                "reset_on_return": "commit",
            },
        )
    )
    assert kwargs == {
        "hide_parameters": False,
        "echo": False,
        "isolation_level": "REPEATABLE READ",
        "execution_options": {"stream_results": True},
        "poolclass": QueuePool,
        "pool_size": 3,
        "max_overflow": 0,
        "pool_timeout": 1.5,
        "pool_recycle": 300.0,
        "pool_pre_ping": False,
        "pool_use_lifo": True,
        "pool_reset_on_return": "commit",
    }
    only_null = engine_kwargs(db(url=PG, pool={"class": "null"}))
    assert only_null == {"hide_parameters": True, "poolclass": NullPool, "pool_pre_ping": True}


def test_postgresql_translation_rounds_up_and_merges_user_options() -> None:
    kwargs = engine_kwargs(
        db(
            url=PG + "?sslmode=disable",
            application_name="svc",
            connect_args={"options": "-c search_path=app,public", "keepalives": 1},
            timeouts={
                "connect": "2.5s",
                "statement": "0.1s",
                "lock": "1500ms",
                "idle_in_transaction": "1m",
            },
        )
    )
    assert kwargs["connect_args"] == {
        "keepalives": 1,
        "connect_timeout": 3,
        "application_name": "svc",
        "options": "-c search_path=app,public -c statement_timeout=100 -c lock_timeout=1500 "
        "-c idle_in_transaction_session_timeout=60000",
    }


def test_url_query_options_are_kept_when_merging() -> None:
    kwargs = engine_kwargs(db(url=PG + "?options=-csearch_path%3Dx", timeouts={"lock": "1s"}))
    assert kwargs["connect_args"] == {"options": "-csearch_path=x -c lock_timeout=1000"}


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"connect_args": {"connect_timeout": 5}, "timeouts": {"connect": 3}}, "timeouts.connect"),
        ({"url": PG + "?application_name=x", "application_name": "y"}, "application_name"),
        (
            {"url": "sqlite:///x.db", "connect_args": {"timeout": 5}, "timeouts": {"lock": 1}},
            "timeouts.lock",
        ),
        (
            {"connect_args": {"options": "-c statement_timeout=5"}, "timeouts": {"statement": 1}},
            "timeouts.statement",
        ),
    ],
)
def test_same_setting_twice_is_a_config_error(extra: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        engine_kwargs(db(**{"url": PG, **extra}))
    assert err.value.problems[0].path == key
    assert "set it in one place only" in str(err.value)


GUCS = {
    "statement": "statement_timeout",
    "lock": "lock_timeout",
    "idle_in_transaction": "idle_in_transaction_session_timeout",
}


@st.composite
def option_spellings(draw: st.DrawFn, guc: str) -> str:
    """``guc`` set in any syntax libpq's options take: -c name=v, -cname=v, --name=v, any
    case, dashes for underscores, among other options."""
    name = "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in guc)
    name = "".join("-" if c == "_" and draw(st.booleans()) else c for c in name)
    form = draw(st.sampled_from(["-c {}=5", "-c{}=5", "--{}=5", "-c  {}=5"]))
    others = draw(st.lists(st.sampled_from(["-c search_path=app", "--work-mem=4MB"]), max_size=2))
    return " ".join([*others, form.format(name), *others])


@given(data=st.data(), key=st.sampled_from(sorted(GUCS)), where=st.sampled_from(["args", "url"]))
def test_timeout_also_in_options_is_a_conflict_in_any_spelling(
    data: st.DataObject, key: str, where: str
) -> None:
    options = data.draw(option_spellings(GUCS[key]))
    fields: dict[str, Any] = {"url": PG, "timeouts": {key: 1}}
    if where == "args":
        fields["connect_args"] = {"options": options}
    else:
        fields["url"] = PG + "?options=" + quote(options, safe="")
    with pytest.raises(ConfigError) as err:
        engine_kwargs(db(**fields))
    (problem,) = err.value.problems
    assert problem.path == f"timeouts.{key}"
    assert f"-c {GUCS[key]}" in problem.message


def test_options_in_both_connect_args_and_url_query_are_both_checked() -> None:
    config = db(
        url=PG + "?options=--lock-timeout%3D5",
        connect_args={"options": "-cStatement_Timeout=5"},
        timeouts={"statement": 1, "lock": 1, "connect": 1},
    )
    with pytest.raises(ConfigError) as err:
        engine_kwargs(config)
    assert [p.path for p in err.value.problems] == ["timeouts.statement", "timeouts.lock"]


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ("-c statement_timeout=5", ["statement_timeout"]),
        ("-cSTATEMENT_TIMEOUT=5 --lock-timeout=1", ["statement_timeout", "lock_timeout"]),
        (r"-c search_path=a\ b -c x.y=1", ["search_path", "x.y"]),
        ("-B 100 -c", []),
    ],
)
def test_pg_option_names(options: str, names: list[str]) -> None:
    assert pg_option_names(options) == names


@pytest.mark.parametrize(
    ("init_command", "key"),
    [
        ("SET SESSION max_statement_time=5", "statement"),
        ("set @@session.MAX_EXECUTION_TIME = 5", "statement"),
        ("SET innodb_lock_wait_timeout=5, sql_mode='ANSI'", "lock"),
        ("SET SESSION Idle_Transaction_Timeout=5", "idle_in_transaction"),
    ],
)
def test_mysql_init_command_setting_a_timeout_is_a_conflict(init_command: str, key: str) -> None:
    config = db(
        url="mariadb+pymysql://u@h/db",
        connect_args={"init_command": init_command},
        timeouts={key: 5},
    )
    with pytest.raises(ConfigError) as err:
        engine_kwargs(config)
    (problem,) = err.value.problems
    assert problem.path == f"timeouts.{key}"
    assert "init_command" in problem.message


def test_mysql_init_command_setting_other_variables_is_kept() -> None:
    config = db(
        url="mariadb+pymysql://u@h/db",
        connect_args={"init_command": "SET sql_mode='ANSI'"},
        timeouts={"statement": 5, "lock": 5},
    )
    assert engine_kwargs(config)["connect_args"]["init_command"] == "SET sql_mode='ANSI'"


def test_every_translation_conflict_is_reported_at_once() -> None:
    config = db(
        url=PG + "?application_name=x",
        connect_args={"connect_timeout": 5, "options": "-c lock_timeout=1"},
        timeouts={"connect": 1, "lock": 1},
        application_name="y",
    )
    with pytest.raises(ConfigError) as err:
        engine_kwargs(config)
    paths = sorted(p.path for p in err.value.problems)
    assert paths == ["application_name", "timeouts.connect", "timeouts.lock"]


def test_secret_connect_args_reach_the_driver_unmasked() -> None:
    args = {"ssl_key_password": "k3y", "ssl": {"password": "p"}}
    assert (
        engine_kwargs(db(url="mariadb+pymysql://u@h/db", connect_args=args))["connect_args"] == args
    )
    args = {"sslpassword": "k3y", "keepalives": 1}
    assert engine_kwargs(db(url=PG, connect_args=args))["connect_args"] == args


def test_conflict_surfaces_at_registry_creation_with_database_path() -> None:
    from dbconf.config import ProfileConfig

    config = ProfileConfig.model_validate(
        {
            "databases": {
                "main": {
                    "url": PG,
                    "connect_args": {"connect_timeout": 5},
                    "timeouts": {"connect": 3},
                }
            }
        }
    )
    with pytest.raises(ConfigError, match=r"databases\.main\.timeouts\.connect"):
        Registry(config)


def test_untranslatable_driver_is_a_config_error_not_a_silent_drop() -> None:
    with pytest.raises(
        ConfigError, match="psycopg/psycopg2/psycopg2cffi driver of postgresql, not pg8000"
    ):
        engine_kwargs(db(url="postgresql+pg8000://u@h/d", timeouts={"statement": 1}))
    # without translated settings any driver is fine
    assert engine_kwargs(db(url="postgresql+pg8000://u@h/d")) == {
        "hide_parameters": True,
        "pool_pre_ping": True,
    }


def test_mysql_and_sqlite_translation() -> None:
    maria = engine_kwargs(
        db(url="mariadb+pymysql://root@h/d", application_name="svc", timeouts={"connect": 0})
    )
    assert maria["connect_args"] == {"connect_timeout": None, "program_name": "svc"}
    lite = engine_kwargs(db(url="sqlite:///x.db", timeouts={"lock": "2.5s"}, application_name="a"))
    assert lite["connect_args"] == {"timeout": 2.5, "check_same_thread": False}


def test_mysql_session_sql_is_chosen_by_server_version() -> None:
    t = TimeoutsConfig(statement=1.5, lock=3)
    assert mysql_session_sql("5.5.5-10.11.19-MariaDB-0+deb12u1", t) == (
        "SET SESSION max_statement_time = 1.5, innodb_lock_wait_timeout = 3"
    )
    assert mysql_session_sql("8.0.36", t) == (
        "SET SESSION max_execution_time = 1500, innodb_lock_wait_timeout = 3"
    )
    assert mysql_session_sql("8.0.36", TimeoutsConfig()) is None


def test_sessionmaker_gets_only_the_flags_the_flavour_sets() -> None:
    engine = sa.create_engine("sqlite://")
    plain = build_sessionmaker(engine, SessionConfig())
    assert plain.kw == sa.orm.sessionmaker(bind=engine).kw  # SQLAlchemy's defaults only
    flags = build_sessionmaker(
        engine,
        SessionConfig(
            autoflush=False, expire_on_commit=False, autobegin=False, info={"role": "batch"}
        ),
    )
    assert flags.kw["autoflush"] is False
    assert flags.kw["expire_on_commit"] is False
    assert flags.kw["autobegin"] is False
    assert flags.kw["info"] == {"role": "batch"}
    with flags() as session:
        assert (session.autoflush, session.expire_on_commit) == (False, False)
        assert session.info == {"role": "batch"}
        with pytest.raises(sa.exc.InvalidRequestError, match=r"[Aa]utobegin is disabled"):
            session.execute(sa.text("SELECT 1"))
    auto = build_sessionmaker(engine, SessionConfig(autocommit=True))
    assert auto.kw["bind"].get_execution_options()["isolation_level"] == "AUTOCOMMIT"
    engine.dispose()


# --- PostgreSQL --------------------------------------------------------------------------------


def test_postgresql_settings_are_in_force(pg_url: str) -> None:
    app = unique("dbconf_b")
    cfg = db(
        url=pg_url,
        application_name=app,
        timeouts={"connect": 3, "statement": "250ms", "lock": "2s", "idle_in_transaction": "30s"},
        pool={"size": 2, "max_overflow": 1, "timeout": "1.5s", "recycle": "10m", "pre_ping": True},
    )
    engine = build_engine("main", cfg)
    try:
        with engine.connect() as conn:
            shown = [
                conn.exec_driver_sql(f"SHOW {name}").scalar_one()
                for name in (
                    "statement_timeout",
                    "lock_timeout",
                    "idle_in_transaction_session_timeout",
                    "application_name",
                )
            ]
            assert shown == ["250ms", "2s", "30s", app]
            with pytest.raises(sa.exc.OperationalError, match="statement timeout") as err:
                conn.exec_driver_sql("SELECT pg_sleep(2)")
            assert not err.value.connection_invalidated  # a timeout keeps the connection
            conn.rollback()
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
        pool = engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool._max_overflow, pool.timeout()) == (2, 1, 1.5)
        assert (pool._recycle, pool._pre_ping) == (600.0, True)
    finally:
        engine.dispose()


def test_postgresql_lock_timeout_bounds_a_lock_wait(pg_url: str, pg_admin: sa.Engine) -> None:
    table = unique("t_lock")
    with pg_admin.connect() as admin:
        admin.exec_driver_sql(f"CREATE TABLE {table} (id int PRIMARY KEY)")
        admin.exec_driver_sql(f"INSERT INTO {table} VALUES (1)")
    engine = build_engine("main", db(url=pg_url, timeouts={"lock": "300ms"}))
    try:
        with engine.connect() as holder, engine.connect() as waiter:
            holder.exec_driver_sql(f"UPDATE {table} SET id = 1")
            start = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                waiter.exec_driver_sql(f"UPDATE {table} SET id = 1")
            assert time.monotonic() - start < 2
    finally:
        engine.dispose()
        with pg_admin.connect() as admin:
            admin.exec_driver_sql(f"DROP TABLE {table}")


def test_postgresql_user_options_survive_the_merge(pg_url: str) -> None:
    cfg = db(
        url=pg_url,
        connect_args={"options": "-c search_path=pg_catalog"},
        timeouts={"statement": "5s"},
    )
    engine = build_engine("main", cfg)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW search_path").scalar_one() == "pg_catalog"
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "5s"
    finally:
        engine.dispose()


# --- MariaDB ---------------------------------------------------------------------------------


def test_mariadb_settings_are_in_force(maria_url: str) -> None:
    app = unique("dbconf_b")
    cfg = db(
        url=maria_url,
        application_name=app,
        timeouts={
            "connect": "2.5s",
            "statement": "300ms",
            "lock": "3s",
            "idle_in_transaction": "40s",
        },
        pool={"size": 2, "max_overflow": 0, "recycle": "1h"},
    )
    engine = build_engine("main", cfg)
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT @@max_statement_time, @@innodb_lock_wait_timeout, "
                "@@idle_transaction_timeout"
            ).one()
            assert tuple(row) == (0.3, 3, 40)
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            assert dbapi.connect_timeout == 3
            perf_schema = conn.exec_driver_sql("SELECT @@performance_schema").scalar_one()
            if perf_schema:
                attrs = conn.exec_driver_sql(
                    "SELECT ATTR_VALUE FROM performance_schema.session_connect_attrs "
                    "WHERE PROCESSLIST_ID = CONNECTION_ID() AND ATTR_NAME = 'program_name'"
                ).scalar_one()
                assert attrs == app
            else:  # performance_schema off: the attribute is sent in the handshake by pymysql
                assert dbapi._connect_attrs["program_name"] == app
            start = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="max_statement_time"):
                conn.exec_driver_sql("SELECT SLEEP(3)")
            assert time.monotonic() - start < 2
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
        pool = engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool._max_overflow, pool._recycle, pool._pre_ping) == (
            2,
            0,
            3600.0,
            True,
        )
    finally:
        engine.dispose()


# --- SQLite ------------------------------------------------------------------------------------


def test_sqlite_pragmas_and_busy_timeout(tmp_path: Path) -> None:
    cfg = db(
        url=f"sqlite:///{tmp_path}/p.db",
        timeouts={"lock": "1.5s"},
        sqlite={"journal_mode": "wal", "foreign_keys": True, "synchronous": "normal"},
    )
    engine = build_engine("lite", cfg)
    try:
        with engine.connect() as conn:
            read = {
                p: conn.exec_driver_sql(f"PRAGMA {p}").scalar_one()
                for p in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
            }
        assert read == {
            "journal_mode": "wal",
            "foreign_keys": 1,
            "synchronous": 1,
            "busy_timeout": 1500,
        }
    finally:
        engine.dispose()


@pytest.mark.parametrize("where", ["memory", "file"])
def test_sqlite_savepoint_rollback_keeps_outer_work(where: str, tmp_path: Path) -> None:
    url = "sqlite://" if where == "memory" else f"sqlite:///{tmp_path}/s.db"
    engine = build_engine("lite", db(url=url))
    maker = build_sessionmaker(engine, SessionConfig())
    try:
        with maker.begin() as s:
            s.execute(sa.text("CREATE TABLE t (x int)"))
            s.execute(sa.text("INSERT INTO t VALUES (1)"))
            nested = s.begin_nested()
            s.execute(sa.text("INSERT INTO t VALUES (2)"))
            nested.rollback()
            with s.begin_nested():
                s.execute(sa.text("INSERT INTO t VALUES (3)"))
        with maker() as s:
            assert s.execute(sa.text("SELECT x FROM t ORDER BY x")).scalars().all() == [1, 3]

        def outer_fails() -> None:
            with maker.begin() as s:
                s.execute(sa.text("INSERT INTO t VALUES (4)"))
                with s.begin_nested():
                    s.execute(sa.text("INSERT INTO t VALUES (5)"))
                raise RuntimeError

        with pytest.raises(RuntimeError):  # the outer rollback undoes the released savepoint
            outer_fails()
        with maker() as s:
            assert s.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 2
    finally:
        engine.dispose()


def test_sqlite_memory_database_is_shared_across_threads() -> None:
    engine = build_engine("lite", db(url="sqlite://"))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x int)")
        seen: list[Any] = []

        def worker(n: int) -> None:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"INSERT INTO t VALUES ({n})")
                seen.append(conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one())

        for n in range(3):  # one connection: sequential use from different threads
            thread = threading.Thread(target=worker, args=(n,))
            thread.start()
            thread.join()
        assert seen == [1, 2, 3]
    finally:
        engine.dispose()


def test_sqlite_statement_timeout_interrupts_and_connection_stays_usable(tmp_path: Path) -> None:
    engine = build_engine(
        "lite", db(url=f"sqlite:///{tmp_path}/t.db", timeouts={"statement": "200ms"})
    )
    try:
        with engine.connect() as conn:
            start = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="interrupted"):
                conn.exec_driver_sql(SLOW_CTE).all()
            assert 0.15 < time.monotonic() - start < 2
            conn.rollback()
            conn.exec_driver_sql("CREATE TABLE t (x int)")
            # the deadline is per statement: a transaction may outlive it, and commit works
            for n in range(3):
                conn.exec_driver_sql(f"INSERT INTO t VALUES ({n})")
                time.sleep(0.1)
            time.sleep(0.25)
            conn.commit()
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 3
    finally:
        engine.dispose()


def test_sqlite_autocommit_session_writes_without_commit(tmp_path: Path) -> None:
    engine = build_engine("lite", db(url=f"sqlite:///{tmp_path}/a.db"))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x int)")
        auto = build_sessionmaker(engine, SessionConfig(autocommit=True))
        session = auto()
        session.execute(sa.text("INSERT INTO t VALUES (1)"))
        other = sa.create_engine(f"sqlite:///{tmp_path}/a.db", poolclass=NullPool)
        with other.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 1
        other.dispose()
        session.close()
        # the pooled connection is back in normal transactional mode afterwards
        with engine.connect() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
            conn.rollback()
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 1
    finally:
        engine.dispose()


def test_disconnect_sqlstates_invalidate_the_connection(pg_url: str, pg_admin: sa.Engine) -> None:
    table = unique("t_ro")
    with pg_admin.connect() as admin:
        admin.exec_driver_sql(f"CREATE TABLE {table} (id int)")
    # 25006 read_only_sql_transaction: what an old primary answers after a failover
    engine = build_engine("main", db(url=pg_url, disconnect_sqlstates=["25006"]))
    try:
        with engine.connect() as conn:
            first_pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            conn.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            conn.commit()
            with pytest.raises(sa.exc.InternalError, match="read-only transaction") as err:
                conn.exec_driver_sql(f"INSERT INTO {table} VALUES (1)")
            assert err.value.connection_invalidated
        with engine.begin() as conn:  # a fresh, writable connection
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != first_pid
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES (1)")
    finally:
        engine.dispose()
        with pg_admin.connect() as admin:
            admin.exec_driver_sql(f"DROP TABLE {table}")
