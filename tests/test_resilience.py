"""Disconnects, statement timeouts and run_in_transaction, against the real servers.

Faults are injected for real: pg_terminate_backend from another connection, a read-only
transaction answering SQLSTATE 25006, server statement timeouts, SERIALIZABLE write skew and
a lock-order deadlock between two threads. Only the backoff *schedule* uses an injected sleep.
"""

from __future__ import annotations

import logging
import math
import pickle
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session

import dbconf
from dbconf.config import DatabaseConfig, RetryConfig
from dbconf.errors import (
    ConfigError,
    ConnectError,
    DbconfError,
    DisconnectError,
    LockTimeoutError,
    StatementTimeoutError,
)
from dbconf.runtime.registry import Database
from dbconf.sessions import retry_loops
from dbconf.sessions.resilience import RetryPolicy

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cr3t-pw"  # the test servers trust loopback: the password is accepted, never used


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def database(url: str, name: str = "main", **data: Any) -> Database:
    return Database(name, DatabaseConfig.model_validate({"url": url, **data}))


def with_password(url: str) -> str:
    return sa.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def scalar(session: Session, sql: str, **params: Any) -> Any:
    return session.execute(sa.text(sql), params).scalar_one()


@pytest.fixture
def pg_table(pg_admin: sa.Engine) -> Iterator[str]:
    """A fresh table ``(id int primary key, v int)`` on PostgreSQL, dropped afterwards."""
    table = unique("t_res")
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id int PRIMARY KEY, v int)")
    yield table
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    """A dbconf database on PostgreSQL (pre_ping on by default), password in the URL."""
    db = database(with_password(pg_url), application_name=unique("dbconf_res"))
    yield db
    db.dispose()


def terminate(pg_admin: sa.Engine, pid: int) -> None:
    """pg_terminate_backend(pid) from another connection; wait until the backend is gone."""
    with pg_admin.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()

        def gone() -> bool:
            sql = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p")
            return bool(conn.execute(sql, {"p": pid}).scalar_one() == 0)

        assert wait_for(gone)


# --- disconnects ---------------------------------------------------------------------------


def test_backend_killed_between_scopes_is_invisible_to_the_caller(
    pg_db: Database, pg_admin: sa.Engine
) -> None:
    with pg_db.session() as s:
        first = scalar(s, "SELECT pg_backend_pid()")
    terminate(pg_admin, first)
    with pg_db.session() as s:  # pre_ping finds the dead connection and replaces it
        second = scalar(s, "SELECT pg_backend_pid()")
    assert second != first


@pytest.mark.parametrize("killed_before", ["statement", "commit"])
def test_backend_killed_mid_transaction_raises_one_disconnect_error(
    pg_url: str,
    pg_db: Database,
    pg_admin: sa.Engine,
    pg_table: str,
    killed_before: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pg_db.session() as s:
        s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (1, 1), (2, 2), (3, 3)"))
    caplog.set_level(logging.DEBUG, logger="dbconf")

    def scope() -> None:
        with pg_db.session() as s:
            s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (4, 4)"))
            terminate(pg_admin, scalar(s, "SELECT pg_backend_pid()"))
            if killed_before == "statement":
                s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (5, 5)"))
            # else: the scope's COMMIT meets the dead connection

    with pytest.raises(DisconnectError) as err:
        scope()
    e = err.value
    assert isinstance(e, sa.exc.OperationalError)
    assert isinstance(e, sa.exc.DBAPIError)
    assert isinstance(e, DbconfError)
    assert e.connection_invalidated
    assert e.database == "main"
    assert type(e.__cause__).__module__.startswith("psycopg2")  # chained to the driver's error
    assert e.orig is e.__cause__
    text = str(e)
    masked = sa.make_url(with_password(pg_url)).render_as_string(hide_password=True)
    assert f"database 'main' ({masked})" in text  # from TEST_POSTGRES_URL, whatever its names
    assert str(e.orig).splitlines()[0] in text  # what the driver said
    where = "during BEGIN, COMMIT" if killed_before == "commit" else "while running a statement"
    assert f"the connection was lost {where}" in text
    assert "retry the transaction (db.run_in_transaction)" in text
    assert "a disconnect during COMMIT leaves the outcome unknown" in text
    assert PASSWORD not in text
    assert PASSWORD not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # one error, no noise
    with pg_db.session() as s:  # a fresh connection; committed rows all there, the rest not
        rows = s.execute(sa.text(f"SELECT id FROM {pg_table} ORDER BY id")).scalars().all()
    assert rows == [1, 2, 3]


def test_declared_sqlstate_25006_raises_disconnect_error(pg_url: str, pg_table: str) -> None:
    db = database(pg_url, disconnect_sqlstates=["25006"])
    pids: list[int] = []
    try:
        with pytest.raises(DisconnectError) as err:  # what an old primary answers
            db.run_in_transaction(_readonly_insert(pg_table, pids), retries=0)
        assert isinstance(err.value, sa.exc.InternalError)  # the class SQLAlchemy would raise
        assert isinstance(err.value, DbconfError)
        assert "SQLSTATE 25006, declared a disconnect in disconnect_sqlstates" in str(err.value)
        assert "read-only transaction" in str(err.value)
        with db.session() as s:
            assert scalar(s, "SELECT pg_backend_pid()") != pids[0]
    finally:
        db.dispose()


def test_wrapped_errors_pickle_with_their_message(pg_url: str, pg_table: str) -> None:
    db = database(pg_url, disconnect_sqlstates=["25006"])
    try:
        with pytest.raises(DisconnectError) as err:
            db.run_in_transaction(_readonly_insert(pg_table, []), retries=0)
    finally:
        db.dispose()
    copy = pickle.loads(pickle.dumps(err.value))  # e.g. across a multiprocessing boundary
    assert type(copy) is type(err.value)
    assert str(copy) == str(err.value)


# --- failures to connect -------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CONNECT_CASES = {
    # case: (server fixture, how to break the URL, words of the hint)
    "postgresql server down": ("pg_url", "down", "server is running and reachable"),
    "postgresql database missing": ("pg_url", "missing", "create the database"),
    "mariadb server down": ("maria_url", "down", "server is running and reachable"),
    "mariadb database missing": ("maria_url", "missing", "create the database"),
    "mariadb wrong password": ("maria_url", "password", "check the user name and password"),
}


@pytest.mark.parametrize("case", list(CONNECT_CASES))
def test_failures_to_connect_are_connect_errors_naming_the_database(
    case: str, request: pytest.FixtureRequest, assert_no_secret: Callable[..., None]
) -> None:
    fixture, fault, hint = CONNECT_CASES[case]
    url = sa.make_url(request.getfixturevalue(fixture))
    if fault == "down":
        url = url.set(port=free_port(), password=PASSWORD)
    elif fault == "missing":
        url = url.set(database=unique("no_such_db"))
    else:  # root needs no password over loopback TCP: any password is a wrong one
        url = url.set(password=PASSWORD)
    db = database(url.render_as_string(hide_password=False), timeouts={"connect": "3s"})
    calls: list[Session] = []

    def select_1(session: Session) -> None:
        calls.append(session)
        session.execute(sa.text("SELECT 1"))

    try:
        with pytest.raises(dbconf.ConnectError) as err, db.session() as s:
            s.execute(sa.text("SELECT 1"))
        with pytest.raises(dbconf.ConnectError):
            db.run_in_transaction(select_1, retries=3, backoff=0)
    finally:
        db.dispose()
    error = err.value
    assert isinstance(error, sa.exc.OperationalError)  # what SQLAlchemy raised before
    assert isinstance(error, DbconfError)
    assert type(error.orig).__module__.split(".")[0] in ("psycopg2", "pymysql")
    assert error.database == "main"
    message = str(error)
    assert message.startswith(f"database 'main' ({db.config.masked_url()}): could not connect: ")
    assert hint in message
    assert len(calls) == 1  # not retried
    assert_no_secret([error, message, repr(error)], PASSWORD)


# --- statement timeouts --------------------------------------------------------------------


def _timeout_case(db: Database, identity: str, slow: str, bound: float) -> None:
    with db.session() as s:
        before = scalar(s, identity)
    started = time.monotonic()
    with pytest.raises(StatementTimeoutError) as err, db.session() as s:
        s.execute(sa.text(slow))
    assert time.monotonic() - started < bound  # cancelled by the timeout, not finished
    assert isinstance(err.value, sa.exc.OperationalError)
    assert isinstance(err.value, DbconfError)
    assert not err.value.connection_invalidated
    assert "ran past timeouts.statement" in str(err.value)
    assert "database 'main'" in str(err.value)
    with db.session() as s:  # the same connection, reused
        assert scalar(s, identity) == before


def test_statement_timeout_postgresql_keeps_the_connection(pg_url: str) -> None:
    db = database(pg_url, timeouts={"statement": "200ms"})
    try:
        _timeout_case(db, "SELECT pg_backend_pid()", "SELECT pg_sleep(5)", 0.2 + 1)
    finally:
        db.dispose()


def test_statement_timeout_mariadb_keeps_the_connection(maria_url: str) -> None:
    db = database(maria_url, timeouts={"statement": "1s"})
    try:
        _timeout_case(db, "SELECT CONNECTION_ID()", "SELECT SLEEP(5)", 1 + 1)
    finally:
        db.dispose()


def test_statement_timeout_sqlite_keeps_the_connection(tmp_path: Path) -> None:
    db = database(f"sqlite:///{tmp_path}/t.db", timeouts={"statement": "200ms"})
    slow = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 1000000000) "
        "SELECT count(*) FROM c"
    )
    try:
        with db.session() as s:
            before = s.connection().connection.dbapi_connection
        with pytest.raises(StatementTimeoutError) as err, db.session() as s:
            s.execute(sa.text(slow))
        assert "interrupted" in str(err.value)
        assert not err.value.connection_invalidated
        with db.session() as s:
            assert s.connection().connection.dbapi_connection is before
            assert scalar(s, "SELECT 1") == 1
    finally:
        db.dispose()


# --- run_in_transaction ----------------------------------------------------------------------


def _run_pair(work: Callable[[str], Any]) -> list[Any]:
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(work, name) for name in ("a", "b")]
        return [f.result(timeout=30) for f in futures]


def test_serialization_failure_is_retried(
    pg_url: str, pg_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = database(with_password(pg_url), isolation_level="SERIALIZABLE")
    barrier = threading.Barrier(2)
    calls: Counter[str] = Counter()

    def work(name: str) -> int:
        def fn(session: Session) -> int:
            calls[name] += 1
            seen = int(scalar(session, f"SELECT count(*) FROM {pg_table}"))
            if calls[name] == 1:
                barrier.wait(timeout=10)  # both have read before either writes: write skew
            session.execute(
                sa.text(f"INSERT INTO {pg_table} VALUES (:id, :v)"),
                {"id": ord(name), "v": seen},
            )
            return seen

        return db.run_in_transaction(fn, retries=3, backoff=0.01)

    caplog.set_level(logging.WARNING, logger="dbconf")
    try:
        results = _run_pair(work)
        with db.session() as s:
            count = scalar(s, f"SELECT count(*) FROM {pg_table}")
    finally:
        db.dispose()
    assert sorted(results) == [0, 1]  # the retried one saw the other's committed row
    assert count == 2
    assert sum(calls.values()) >= 3
    retries = [r for r in caplog.records if "serialization failure" in r.getMessage()]
    assert retries
    assert retries[0].levelno == logging.WARNING
    assert "database 'main': attempt 1 of 4 failed with OperationalError" in retries[0].getMessage()
    assert PASSWORD not in caplog.text


def test_deadlock_is_retried(pg_url: str, pg_table: str, caplog: pytest.LogCaptureFixture) -> None:
    db = database(pg_url)
    with db.session() as s:
        s.execute(sa.text(f"INSERT INTO {pg_table} VALUES (1, 0), (2, 0)"))
    barrier = threading.Barrier(2)
    calls: Counter[str] = Counter()

    def work(name: str) -> str:
        order = (1, 2) if name == "a" else (2, 1)

        def fn(session: Session) -> str:
            calls[name] += 1
            session.execute(sa.text("SET LOCAL deadlock_timeout = '100ms'"))
            session.execute(sa.text(f"UPDATE {pg_table} SET v = v + 1 WHERE id = {order[0]}"))
            if calls[name] == 1:
                barrier.wait(timeout=10)  # each holds one row and wants the other's
            session.execute(sa.text(f"UPDATE {pg_table} SET v = v + 1 WHERE id = {order[1]}"))
            return name

        return db.run_in_transaction(fn, backoff=0.01)

    caplog.set_level(logging.WARNING, logger="dbconf")
    try:
        assert _run_pair(work) == ["a", "b"]
        with db.session() as s:
            values = s.execute(sa.text(f"SELECT v FROM {pg_table} ORDER BY id")).scalars().all()
    finally:
        db.dispose()
    assert values == [2, 2]  # both transactions applied exactly once
    assert sum(calls.values()) == 3
    assert any("(deadlock)" in r.getMessage() for r in caplog.records)


def test_mariadb_deadlock_is_retried(maria_url: str) -> None:
    db = database(maria_url)
    table = unique("t_res")
    with db.session() as s:
        s.execute(sa.text(f"CREATE TABLE {table} (id int PRIMARY KEY, v int) ENGINE=InnoDB"))
        s.execute(sa.text(f"INSERT INTO {table} VALUES (1, 0), (2, 0)"))
    barrier = threading.Barrier(2)
    calls: Counter[str] = Counter()

    def work(name: str) -> str:
        order = (1, 2) if name == "a" else (2, 1)

        def fn(session: Session) -> str:
            calls[name] += 1
            session.execute(sa.text(f"UPDATE {table} SET v = v + 1 WHERE id = {order[0]}"))
            if calls[name] == 1:
                barrier.wait(timeout=10)
            session.execute(sa.text(f"UPDATE {table} SET v = v + 1 WHERE id = {order[1]}"))
            return name

        return db.run_in_transaction(fn, backoff=0.01)

    try:
        assert _run_pair(work) == ["a", "b"]
        with db.session() as s:
            values = s.execute(sa.text(f"SELECT v FROM {table} ORDER BY id")).scalars().all()
        assert values == [2, 2]
        assert sum(calls.values()) == 3  # error 1213 rolled one back; it ran again
    finally:
        with db.session() as s:
            s.execute(sa.text(f"DROP TABLE {table}"))
        db.dispose()


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Database]:
    db = database(f"sqlite:///{tmp_path}/r.db")
    with db.session() as s:
        s.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    yield db
    db.dispose()


def test_other_errors_are_not_retried(lite: Database) -> None:
    calls = 0

    def fails(session: Session) -> None:
        nonlocal calls
        calls += 1
        session.execute(sa.text("INSERT INTO t VALUES (1)"))
        raise ValueError("not transient")

    with pytest.raises(ValueError, match="not transient"):
        lite.run_in_transaction(fails, retries=5)
    assert calls == 1

    def duplicate(session: Session) -> None:
        nonlocal calls
        calls += 1
        session.execute(sa.text("INSERT INTO t VALUES (2), (2)"))

    calls = 0
    with pytest.raises(sa.exc.IntegrityError):
        lite.run_in_transaction(duplicate, retries=5)
    assert calls == 1
    with lite.session() as s:
        assert scalar(s, "SELECT count(*) FROM t") == 0  # both rolled back


def test_return_value_and_decorator_form(lite: Database) -> None:
    def add(session: Session) -> int:
        session.execute(sa.text("INSERT INTO t VALUES (7)"))
        return int(scalar(session, "SELECT count(*) FROM t"))

    assert lite.run_in_transaction(add) == 1

    @lite.retrying(retries=2)
    def insert(session: Session, ident: int, *, double: bool = False) -> list[int]:
        session.execute(sa.text("INSERT INTO t VALUES (:i)"), {"i": ident})
        if double:
            session.execute(sa.text("INSERT INTO t VALUES (:i)"), {"i": ident * 2})
        return list(session.execute(sa.text("SELECT id FROM t ORDER BY id")).scalars())

    assert insert.__name__ == "insert"
    assert insert(3, double=True) == [3, 6, 7]
    with lite.session() as s:  # committed
        assert scalar(s, "SELECT count(*) FROM t") == 3


def test_autocommit_flavour_is_refused(tmp_path: Path) -> None:
    db = database(f"sqlite:///{tmp_path}/a.db", sessions={"auto": {"autocommit": True}})
    with pytest.raises(ConfigError, match=r"sessions\.auto: is autocommit"):
        db.run_in_transaction(lambda s: None, flavour="auto")


# The schedule and exhaustion tests use a real, repeatable disconnect: a read-only transaction
# answering 25006 on a database that declares it (each attempt gets a fresh connection).


def _readonly_insert(table: str, pids: list[int]) -> Callable[[Session], None]:
    def fn(session: Session) -> None:
        pids.append(int(scalar(session, "SELECT pg_backend_pid()")))
        session.execute(sa.text("SET TRANSACTION READ ONLY"))
        session.execute(sa.text(f"INSERT INTO {table} VALUES (1, 1)"))

    return fn


def test_exhausted_retries_reraise_the_last_typed_error_after_the_backoff_schedule(
    pg_url: str, pg_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = database(pg_url, name="ro", disconnect_sqlstates=["25006"])
    sleeps: list[float] = []
    pids: list[int] = []
    policy = RetryPolicy(retries=4, backoff=0.1, max_backoff=0.25)
    caplog.set_level(logging.WARNING, logger="dbconf")
    try:
        with pytest.raises(DisconnectError) as err:
            retry_loops.run_in_transaction(
                db.sessionmaker(),
                _readonly_insert(pg_table, pids),
                policy=policy,
                database=db.name,
                sleep=sleeps.append,
                rand=lambda: 1.0,  # the upper bound of each full-jitter draw
            )
    finally:
        db.dispose()
    assert sleeps == pytest.approx([0.1, 0.2, 0.25, 0.25])  # exponential, capped
    assert len(pids) == 5
    assert len(set(pids)) == 5  # every attempt on a fresh connection
    notes = getattr(err.value, "__notes__", [])  # Python 3.11+ (add_note)
    assert sys.version_info < (3, 11) or "gave up after 5 attempts on database 'ro'" in notes[0]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4
    assert messages[3].startswith("database 'ro': attempt 4 of 5 failed with DisconnectError")


def test_jitter_stays_within_the_cap(pg_url: str, pg_table: str) -> None:
    policy = RetryPolicy(retries=5, backoff=0.05, max_backoff=0.3)
    assert [policy.cap(n) for n in range(1, 6)] == pytest.approx([0.05, 0.1, 0.2, 0.3, 0.3])
    draws = iter([0.0, 0.5, 0.25, 0.999, 0.1])
    sleeps: list[float] = []
    pids: list[int] = []
    db = database(pg_url, disconnect_sqlstates=["25006"])
    try:
        with pytest.raises(DisconnectError):
            retry_loops.run_in_transaction(
                db.sessionmaker(),
                _readonly_insert(pg_table, pids),
                policy=policy,
                database=db.name,
                sleep=sleeps.append,
                rand=lambda: next(draws),
            )
    finally:
        db.dispose()
    assert sleeps == pytest.approx([0.0, 0.05, 0.05, 0.2997, 0.03])  # draw x cap


def test_retry_defaults_from_yaml_then_builtin(pg_url: str, pg_table: str) -> None:
    assert RetryPolicy.resolve(None) == RetryPolicy(retries=3, backoff=0.05, max_backoff=2.0)
    cfg = RetryConfig.model_validate({"retries": 1, "backoff": "10ms"})
    assert RetryPolicy.resolve(cfg) == RetryPolicy(retries=1, backoff=0.01, max_backoff=2.0)
    assert RetryPolicy.resolve(cfg, retries=0).retries == 0
    db = database(pg_url, disconnect_sqlstates=["25006"], retry={"retries": 1, "backoff": "1ms"})
    pids: list[int] = []
    try:
        with pytest.raises(DisconnectError):
            db.run_in_transaction(_readonly_insert(pg_table, pids))
        assert len(pids) == 2  # retries: 1 from the YAML
        pids.clear()
        with pytest.raises(DisconnectError):
            db.run_in_transaction(_readonly_insert(pg_table, pids), retries=0)
        assert len(pids) == 1  # the argument wins
    finally:
        db.dispose()


BAD_RETRIES = st.one_of(
    st.none(),
    st.integers(max_value=-1),
    st.integers(min_value=RetryConfig.MAX_RETRIES + 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=5),
)
BAD_SECONDS = st.one_of(
    st.floats(max_value=-1e-9),
    st.floats(min_value=RetryConfig.MAX_BACKOFF, exclude_min=True),
    st.sampled_from([None, math.nan, math.inf, -math.inf, True, "1s"]),
    st.integers(min_value=3601),
)


@given(key=st.sampled_from(["retries", "backoff", "max_backoff"]), data=st.data())
def test_bad_retry_settings_in_code_are_config_errors(
    lite: Database, key: str, data: st.DataObject
) -> None:
    bad: dict[str, Any] = {key: data.draw(BAD_RETRIES if key == "retries" else BAD_SECONDS)}
    value = bad[key]
    calls: list[Callable[[], object]] = [
        lambda: lite.run_in_transaction(lambda s: None, **bad),
        lambda: lite.retrying(**bad),  # fails at decoration, not at the first call
        lambda: RetryPolicy(**bad),
    ]
    origins = [
        "db.run_in_transaction() arguments in code",
        "db.retrying() arguments in code",
        "RetryPolicy(...) in code",
    ]
    if value is None:  # None means "not given" in the methods' arguments
        calls, origins = calls[2:], origins[2:]
    for call, origin in zip(calls, origins, strict=True):
        with pytest.raises(ConfigError) as err:
            call()
        (problem,) = err.value.problems
        assert (problem.origin, problem.path) == (origin, key)
        assert problem.message.startswith(f"got {value!r}; use a ")


def test_retry_bounds_in_yaml(write_config: Callable[[str], Path]) -> None:
    path = write_config(
        """
        profiles:
          default:
            databases:
              main: {url: "sqlite://", retry: {retries: 101, max_backoff: 2h}}
        """
    )
    with pytest.raises(ConfigError) as err:
        dbconf.load("default", path=path, environ={})
    assert [p.path.rsplit(".", 1)[1] for p in err.value.problems] == ["retries", "max_backoff"]
    assert all(":4:" in p.origin for p in err.value.problems)
    RetryConfig.model_validate({"retries": 100, "backoff": "1h", "max_backoff": 3600})


@given(
    retry=st.integers(min_value=1, max_value=10**30),
    backoff=st.floats(min_value=0, max_value=RetryConfig.MAX_BACKOFF),
    max_backoff=st.floats(min_value=0, max_value=RetryConfig.MAX_BACKOFF),
)
def test_backoff_cap_never_overflows_and_is_exact(
    retry: int, backoff: float, max_backoff: float
) -> None:
    policy = RetryPolicy(retries=3, backoff=backoff, max_backoff=max_backoff)
    cap = policy.cap(retry)
    assert 0 <= cap <= max_backoff
    exact = min(Fraction(max_backoff), Fraction(backoff) * 2 ** min(retry - 1, 2000))
    assert cap == exact  # 2 ** 2000 times any backoff > 0 exceeds any max_backoff
    assert policy.cap(retry + 1) >= cap  # never shrinks


def test_public_names() -> None:
    assert dbconf.DisconnectError is DisconnectError
    assert dbconf.StatementTimeoutError is StatementTimeoutError
    assert dbconf.LockTimeoutError is LockTimeoutError
    assert dbconf.RetryPolicy is RetryPolicy
    assert dbconf.ConnectError is ConnectError


def test_idempotent_retry_example_runs_on_sqlite(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "idempotent_retry.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "same request again: already applied" in result.stdout
    assert result.stdout.rstrip().endswith("ok: each request applied exactly once")
