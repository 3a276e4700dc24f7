"""PostgreSQL behind PgBouncer: what each driver gets when a database declares ``pooler:``.

PgBouncer passes on only the startup parameters it tracks (:data:`TRACKED_PARAMETERS`) and
refuses the others, ``options`` among them, which is where dbconf puts the PostgreSQL timeouts
without a pooler. Behind a pooler:

- ``application_name`` stays a startup parameter (PgBouncer tracks it and sets it on whichever
  server connection serves the client);
- ``timeouts.statement``/``lock`` (and ``idle_in_transaction`` in session mode) are set at the
  start of every transaction with ``SELECT set_config(name, value, true)`` (``SET LOCAL``):
  one statement, sent before the transaction's first one, on the server connection that runs
  the transaction, gone at its end, so nothing leaks to another client; ``connect`` stays the
  driver's connect timeout;
- in transaction mode server-side prepared statements are off, since a statement prepared in
  one transaction is not on the server connection of the next: psycopg 3
  ``prepare_threshold=None``; asyncpg ``statement_cache_size=0`` and SQLAlchemy's
  ``prepared_statement_cache_size=0``, so each statement is prepared as the unnamed statement
  inside its own transaction (a unique name per statement would collide with nothing, but
  stay behind on the server connection; the unnamed one is replaced by the next). psycopg2
  prepares nothing.

The pool stays the app's own (a QueuePool with the database's ``pool:`` settings): a client
connection to PgBouncer in transaction mode holds no server connection while idle, so keeping
it is cheap and saves the TCP and startup round trips a NullPool would pay on every checkout.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from dbconf.dialects.base import Settings, ms

__all__ = [
    "ADMIN_DATABASE",
    "SESSION",
    "TRACKED_PARAMETERS",
    "TRANSACTION",
    "admin_version",
    "install_transaction_settings",
    "local_settings_sql",
    "mode_of",
    "pooler_connect_args",
]

TRANSACTION = "pgbouncer_transaction"
SESSION = "pgbouncer_session"
# the startup parameters PgBouncer passes on (any other is refused unless the server's
# pgbouncer.ini lists it in ignore_startup_parameters, and then it is dropped)
TRACKED_PARAMETERS = frozenset(
    {"application_name", "client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings"}
)
# PgBouncer's admin console: a pseudo-database answering SHOW commands
ADMIN_DATABASE = "pgbouncer"
_GUCS = {
    "statement": "statement_timeout",
    "lock": "lock_timeout",
    "idle_in_transaction": "idle_in_transaction_session_timeout",
}


def mode_of(cfg: Any) -> str | None:
    """The declared pooler mode of a database's settings (None: no pooler)."""
    pooler = getattr(cfg, "pooler", None)
    return getattr(pooler, "mode", None)


def pooler_connect_args(cfg: Settings, driver: str) -> dict[str, Any]:
    """The driver arguments a pooler needs (beside the translated settings), by driver."""
    if mode_of(cfg) != TRANSACTION:
        return {}
    if driver in ("psycopg", "psycopg_async"):
        return {"prepare_threshold": None}
    if driver == "asyncpg":
        return {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
    return {}


def local_settings_sql(cfg: Settings) -> str | None:
    """The statement setting the timeouts for one transaction (None: no timeout set)."""
    t = cfg.timeouts
    values = {guc: getattr(t, key) for key, guc in _GUCS.items()}
    calls = [f"set_config('{guc}', '{ms(v)}', true)" for guc, v in values.items() if v is not None]
    return f"SELECT {', '.join(calls)}" if calls else None


def install_transaction_settings(engine: sa.Engine, cfg: Settings) -> None:
    """Behind a pooler: run :func:`local_settings_sql` as each transaction begins.

    Through the engine's own dialect ``do_begin`` (SQLAlchemy's hook for beginning a
    transaction on the driver's connection; a no-op for the PostgreSQL drivers, which begin
    at the first statement) rather than a ``begin`` event running a statement through the
    Connection: one driver round trip, none of SQLAlchemy's execution path. Skipped on an
    AUTOCOMMIT connection (no transaction for SET LOCAL to last in)."""
    sql = local_settings_sql(cfg) if mode_of(cfg) is not None else None
    if sql is None:
        return
    begin = engine.dialect.do_begin

    def _do_begin(dbapi_connection: Any) -> None:
        begin(dbapi_connection)
        if getattr(dbapi_connection.dbapi_connection, "autocommit", False):
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()

    engine.dialect.do_begin = _do_begin  # type: ignore[method-assign]


def admin_version(url: sa.URL, timeout: float = 5.0) -> tuple[str | None, str]:
    """Ask PgBouncer's admin console at ``url``'s host and port for ``SHOW VERSION``, with the
    same user (it must be in the pooler's ``admin_users`` or ``stats_users``).

    Returns (version, note): the version string, or None and why it did not answer.
    """
    conn = None
    try:
        import psycopg2  # the admin console answers the simple protocol only: no SQLAlchemy

        conn = psycopg2.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=ADMIN_DATABASE,
            connect_timeout=max(1, int(timeout)),
        )
        conn.autocommit = True  # the console takes no BEGIN
        with conn.cursor() as cur:
            cur.execute("SHOW VERSION")
            row = cur.fetchone()
        return (str(row[0]) if row else None), "answered SHOW VERSION on its admin console"
    except Exception as e:  # any failure: the console is not reachable for this user
        said = str(e).strip().splitlines()
        reason = said[0] if said else type(e).__name__
        if url.password:
            reason = reason.replace(str(url.password), "***")
        return None, (
            f"its admin console (database {ADMIN_DATABASE}) did not answer SHOW VERSION "
            f"({reason}); add the user to admin_users or stats_users in pgbouncer.ini to "
            "see it reported"
        )
    finally:
        if conn is not None:
            conn.close()
