"""Helpers of the routed-session tests (sync and async): a database with the standby as its
replica, a replicated table, replay pause/resume and stop/start of the standby (on top of the
router tests' :mod:`replica_support`)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from replica_support import pg_ctlcluster, wait_for

from dbconf.config import DatabaseConfig
from dbconf.runtime.database import Database

FLAVOURS = {
    "default": {},
    "reader": {"role": "replica"},
    "auto": {"role": "auto"},
    "reader_ac": {"role": "replica", "autocommit": True},
}
PORT = sa.select(sa.func.inet_server_port())


def routed_db(primary: str, *replicas: str, **routing: Any) -> Database:
    """A Database on ``primary`` whose replicas are ``replicas``; fast probes by default."""
    routing.setdefault("check_interval", 0.2)
    data = {
        "url": primary,
        "replicas": [{"url": url} for url in replicas],
        "routing": routing,
        "sessions": FLAVOURS,
    }
    return Database("main", DatabaseConfig.model_validate(data))


def port_of(url: str) -> int:
    port = sa.make_url(url).port
    assert port is not None
    return port


def scalar(url: str, sql: str, **params: Any) -> Any:
    engine = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    except sa.exc.OperationalError:
        return None
    finally:
        engine.dispose()


@contextmanager
def replicated_table(primary: str, standby: str) -> Iterator[sa.Table]:
    """A fresh table ``(id, note)`` on the primary, yielded once the standby has it."""
    name = f"routed_{secrets.token_hex(4)}"
    table = sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("note", sa.String(40)),
    )
    engine = sa.create_engine(primary, poolclass=sa.NullPool)
    try:
        table.create(engine)
        wait_for(lambda: scalar(standby, f"select to_regclass('{name}') is not null"), name)
        yield table
    finally:
        table.drop(engine, checkfirst=True)
        engine.dispose()


def streaming(standby: str) -> bool:
    return scalar(standby, "select status = 'streaming' from pg_stat_wal_receiver") is True


@contextmanager
def replay_paused(standby: str) -> Iterator[None]:
    """The standby's replay paused for the block (resumed in any case)."""
    scalar(standby, "select pg_wal_replay_pause()")
    try:
        wait_for(
            lambda: scalar(standby, "select pg_get_wal_replay_pause_state()") == "paused", "pause"
        )
        yield
    finally:
        scalar(standby, "select pg_wal_replay_resume()")


@contextmanager
def standby_stopped_later(standby: str) -> Iterator[Callable[[], None]]:
    """Yield ``stop()``; whatever happens, the standby is started again afterwards and the
    block ends only once it streams from its primary again."""
    try:
        yield lambda: pg_ctlcluster(standby, "stop")
    finally:
        if scalar(standby, "select 1") is None:
            pg_ctlcluster(standby, "start")
        wait_for(lambda: streaming(standby), "the standby streaming again", 60)
