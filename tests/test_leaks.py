"""Leak detection, long transactions, pool status and pool exhaustion on real databases.

Warnings come from the one monitor thread of dbconf.pooling.leaks; records are filtered by the
database name of each test, so warnings of other tests' engines cannot be counted here.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import dbconf
from dbconf.config import ProfileConfig
from dbconf.pooling.leaks import QueuePool
from dbconf.runtime.registry import Database, Registry

SELECT_1 = sa.text("SELECT 1")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def checked_out(db: Database) -> int:
    pool = db.engine.pool
    assert isinstance(pool, sa.pool.QueuePool)
    return pool.checkedout()


def line() -> int:
    """The caller's current line number."""
    return sys._getframe(1).f_lineno


@pytest.fixture
def make_db() -> Iterator[Callable[..., Database]]:
    """Build a one-database registry; dispose every registry made at the end of the test."""
    made: list[Registry] = []

    def make(url: str, name: str = "main", **settings: Any) -> Database:
        reg = Registry(
            ProfileConfig.model_validate({"databases": {name: {"url": url, **settings}}})
        )
        made.append(reg)
        return reg[name]

    yield make
    for reg in made:
        reg.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'leaks.db'}"


def warnings_for(caplog: pytest.LogCaptureFixture, database: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "dbconf.leaks" and getattr(r, "dbconf_database", None) == database
    ]


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_leak_warning_names_the_acquiring_line_once(
    backend: str, request: pytest.FixtureRequest, make_db: Callable[..., Database], caplog: Any
) -> None:
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    db = make_db(url, name="leaky", leak_detection={"threshold": "1s"})
    caplog.set_level(logging.WARNING, logger="dbconf.leaks")
    with db.session() as s:
        acquired = line() + 1
        s.execute(SELECT_1)
        time.sleep(1.8)
    time.sleep(0.6)  # a second warning for the same checkout would come by now
    records = warnings_for(caplog, "leaky")
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert records[0].levelno == logging.WARNING
    assert "database 'leaky'" in message
    assert "checked out for" in message
    assert f"{__file__}:{acquired}" in message
    assert f'File "{__file__}", line {acquired}, in test_leak_warning' in message
    assert "sqlalchemy" not in message.split("Acquired at", 1)[1]  # library frames skipped
    assert getattr(records[0], "dbconf_acquired_at", None) == f"{__file__}:{acquired}"


def test_no_warning_for_short_scopes(
    sqlite_url: str, make_db: Callable[..., Database], caplog: Any
) -> None:
    db = make_db(
        sqlite_url, name="short", leak_detection={"threshold": "1s", "long_transaction": "1s"}
    )
    caplog.set_level(logging.WARNING, logger="dbconf.leaks")
    deadline = time.monotonic() + 1.5
    scopes = 0
    while time.monotonic() < deadline:  # many scopes over 1.5 s, each short
        with db.session() as s:
            s.execute(SELECT_1)
        scopes += 1
        time.sleep(0.01)
    time.sleep(0.5)
    assert scopes > 10
    assert warnings_for(caplog, "short") == []
    assert db.pool_status().holders == ()


def test_long_transaction_warning_once_per_transaction(
    pg_url: str, make_db: Callable[..., Database], caplog: Any
) -> None:
    db = make_db(pg_url, name="longtx", leak_detection={"long_transaction": "0.5s"})
    caplog.set_level(logging.WARNING, logger="dbconf.leaks")
    # one checkout, three short transactions, 0.9 s in all: no transaction is long
    with db.engine.connect() as conn:
        for _ in range(3):
            with conn.begin():
                conn.execute(SELECT_1)
            time.sleep(0.3)
    assert warnings_for(caplog, "longtx") == []
    with db.session() as s:
        acquired = line() + 1
        s.execute(SELECT_1)
        time.sleep(1.3)
    time.sleep(0.3)
    records = warnings_for(caplog, "longtx")
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert "database 'longtx': a transaction has been open for" in message
    assert "leak_detection.long_transaction 0.5s" in message
    assert f"{__file__}:{acquired}" in message
    assert "checked out for" not in message  # no threshold set: only the transaction is watched


def test_pool_status_matches_reality(pg_url: str, make_db: Callable[..., Database]) -> None:
    db = make_db(pg_url, pool={"size": 3, "max_overflow": 1}, leak_detection={"threshold": "30s"})
    release = threading.Event()
    held = threading.Barrier(3)

    def hold() -> None:
        with db.engine.connect() as conn:
            conn.execute(SELECT_1)
            held.wait(5)
            release.wait(10)

    threads = [threading.Thread(target=hold, name=f"holder-{i}") for i in range(2)]
    for t in threads:
        t.start()
    try:
        held.wait(5)
        status = db.pool_status()
        assert isinstance(status, dbconf.PoolStatus)
        assert (status.database, status.pool, status.size, status.timeout) == (
            "main",
            "QueuePool",
            3,
            30.0,
        )
        assert status.checked_out == 2 == checked_out(db)
        assert status.overflow == 0
        assert status.idle == 0
        assert status.tracking
        assert sorted(h.thread for h in status.holders) == ["holder-0", "holder-1"]
        for holder in status.holders:
            assert holder.acquired_at.startswith(f"{__file__}:")
            assert holder.stack[0][2] == "hold"
            assert 0 <= holder.age < 10
            assert holder.transaction_age is None  # long_transaction is not set
    finally:
        release.set()
        for t in threads:
            t.join(10)
    status = db.pool_status()
    assert (status.checked_out, status.idle, status.holders) == (0, 2, ())


# Session subclasses in a module of their own, as SQLModel's Session or an application's are.
SUBCLASSES = """
from sqlalchemy.orm import Session


class AppSession(Session):  # like SQLModel's: execute wrapped, an exec() of its own
    def execute(self, statement, *args, **kwargs):
        return super().execute(statement, *args, **kwargs)

    def exec(self, statement):
        return self.execute(statement)


class AuditedSession(AppSession):  # a subclass of a subclass, overriding connection()
    def connection(self, *args, **kwargs):
        return super().connection(*args, **kwargs)

    def scalar_one(self, statement):
        return self.execute(statement).scalar_one()
"""


@pytest.fixture(scope="module")
def session_classes(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("elsewhere") / "app_sessions.py"
    path.write_text(SUBCLASSES)
    spec = importlib.util.spec_from_file_location("app_sessions", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("cls", "method"),
    [
        ("AppSession", "execute"),
        ("AppSession", "exec"),
        ("AuditedSession", "exec"),
        ("AuditedSession", "scalar_one"),
        ("AuditedSession", "connection"),
    ],
)
def test_session_subclass_frames_are_skipped(
    sqlite_url: str,
    make_db: Callable[..., Database],
    session_classes: Any,
    cls: str,
    method: str,
) -> None:
    db = make_db(sqlite_url, leak_detection={"threshold": "30s"})
    maker = sa.orm.sessionmaker(bind=db.engine, class_=getattr(session_classes, cls))
    with maker() as session:
        acquired = line() + 1
        getattr(session, method)(*(() if method == "connection" else (SELECT_1,)))
        (holder,) = db.pool_status().holders
    assert holder.acquired_at == f"{__file__}:{acquired}"
    assert session_classes.__file__ not in {frame[0] for frame in holder.stack}


def test_generated_code_is_skipped_by_its_module_not_its_file_name(
    sqlite_url: str, make_db: Callable[..., Database]
) -> None:
    """SQLAlchemy 2.0 generates wrappers with file name ``<string>`` in its own modules'
    namespace; code an application runs with ``exec`` (``python -c``) is also ``<string>``."""
    db = make_db(sqlite_url, leak_detection={"threshold": "30s"})
    source = "def connect(engine):\n    return engine.connect()\n"
    library: dict[str, Any] = {"__name__": "sqlalchemy.engine.generated"}
    application: dict[str, Any] = {"__name__": "__main__"}
    for namespace in (library, application):
        exec(compile(source, "<string>", "exec"), namespace)
    acquired = line() + 1
    with library["connect"](db.engine):
        assert db.pool_status().holders[0].acquired_at == f"{__file__}:{acquired}"
    with application["connect"](db.engine):
        assert db.pool_status().holders[0].acquired_at == "<string>:2"


def test_pool_status_without_leak_detection_has_counts_only(
    sqlite_url: str, make_db: Callable[..., Database]
) -> None:
    db = make_db(sqlite_url)
    with db.engine.connect() as conn:
        conn.execute(SELECT_1)
        status = db.pool_status()
        assert (status.checked_out, status.tracking, status.holders) == (1, False, ())
    memory = make_db("sqlite://", name="mem").pool_status()
    assert (memory.pool, memory.size, memory.checked_out) == ("StaticPool", None, None)


def test_queue_pool_is_used_only_where_sqlalchemy_would(
    pg_url: str, sqlite_url: str, make_db: Callable[..., Database]
) -> None:
    assert isinstance(make_db(pg_url).engine.pool, QueuePool)
    assert isinstance(make_db(sqlite_url, name="f").engine.pool, QueuePool)
    assert isinstance(make_db(pg_url, name="q", pool={"class": "queue"}).engine.pool, QueuePool)
    null = make_db(pg_url, name="n", pool={"class": "null"}).engine.pool
    assert type(null) is sa.pool.NullPool
    assert type(make_db("sqlite://", name="m").engine.pool) is sa.pool.StaticPool


@pytest.mark.parametrize("leak_detection", [True, False])
def test_pool_exhausted_error_within_timeout_names_holders(
    leak_detection: bool, pg_url: str, make_db: Callable[..., Database]
) -> None:
    extra = {"leak_detection": {"threshold": "30s"}} if leak_detection else {}
    db = make_db(
        pg_url, name="tight", pool={"size": 2, "max_overflow": 0, "timeout": "1s"}, **extra
    )
    db.engine.dispose()  # a recreated pool keeps its type and name
    acquired = line() + 1
    first = db.engine.connect()
    second = db.engine.connect()
    try:
        start = time.monotonic()
        with pytest.raises(dbconf.PoolExhaustedError) as caught:
            db.engine.connect()
        elapsed = time.monotonic() - start
    finally:
        first.close()
        second.close()
    assert 1.0 <= elapsed <= 2.0
    error = caught.value
    assert isinstance(error, sa.exc.TimeoutError)
    assert isinstance(error, dbconf.DbconfError)
    assert isinstance(error.__cause__, sa.exc.TimeoutError)
    message = str(error)
    assert "database 'tight'" in message
    assert "pool.timeout 1s" in message
    assert "pool.size 2" in message
    assert "pool.max_overflow 0" in message
    assert (error.size, error.max_overflow, error.timeout) == (2, 0, 1.0)
    if leak_detection:
        assert error.holders is not None
        assert len(error.holders) == 2
        assert f"thread 'MainThread' at {__file__}:{acquired} for 1." in message
        assert f"{__file__}:{acquired + 1}" in message
    else:
        assert error.holders is None
        assert "turn on leak_detection" in message
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is dbconf.PoolExhaustedError
    assert str(again) == message
    with db.session() as s:  # the pool works again once connections are returned
        assert s.execute(SELECT_1).scalar_one() == 1


def test_twenty_threads_over_two_connections_none_hang(
    pg_url: str, make_db: Callable[..., Database]
) -> None:
    db = make_db(
        pg_url,
        name="busy",
        pool={"size": 2, "max_overflow": 0, "timeout": "1s"},
        leak_detection={"threshold": "30s"},
    )
    outcomes: dict[str, str] = {}
    waited: dict[str, float] = {}

    def worker() -> None:
        name = threading.current_thread().name
        start = time.monotonic()
        try:
            with db.session() as s:
                s.execute(SELECT_1)
                time.sleep(0.2)
            outcomes[name] = "served"
        except dbconf.PoolExhaustedError:
            outcomes[name] = "exhausted"
            waited[name] = time.monotonic() - start
        except Exception as e:  # recorded: the test fails on any other outcome
            outcomes[name] = f"{type(e).__name__}: {e}"

    threads = [threading.Thread(target=worker, name=f"w{i}") for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not [t.name for t in threads if t.is_alive()], "a waiter hung"
    assert sorted(set(outcomes.values())) <= ["exhausted", "served"], outcomes
    assert len(outcomes) == 20
    served = sum(1 for o in outcomes.values() if o == "served")
    # 20 x 0.2 s of work over 2 connections is 2 s: the last waiters pass the 1 s timeout
    assert served >= 2
    assert served < 20
    assert all(1.0 <= w <= 2.0 for w in waited.values()), waited
    assert checked_out(db) == 0
    assert db.pool_status().holders == ()


def test_idle_in_transaction_timeout_kills_the_session_and_the_next_scope_recovers(
    pg_url: str, pg_admin: sa.Engine, make_db: Callable[..., Database]
) -> None:
    app, table = unique("dbconf_leaks"), unique("leaks_iit")
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id int PRIMARY KEY)"))
    try:
        db = make_db(pg_url, application_name=app, timeouts={"idle_in_transaction": "1s"})
        scope = db.session()
        s = scope.__enter__()
        s.execute(sa.text(f"INSERT INTO {table} VALUES (1)"))
        time.sleep(2)  # the server ends the session after 1 s idle in the transaction
        with pytest.raises(dbconf.DisconnectError) as caught:  # the README's promise
            scope.__exit__(None, None, None)  # the commit
        assert isinstance(caught.value, sa.exc.DBAPIError)  # and still the SQLAlchemy error
        assert caught.value.connection_invalidated  # seen as a disconnect: discarded
        with db.session() as s:
            s.execute(sa.text(f"INSERT INTO {table} VALUES (2)"))
        with db.session() as s:
            ids = s.execute(sa.text(f"SELECT id FROM {table}")).scalars().all()
        assert ids == [2]  # the killed transaction's row is gone, the next one committed
        assert checked_out(db) == 0
    finally:
        with pg_admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :a"
                ),
                {"a": app},
            )
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("{threshold: 0s}", "leak_detection.threshold: must be greater than 0"),
        ("{long_transaction: 0}", "leak_detection.long_transaction: must be greater than 0"),
        ("{}", "leak_detection sets neither threshold nor long_transaction"),
    ],
)
def test_leak_detection_config_is_validated(
    block: str, expected: str, write_config: Callable[[str], Path]
) -> None:
    path = write_config(
        f"""
        profiles:
          dev:
            databases:
              main:
                url: sqlite:///app.db
                leak_detection: {block}
        """
    )
    with pytest.raises(dbconf.ConfigError) as caught:
        dbconf.load("dev", path=path, environ={})
    assert expected in str(caught.value)
    assert f"{path}:6:" in str(caught.value)
