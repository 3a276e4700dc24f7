"""PostgreSQL: psycopg2 and psycopg 3 (sync), asyncpg (the default async driver) and psycopg 3
async (``psycopg_async``).

libpq drivers (psycopg2, psycopg, psycopg_async): ``connect`` → ``connect_timeout`` (whole
seconds, rounded up); ``statement``/``lock``/``idle_in_transaction`` → ``-c statement_timeout``,
``-c lock_timeout``, ``-c idle_in_transaction_session_timeout`` in libpq's ``options`` (ms,
rounded up); ``application_name`` → ``application_name``.

asyncpg: ``connect`` → ``timeout`` (seconds, as given); ``statement``/``lock``/
``idle_in_transaction`` and ``application_name`` → ``server_settings`` (``statement_timeout``
etc. as ms strings, ``application_name``), merged with a user ``server_settings`` that sets
other names. asyncpg takes no libpq keyword (``?sslmode=`` is ``?ssl=`` there).

A lock not available (SQLSTATE 55P03: ``lock_timeout`` ran out, or ``NOWAIT``) is described by
:func:`lock_failure` (a ``LockTimeoutError``), for every driver and behind PgBouncer alike.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from dbconf.dialects.base import (
    Dialect,
    ReplicaMeasurement,
    Settings,
    ms,
    register,
    whole_seconds,
)
from dbconf.dialects.pgbouncer import install_transaction_settings, mode_of

__all__ = [
    "CONNECT_ERRORS",
    "CONNECT_SQLSTATES",
    "GUCS",
    "LIBPQ_KEYWORDS",
    "LOCK_NOT_AVAILABLE",
    "RETRY",
    "STATEMENT_TIMEOUT",
    "dialect",
    "lock_failure",
    "lsn_to_int",
    "measure_replica",
    "pg_option_names",
    "write_position",
]

# timeouts key → the server setting (GUC) it becomes in libpq's options
GUCS = {
    "statement": "statement_timeout",
    "lock": "lock_timeout",
    "idle_in_transaction": "idle_in_transaction_session_timeout",
}
# SQLSTATEs: worth retrying the whole transaction, and a statement timeout
RETRY = {"40001": "serialization failure", "40P01": "deadlock"}
STATEMENT_TIMEOUT = "57014"
# lock_not_available: lock_timeout ran out, or a NOWAIT (SELECT … FOR UPDATE/SHARE NOWAIT, LOCK
# TABLE … NOWAIT) found the lock taken; the server's text tells them apart, but in its own
# language (lc_messages), so both get the one message of lock_failure()
LOCK_NOT_AVAILABLE = "55P03"
# asyncpg's connect failures carry the server's SQLSTATE (the libpq drivers' do not)
CONNECT_SQLSTATES = {"28000": "credentials", "28P01": "credentials", "3D000": "database"}
# a libpq failure to connect has no SQLSTATE (no session yet): its message, by what to check
CONNECT_ERRORS = (
    (
        re.compile(
            r"password authentication failed|no password supplied|authentication failed"
            r"|no pg_hba\.conf entry|role \".*\" does not exist"
        ),
        "credentials",
    ),
    (re.compile(r"database \".*\" does not exist"), "database"),
    (
        re.compile(
            r"connection refused|could not connect|could not translate host name|timeout "
            r"expired|no route to host|network is unreachable|server closed the connection",
            re.IGNORECASE,
        ),
        "unreachable",
    ),
)


# libpq 17's connection keywords (psycopg2 and psycopg pass the query through to libpq, which
# rejects any other keyword at connect).
LIBPQ_KEYWORDS = frozenset(
    [
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "require_auth",
        "channel_binding",
        "connect_timeout",
        "client_encoding",
        "options",
        "application_name",
        "fallback_application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "replication",
        "gssencmode",
        "sslmode",
        "requiressl",
        "sslnegotiation",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslcertmode",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "krbsrvname",
        "gsslib",
        "gssdelegation",
        "service",
        "target_session_attrs",
        "load_balance_hosts",
    ]
)
# Query parameters that name a connection part, and the URL field they mean.
LIBPQ_PARTS = {"user": "username", "password": "password", "dbname": "database"}
LIBPQ_PARTS |= {"host": "host", "hostaddr": "host", "port": "port"}


def pg_option_names(options: str) -> list[str]:
    """The settings a libpq ``options`` string sets, as the server reads them: ``-c name=v``,
    ``-cname=v`` and ``--name=v``, names case-insensitive with dashes for underscores."""
    tokens = re.split(r"(?<!\\)\s+", options.strip())
    names = []
    for i, part in enumerate(tokens):
        if part == "-c" and i + 1 < len(tokens):
            body = tokens[i + 1]
        elif part.startswith(("-c", "--")):
            body = part[2:]
        else:
            continue
        if body:
            names.append(body.split("=", 1)[0].replace("-", "_").lower())
    return names


def driver_args(cfg: Settings) -> dict[str, Any]:
    t = cfg.timeouts
    out: dict[str, Any] = {}
    if t.connect is not None:
        out["connect_timeout"] = whole_seconds(t.connect)
    if cfg.application_name is not None:
        out["application_name"] = cfg.application_name
    # behind a pooler: SET LOCAL per transaction instead (dbconf/dialects/pgbouncer.py)
    values = {} if mode_of(cfg) else {key: getattr(t, key) for key in GUCS}
    options = " ".join(f"-c {GUCS[k]}={ms(v)}" for k, v in values.items() if v is not None)
    if options:
        out["options"] = options
    return out


def asyncpg_args(cfg: Settings) -> dict[str, Any]:
    """asyncpg.connect(): ``timeout`` (seconds) and ``server_settings`` (strings)."""
    t = cfg.timeouts
    out: dict[str, Any] = {}
    if t.connect is not None:
        out["timeout"] = t.connect or None  # 0: no connect timeout, as libpq
    settings = {GUCS[k]: str(ms(v)) for k in GUCS if (v := getattr(t, k)) is not None}
    if mode_of(cfg):  # behind a pooler: SET LOCAL per transaction (dbconf/dialects/pgbouncer.py)
        settings = {}
    if cfg.application_name is not None:
        settings["application_name"] = cfg.application_name
    if settings:
        out["server_settings"] = settings
    return out


# asyncpg.connect()'s keyword arguments a URL query string can carry (SQLAlchemy passes the
# query through as strings), and every keyword argument (plus SQLAlchemy's adapter's own).
ASYNCPG_QUERY = frozenset(
    [
        "host",
        "port",
        "user",
        "password",
        "passfile",
        "database",
        "ssl",
        "direct_tls",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "prepared_statement_cache_size",
    ]
)
ASYNCPG_CONNECT_ARGS = ASYNCPG_QUERY | {
    "timeout",
    "statement_cache_size",
    "max_cached_statement_lifetime",
    "max_cacheable_statement_size",
    "command_timeout",
    "connection_class",
    "record_class",
    "server_settings",
    "prepared_statement_name_func",
    "async_creator_fn",
}
ASYNCPG_PARTS = {"user": "username", "password": "password", "database": "database"}
ASYNCPG_PARTS |= {"host": "host", "port": "port"}
# psycopg (3) connect(): libpq keywords plus its own Python arguments
PSYCOPG_CONNECT_ARGS = LIBPQ_KEYWORDS | {
    "autocommit",
    "prepare_threshold",
    "row_factory",
    "cursor_factory",
    "context",
    "async_creator_fn",
}


def setup(engine: sa.Engine, cfg: Settings) -> None:
    """``disconnect_sqlstates``: errors with these SQLSTATEs count as disconnects; behind a
    pooler, the timeouts set at each transaction's start."""
    install_transaction_settings(engine, cfg)
    if not cfg.disconnect_sqlstates:
        return
    states = frozenset(cfg.disconnect_sqlstates)

    @event.listens_for(engine, "handle_error")
    def _classify(context: sa.engine.ExceptionContext) -> None:
        orig = context.original_exception
        code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
        if code in states:
            context.is_disconnect = True


def lock_failure(orig: BaseException | None, said: str, cfg: Settings) -> str | None:
    """SQLSTATE 55P03 (see :data:`LOCK_NOT_AVAILABLE`): what happened and what to do."""
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if code != LOCK_NOT_AVAILABLE:
        return None
    lock = cfg.timeouts.lock
    limit = f"lock_timeout (timeouts.lock {lock:g}s)" if lock else "lock_timeout"
    return (
        f"a lock held by another transaction was not available ({said}): the statement "
        f"waited past {limit}, or asked not to wait (NOWAIT). PostgreSQL aborted the "
        "transaction: roll it back (or to a savepoint); the connection stays usable. Find the "
        "blocking transaction (pg_blocking_pids(pid) with pg_stat_activity and pg_locks) and "
        "make it shorter, or raise timeouts.lock if waiting longer is acceptable"
    )


def server_limit(conn: sa.Connection) -> tuple[int, int]:
    rows = conn.execute(
        sa.text(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('max_connections', 'superuser_reserved_connections', 'reserved_connections')"
        )
    ).all()
    settings = {str(name): int(value) for name, value in rows}
    reserved = settings.get("superuser_reserved_connections", 0)
    reserved += settings.get("reserved_connections", 0)
    return settings["max_connections"], reserved


# The replay lag of a standby: 0 when it has replayed all it received (an idle primary sends
# nothing, so now() - last replay timestamp would grow without any lag), else the age of the
# last transaction it replayed. The WAL receiver's status says whether it streams at all.
MEASURE_REPLICA = sa.text(
    "SELECT pg_is_in_recovery(), "
    "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END, "
    "pg_last_wal_replay_lsn()::text, "
    "(SELECT status FROM pg_stat_wal_receiver)"
)


def lsn_to_int(lsn: str | None) -> int | None:
    """A ``pg_lsn`` as text (``'16/B374D848'``) → an int (``X << 32 | Y``); None stays None."""
    if lsn is None:
        return None
    high, _, low = lsn.partition("/")
    return int(high, 16) << 32 | int(low, 16)


def measure_replica(conn: sa.Connection) -> ReplicaMeasurement:
    """Lag (seconds), replayed LSN and why not usable, measured on a standby's connection."""
    in_recovery, lag, replay_lsn, receiver = conn.execute(MEASURE_REPLICA).one()
    if not in_recovery:
        return ReplicaMeasurement(None, None, "not a standby (pg_is_in_recovery() is false)")
    position = lsn_to_int(replay_lsn)
    if receiver != "streaming":
        state = receiver or "no WAL receiver"
        return ReplicaMeasurement(None, position, f"not streaming from its primary ({state})")
    if lag is None:  # nothing replayed since the standby started and receive != replay
        return ReplicaMeasurement(None, position, "has replayed no transaction yet")
    return ReplicaMeasurement(max(float(lag), 0.0), position)


def write_position(conn: sa.Connection) -> int | None:
    """The WAL insert position of the primary, read on the connection that just committed:
    a standby whose replay LSN has reached it has replayed that commit.

    The insert position is never before the commit record's end (``pg_current_wal_lsn()``,
    the write position, can be with ``synchronous_commit: off``), so a replica is never taken
    for having the write too early; it may be taken for not having it a little longer (other
    sessions' records, or a page header when the commit ends a WAL page): the read then goes
    to the primary, which is correct."""
    return lsn_to_int(conn.execute(sa.text("SELECT pg_current_wal_insert_lsn()::text")).scalar())


dialect = register(
    Dialect(
        name="postgresql",
        backends=("postgresql",),
        drivers={"psycopg2": "postgresql", "psycopg": "psycopg"},
        async_drivers={"asyncpg": "asyncpg", "psycopg_async": "psycopg"},
        default_async_driver="asyncpg",
        twins={"psycopg": "psycopg_async", "psycopg_async": "psycopg"},
        # SQLAlchemy's own default differs between versions (psycopg 3 on 2.1); "postgres://"
        # is Heroku's spelling
        default_drivers={"postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2"},
        translated_drivers=frozenset({"psycopg2", "psycopg", "psycopg2cffi"}),
        driver_args=driver_args,
        async_driver_args={"asyncpg": asyncpg_args, "psycopg_async": driver_args},
        default_port=5432,
        setup=setup,
        lock_failure=lock_failure,
        server_limit=server_limit,
        query_keys={
            "psycopg2": LIBPQ_KEYWORDS,
            "psycopg": LIBPQ_KEYWORDS,
            "psycopg_async": LIBPQ_KEYWORDS,
            "asyncpg": ASYNCPG_QUERY,
        },
        connect_args={
            "psycopg2": LIBPQ_KEYWORDS
            | {"connection_factory", "cursor_factory", "async", "async_"},
            "psycopg": PSYCOPG_CONNECT_ARGS,
            "psycopg_async": PSYCOPG_CONNECT_ARGS,
            "asyncpg": ASYNCPG_CONNECT_ARGS,
        },
        # SQLAlchemy's multi-host URL (?host=a:1&host=b:2): psycopg2/psycopg/asyncpg dialects
        multi_host_drivers=frozenset(
            {"psycopg2", "psycopg2cffi", "psycopg", "psycopg_async", "asyncpg"}
        ),
        query_parts={
            "psycopg2": LIBPQ_PARTS,
            "psycopg": LIBPQ_PARTS,
            "psycopg_async": LIBPQ_PARTS,
            "asyncpg": ASYNCPG_PARTS,
        },
        measure_replica=measure_replica,
        write_position=write_position,
        read_only_session_sql="SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        read_only_transaction_sql="SET TRANSACTION READ ONLY",
    )
)
