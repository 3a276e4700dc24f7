"""Routed sync sessions on a real streaming standby (``TEST_POSTGRES_STANDBY_URL``): role
replica / auto / autocommit, read-only everywhere, read your writes by LSN, retry once when the
standby dies under load, and the session classes of routed flavours."""

from __future__ import annotations

import contextvars
import gc
import threading
import time
import weakref
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from replica_support import wait_up
from routed_support import (
    PORT,
    port_of,
    replay_paused,
    replicated_table,
    routed_db,
    scalar,
    standby_stopped_later,
    streaming,
    wait_for,
)
from sqlalchemy import orm
from sqlalchemy.orm import Session

from dbconf.config import DatabaseConfig
from dbconf.errors import ConfigError
from dbconf.replicas.session import RoutingSession, WriteTrackingSession
from dbconf.runtime.database import Database

READ_ONLY = "25006"  # read_only_sql_transaction


@pytest.fixture
def db(pg_url: str, standby_url: str) -> Iterator[Database]:
    wait_for(lambda: streaming(standby_url), "the standby streaming")
    database = routed_db(pg_url, standby_url, max_lag=60)
    wait_up(database)  # a first probe round may outlast check_interval
    yield database
    database.close()


@pytest.fixture
def table(pg_url: str, standby_url: str) -> Iterator[sa.Table]:
    with replicated_table(pg_url, standby_url) as t:
        yield t


def count(session: Session, table: sa.Table) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(table)) or 0


def test_replica_reads_come_from_the_standby(
    db: Database, table: sa.Table, standby_url: str, pg_url: str
) -> None:
    def write() -> None:
        with db.session() as s:
            s.execute(table.insert().values(note="replicated"))

    contextvars.Context().run(write)  # written elsewhere: this thread has no write to wait for
    wait_for(lambda: scalar(standby_url, f"select count(*) from {table.name}") == 1, "replay")
    with db.session("reader") as s:
        assert s.scalar(PORT) == port_of(standby_url)
        assert count(s, table) == 1
        assert isinstance(s, RoutingSession)
    with db.session("reader_ac") as s:  # autocommit flavour: each statement its own
        assert s.scalar(PORT) == port_of(standby_url)
        assert s.scalar(sa.text("show transaction_read_only")) == "on"
    with db.transaction("reader") as s:
        assert s.scalar(PORT) == port_of(standby_url)
    assert isinstance(db.sessionmaker()(), WriteTrackingSession)


@pytest.mark.parametrize("flavour", ["reader", "reader_ac"])
def test_a_write_in_a_replica_session_is_a_server_error(
    db: Database, table: sa.Table, standby_url: str, flavour: str
) -> None:
    with db.session(flavour) as s:
        assert s.scalar(PORT) == port_of(standby_url)
    with pytest.raises(sa.exc.DBAPIError) as info, db.session(flavour) as s:
        s.execute(table.insert().values(note="refused"))
    assert getattr(info.value.orig, "pgcode", None) == READ_ONLY


def _holding(db: Database) -> list[int]:
    """The replicas (indexes) whose pools have a connection checked out now."""
    router = db.router
    assert router is not None
    return [i for i in range(len(router)) if router.replica_engine(i).pool.checkedout()]


@pytest.mark.parametrize("flavour", ["reader", "auto"])
def test_one_replica_per_transaction_and_a_new_choice_for_the_next(
    pg_url: str, standby_url: str, flavour: str
) -> None:
    # two replicas (the standby twice): idle, the choice alternates between transactions
    # (round robin), but every statement of one transaction stays on its first choice
    database = routed_db(pg_url, standby_url, standby_url, max_lag=60)
    try:
        wait_up(database)
        session = database.sessionmaker(flavour)()
        try:
            chosen = []
            for _ in range(4):  # autobegun transactions
                for _ in range(3):
                    assert session.scalar(PORT) == port_of(standby_url)
                    assert len(_holding(database)) == 1
                chosen.append(_holding(database)[0])
                session.commit()
                assert _holding(database) == []
            assert sorted(set(chosen)) == [0, 1]
            with session.begin():  # an explicit transaction, and a savepoint in it
                session.execute(PORT)
                first = _holding(database)
                with session.begin_nested():
                    session.execute(PORT)
                    assert _holding(database) == first
                session.execute(PORT)
                assert _holding(database) == first
            with session.begin():
                with session.begin_nested():  # the first statement inside a savepoint
                    session.execute(PORT)
                    inner = _holding(database)
                session.execute(PORT)
                assert _holding(database) == inner
                assert inner != first  # a new transaction: chosen again (round robin)
        finally:
            session.close()
    finally:
        database.close()


@pytest.mark.parametrize("flavour", ["default", "reader", "reader_ac", "auto"])
def test_a_routed_session_is_freed_without_the_cycle_collector(db: Database, flavour: str) -> None:
    # the session keeps its transaction's choice weakly: no cycle session <-> transaction
    gc.collect()
    gc.disable()
    try:
        with db.session(flavour) as s:
            s.execute(PORT)
        ref = weakref.ref(s)
        del s
        assert ref() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("flavour", ["reader", "reader_ac"])
def test_a_write_is_refused_on_the_primary_fallback_too(
    pg_url: str, table: sa.Table, flavour: str
) -> None:
    # a replica nobody listens on: ejected at the first probe, reads fall back to the primary
    database = routed_db(pg_url, "postgresql+psycopg2://postgres@127.0.0.1:1/test")
    try:
        with database.session(flavour) as s:
            assert s.scalar(PORT) == port_of(pg_url)
        with pytest.raises(sa.exc.DBAPIError) as info, database.session(flavour) as s:
            s.execute(table.insert().values(note="refused"))
        assert getattr(info.value.orig, "pgcode", None) == READ_ONLY
        with database.session(flavour) as s:  # the next transaction is read-only again
            assert s.scalar(sa.text("show transaction_read_only")) == "on"
        with database.session() as s:  # the primary flavour writes as before
            s.execute(table.insert().values(note="written"))
            assert s.scalar(sa.text("show transaction_read_only")) == "off"
    finally:
        database.close()


def test_auto_reads_on_the_standby_until_its_first_write(
    db: Database, table: sa.Table, standby_url: str, pg_url: str
) -> None:
    with db.session("auto") as s:
        assert s.scalar(PORT) == port_of(standby_url)
        s.commit()
        assert s.scalar(PORT) == port_of(standby_url)
        s.execute(table.insert().values(note="auto"))
        assert s.scalar(PORT) == port_of(pg_url)
        assert count(s, table) == 1  # its own uncommitted write
        s.commit()
        assert s.scalar(PORT) == port_of(pg_url)  # for good
    # each in a context that wrote nothing (else its reads go to the primary: read your writes)
    contextvars.Context().run(_for_update, db, table, standby_url, pg_url)
    contextvars.Context().run(_flush, db, table, standby_url, pg_url)


def _for_update(db: Database, table: sa.Table, standby: str, primary: str) -> None:
    with db.session("auto") as s:  # SELECT ... FOR UPDATE counts as a write
        assert s.scalar(PORT) == port_of(standby)
        s.execute(sa.select(table).with_for_update())
        assert s.scalar(PORT) == port_of(primary)


class Note:
    pass


def _flush(db: Database, table: sa.Table, standby: str, primary: str) -> None:
    registry = orm.registry()
    registry.map_imperatively(Note, table)
    try:
        with db.session("auto") as s:  # and so does a flush
            assert s.scalar(PORT) == port_of(standby)
            s.add(Note())
            s.flush()
            assert s.scalar(PORT) == port_of(primary)
    finally:
        registry.dispose()


def _read_in_thread(db: Database, table: sa.Table) -> tuple[int, int]:
    out: list[tuple[int, int]] = []

    def read() -> None:
        with db.session("reader") as s:
            out.append((s.scalar(PORT) or 0, count(s, table)))

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    return out[0]


def test_read_your_writes_by_position(
    server_admin: None, db: Database, table: sa.Table, standby_url: str, pg_url: str
) -> None:
    router = db.router
    assert router is not None
    with replay_paused(standby_url):
        with db.session() as s:
            s.execute(table.insert().values(note="mine"))
        assert router.last_write() is not None
        # this thread reads its write on the primary (read-only there)...
        with db.session("reader") as s:
            assert (s.scalar(PORT), count(s, table)) == (port_of(pg_url), 1)
            assert s.scalar(sa.text("show transaction_read_only")) == "on"
        # ...another thread, which wrote nothing, reads the stale standby
        assert _read_in_thread(db, table) == (port_of(standby_url), 0)
        # no timer: probes keep coming, the replay position does not, so still the primary
        first = db.replica_status()[0].checked_at
        assert first is not None
        wait_for(lambda: (db.replica_status()[0].checked_at or first) > first, "a new probe")
        wait_for(lambda: (db.replica_status()[0].checked_at or first) > first, "another probe")
        with db.session("reader") as s:
            assert s.scalar(PORT) == port_of(pg_url)

    # once the standby replayed the write (by LSN), this thread reads there again
    def back_on_standby() -> bool:
        with db.session("reader") as s:
            return s.scalar(PORT) == port_of(standby_url) and count(s, table) == 1

    wait_for(back_on_standby, "reads back on the standby")


def test_the_standby_stopped_under_reading_threads(
    server_admin: None, db: Database, table: sa.Table, standby_url: str, pg_url: str
) -> None:
    errors: list[BaseException] = []
    ports: list[int] = []
    stop = threading.Event()

    # one statement per scope: only a scope's first statement is retried (a second one would
    # fail after rows of the first reached the caller)
    port_and_count = sa.select(
        sa.func.inet_server_port(), sa.select(sa.func.count()).select_from(table).scalar_subquery()
    )

    def reader() -> None:
        while not stop.is_set():
            try:
                with db.session("reader") as s:
                    ports.append(s.execute(port_and_count).one()[0])
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    with standby_stopped_later(standby_url) as stop_standby:
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: port_of(standby_url) in ports, "reads on the standby")
            stop_standby()
            time.sleep(5)  # load on the dead replica (a duration, not an assertion)
            assert port_of(pg_url) in ports[-50:]
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert errors == []
    assert db.replica_status()[0].state in ("ejected", "up")

    def back() -> bool:
        # a commit on the primary: the replay lag of a restarted standby is measured from the
        # last transaction it replayed, which on a quiet primary may be minutes old
        scalar(pg_url, "select txid_current()")
        return _read_in_thread(db, table)[0] == port_of(standby_url)

    wait_for(back, "the standby back")


def test_the_first_read_dies_mid_statement_and_is_retried(
    server_admin: None, db: Database, table: sa.Table, standby_url: str, pg_url: str
) -> None:
    with db.session("reader") as s:  # a pooled replica connection
        assert s.scalar(PORT) == port_of(standby_url)
        pid = s.scalar(sa.text("select pg_backend_pid()"))
    # its backend is killed while it waits in the pool; pre-ping would reconnect it, so
    # the statement itself dies: retried once on the primary (the replica is ejected)
    router = db.router
    assert router is not None
    engine = router.replica_engine(0)
    engine.pool._pre_ping = False
    assert scalar(standby_url, "select pg_terminate_backend(:p)", p=pid) is True
    with db.session("reader") as s:
        assert s.scalar(PORT) == port_of(pg_url)
    assert db.replica_status()[0].state == "ejected"
    assert "a session's connection failed" in (db.replica_status()[0].reason or "")


def test_plain_sessions_without_replicas(pg_url: str) -> None:
    database = Database("plain", DatabaseConfig.model_validate({"url": pg_url}))
    try:
        assert database.router is None
        assert database.sessionmaker().class_.__mro__[1] is Session
    finally:
        database.close()


def test_read_your_writes_off_keeps_primary_sessions_plain(pg_url: str, standby_url: str) -> None:
    database = routed_db(pg_url, standby_url, read_your_writes=False)
    try:
        assert database.sessionmaker().class_.__mro__[1] is Session
        assert issubclass(database.sessionmaker("reader").class_, RoutingSession)
    finally:
        database.close()


class OwnSession(Session):
    pass


class PartitionedSession(Session):
    def get_bind(self, *args: object, **kw: object) -> sa.Engine:
        raise NotImplementedError


def test_a_flavour_class_is_subclassed_or_refused(pg_url: str, standby_url: str) -> None:
    own = f"{__name__}:OwnSession"
    partitioned = f"{__name__}:PartitionedSession"
    database = Database(
        "main",
        DatabaseConfig.model_validate(
            {
                "url": pg_url,
                "replicas": [{"url": standby_url}],
                "sessions": {
                    "own": {"role": "replica", "class": own},
                    "partitioned": {"role": "replica", "class": partitioned},
                    "partitioned_primary": {"class": partitioned},
                },
            }
        ),
    )
    try:
        cls = database.sessionmaker("own").class_
        assert issubclass(cls, RoutingSession)
        assert issubclass(cls, OwnSession)
        with database.session("own") as s:
            assert s.scalar(PORT) == port_of(standby_url)
        with pytest.raises(ConfigError, match="overrides get_bind") as info:
            database.sessionmaker("partitioned")
        assert "sessions.partitioned" in str(info.value)
        assert issubclass(database.sessionmaker("partitioned_primary").class_, PartitionedSession)
    finally:
        database.close()
