"""MariaDB and MySQL: PyMySQL (sync) and aiomysql (async, built on PyMySQL: same error codes).

Both drivers get the same translation. Timeouts: ``connect`` → ``connect_timeout`` (``0`` →
``None``, no connect timeout); on each new connection a ``SET SESSION`` chosen by the server's
version string: ``max_statement_time`` (MariaDB, seconds) or ``max_execution_time`` (MySQL, ms,
SELECT only), ``innodb_lock_wait_timeout``, ``idle_transaction_timeout`` (MariaDB);
``application_name`` → PyMySQL's/aiomysql's ``program_name`` (a connection attribute). With aiomysql
the ``SET SESSION`` runs in the same ``connect`` event, through SQLAlchemy's adapted connection (its
cursor runs synchronously inside SQLAlchemy's greenlet). aiomysql's ``ssl`` is an ``ssl.SSLContext``
(pass it in connect_args): the ``?ssl_*`` query keys are PyMySQL's only. Read replicas (lag from
``SHOW SLAVE STATUS``, MariaDB GTID positions): :mod:`dbconf.dialects.mysql_replica`. A lock
not available (1205 ``innodb_lock_wait_timeout`` or MariaDB's ``NOWAIT``, 3572 MySQL's
``NOWAIT``) is described by :func:`lock_failure` (a ``LockTimeoutError``).
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from dbconf.dialects.base import Dialect, Settings, Timeouts, ms, register, whole_seconds
from dbconf.dialects.mysql_replica import measure_replica, write_position

__all__ = [
    "CONNECT_ERRORS",
    "LOCK_WAIT_TIMEOUT",
    "PYMYSQL_KEYWORDS",
    "RETRY",
    "STATEMENT_TIMEOUT",
    "VARIABLES",
    "dialect",
    "hide_statement_excerpt",
    "lock_failure",
    "session_sql",
]

# timeouts key → the session variables it may become (to find one also set in init_command)
VARIABLES = {
    "statement": ("max_statement_time", "max_execution_time"),
    "lock": ("innodb_lock_wait_timeout",),
    "idle_in_transaction": ("idle_transaction_timeout",),
}
# error numbers: worth retrying the whole transaction, and a statement timeout
RETRY = {1213: "deadlock", 1020: "serialization failure"}
STATEMENT_TIMEOUT = frozenset({1969, 3024})
# a lock not available: 1205 (innodb_lock_wait_timeout ran out; MariaDB's NOWAIT and WAIT n
# too), 3572 (MySQL 8's NOWAIT)
LOCK_WAIT_TIMEOUT = frozenset({1205, 3572})
# error numbers of a failure to connect, by what the user should check
CONNECT_ERRORS = {
    1044: "credentials",  # access denied to the database
    1045: "credentials",  # access denied (password)
    1698: "credentials",  # access denied (no password given, e.g. unix_socket-only user)
    1049: "database",  # unknown database
    2003: "unreachable",  # can't connect
    2005: "unreachable",  # unknown host
    2006: "unreachable",  # server has gone away
    2013: "unreachable",  # lost connection during the handshake
}
_NEAR = re.compile(r"near '.*' at line (\d+)", re.DOTALL)


def hide_statement_excerpt(message: str) -> str:
    """A syntax error's ``near '…'`` excerpt (the statement with PyMySQL's interpolated
    values) becomes ``near '***'``."""
    return _NEAR.sub(r"near '***' at line \1", message)


# pymysql.connect()'s keyword arguments that a string can carry, plus the ssl_* keys that
# SQLAlchemy's MySQL dialect folds into ssl={...}.
PYMYSQL_KEYWORDS = frozenset(
    [
        "user",
        "password",
        "host",
        "database",
        "unix_socket",
        "port",
        "charset",
        "collation",
        "sql_mode",
        "read_default_file",
        "use_unicode",
        "client_flag",
        "init_command",
        "connect_timeout",
        "read_default_group",
        "autocommit",
        "local_infile",
        "max_allowed_packet",
        "defer_connect",
        "read_timeout",
        "write_timeout",
        "bind_address",
        "binary_prefix",
        "program_name",
        "server_public_key",
        "ssl_ca",
        "ssl_cert",
        "ssl_disabled",
        "ssl_key",
        "ssl_key_password",
        "ssl_verify_cert",
        "ssl_verify_identity",
        "compress",
        "named_pipe",
        "passwd",
        "db",
        "ssl_capath",
        "ssl_cipher",
        "ssl_check_hostname",
    ]
)
# aiomysql.connect()'s keyword arguments a URL query string can carry (SQLAlchemy coerces the
# numbers and flags), and every keyword argument.
AIOMYSQL_KEYWORDS = frozenset(
    [
        "user",
        "password",
        "host",
        "db",
        "port",
        "unix_socket",
        "charset",
        "sql_mode",
        "read_default_file",
        "use_unicode",
        "client_flag",
        "init_command",
        "connect_timeout",
        "read_default_group",
        "autocommit",
        "local_infile",
        "program_name",
        "server_public_key",
        "auth_plugin",
    ]
)
AIOMYSQL_CONNECT_ARGS = AIOMYSQL_KEYWORDS | {"conv", "cursorclass", "ssl", "echo"}
AIOMYSQL_CONNECT_ARGS |= {"async_creator_fn"}
PYMYSQL_PARTS = {"user": "username", "password": "password", "passwd": "password"}
PYMYSQL_PARTS |= {"database": "database", "db": "database", "host": "host", "port": "port"}
AIOMYSQL_PARTS = {"user": "username", "password": "password", "db": "database"}
AIOMYSQL_PARTS |= {"host": "host", "port": "port"}


def driver_args(cfg: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cfg.timeouts.connect is not None:
        out["connect_timeout"] = whole_seconds(cfg.timeouts.connect) or None
    if cfg.application_name is not None:
        out["program_name"] = cfg.application_name
    return out


def session_sql(server_version: str, t: Timeouts) -> str | None:
    """The ``SET SESSION`` statement for the timeouts, chosen by the server's version string."""
    mariadb = "mariadb" in server_version.lower()
    assigns: list[str] = []
    if t.statement is not None:
        if mariadb:
            assigns.append(f"max_statement_time = {round(t.statement, 6)!r}")
        else:
            assigns.append(f"max_execution_time = {ms(t.statement)}")
    if t.lock is not None:
        assigns.append(f"innodb_lock_wait_timeout = {whole_seconds(t.lock)}")
    if t.idle_in_transaction is not None:
        assigns.append(f"idle_transaction_timeout = {whole_seconds(t.idle_in_transaction)}")
    return f"SET SESSION {', '.join(assigns)}" if assigns else None


def setup(engine: sa.Engine, cfg: Settings) -> None:
    if engine.dialect.driver == "aiomysql" and hasattr(engine.dialect, "_send_false_to_ping"):
        # SQLAlchemy 2.0.24 (at least) pings aiomysql as it pings PyMySQL >= 1.1 (ping() with
        # no argument), which aiomysql's adapter refuses: pass reconnect=False as for old PyMySQL
        engine.dialect._send_false_to_ping = True
    t = cfg.timeouts
    if t.statement is None and t.lock is None and t.idle_in_transaction is None:
        return

    @event.listens_for(engine, "connect")
    def _set_session(dbapi_connection: Any, _record: Any) -> None:
        # aiomysql: SQLAlchemy's adapter wraps the driver's connection
        driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        sql = session_sql(str(driver.get_server_info()), t)
        if sql:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(sql)
            finally:
                cursor.close()


def lock_failure(orig: BaseException | None, said: str, cfg: Settings) -> str | None:
    """Error 1205 or 3572 (see :data:`LOCK_WAIT_TIMEOUT`): what happened and what to do."""
    args = getattr(orig, "args", ())
    if not (args and type(args[0]) is int and args[0] in LOCK_WAIT_TIMEOUT):
        return None
    lock = cfg.timeouts.lock
    limit = "innodb_lock_wait_timeout" + (f" (timeouts.lock {lock:g}s)" if lock else "")
    return (
        f"a lock held by another transaction was not available ({said}): the statement "
        f"waited past {limit}, or asked not to wait (NOWAIT). Only the statement was rolled "
        "back: the transaction is still open with its earlier work (unless the server runs "
        "with innodb_rollback_on_timeout); roll it back or go on. Find the blocking "
        "transaction (information_schema.INNODB_TRX, SHOW ENGINE INNODB STATUS) and make it "
        "shorter, or raise timeouts.lock if waiting longer is acceptable"
    )


def server_limit(conn: sa.Connection) -> tuple[int, int]:
    value = conn.execute(sa.text("SELECT @@max_connections")).scalar_one()
    return int(value), 0


dialect = register(
    Dialect(
        name="mysql",
        backends=("mysql", "mariadb"),
        drivers={"pymysql": "mysql"},
        async_drivers={"aiomysql": "aiomysql"},
        default_async_driver="aiomysql",
        default_drivers={"mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"},
        translated_drivers=frozenset({"pymysql"}),
        driver_args=driver_args,
        async_driver_args={"aiomysql": driver_args},
        default_port=3306,
        setup=setup,
        lock_failure=lock_failure,
        server_limit=server_limit,
        query_keys={"pymysql": PYMYSQL_KEYWORDS, "aiomysql": AIOMYSQL_KEYWORDS},
        # the keywords minus the ssl_* keys SQLAlchemy folds into ssl={...}, plus Python objects
        connect_args={
            "pymysql": (PYMYSQL_KEYWORDS - {"ssl_capath", "ssl_cipher", "ssl_check_hostname"})
            | {"conv", "cursorclass", "ssl", "auth_plugin_map"},
            "aiomysql": AIOMYSQL_CONNECT_ARGS,
        },
        query_parts={"pymysql": PYMYSQL_PARTS, "aiomysql": AIOMYSQL_PARTS},
        # read replicas: see dbconf/dialects/mysql_replica.py. SET TRANSACTION (no SESSION)
        # applies to the next transaction only; the drivers run outside autocommit, so the
        # statement after it starts that transaction
        measure_replica=measure_replica,
        write_position=write_position,
        read_only_session_sql="SET SESSION TRANSACTION READ ONLY",
        read_only_transaction_sql="SET TRANSACTION READ ONLY",
    )
)
