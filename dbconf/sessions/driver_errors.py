"""What dbconf does with the text of driver errors: hints for failures to connect, and the
bound values that servers echo into their messages, removed when ``hide_parameters`` is on.

Both are used by the ``handle_error`` listener of
:func:`dbconf.sessions.resilience.install_error_types`.

**Connect failures** (:func:`connect_hint`): PostgreSQL (psycopg2, psycopg 3) says what
failed in the message text only (no SQLSTATE before the session exists); asyncpg gives the
server's SQLSTATE, or raises the socket's own OSError when the server is unreachable;
MariaDB/MySQL (PyMySQL, aiomysql) gives an error number. Each is sorted into wrong
credentials, missing database or unreachable server.

**Hidden values** (:func:`hide_values`). SQLAlchemy's ``hide_parameters`` leaves out the
``[parameters: …]`` line, but the server's own message quotes values: PostgreSQL's primary
message (``invalid input syntax for type integer: "4111-…"``), its ``DETAIL`` (``Key
(card)=(4111-…) already exists``, ``Failing row contains (…)``) and ``LINE`` (the statement
with psycopg2's client-side interpolated values); MariaDB's ``Duplicate entry '4111-…'`` and
the ``near '…'`` excerpt of a syntax error (the statement with PyMySQL's interpolated values).
For an error with bound parameters, the driver exception's text (``args``) and so the
SQLAlchemy error's text are rewritten, in place:

1. only the first line of the server's message is kept (PostgreSQL ``DETAIL``, ``HINT``,
   ``LINE``, ``CONTEXT``… lines are dropped);
2. a MariaDB/MySQL ``near '…'`` excerpt becomes ``near '***'``;
3. in what is left, every occurrence of a bound value of 4 or more characters (as given, or
   as the driver escapes it) becomes ``***``, and a quoted ``'…'``/``"…"`` token equal to a
   shorter bound value becomes ``'***'``;
4. if anything was removed, `` [SQLSTATE xxxxx; values hidden by hide_parameters]`` (PostgreSQL)
   or `` [values hidden by hide_parameters]`` is appended.

The SQLSTATE (``orig.pgcode``, or ``orig.sqlstate`` for psycopg 3 and asyncpg) and MySQL
error number stay. Not rewritten: psycopg2's
read-only ``orig.pgerror`` and ``orig.diag`` (the server's full text, for code that asks for
it), the statement text (placeholders; literals written into the SQL itself are shown), and
what the server itself logs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import sqlalchemy.exc as sa_exc

from dbconf.dialects import mysql as mysql_dialect
from dbconf.dialects import postgresql

__all__ = ["connect_hint", "hide_values", "is_auth_failure"]

_MIN_CONTAINED = 4  # shorter values are masked only as a whole quoted token

_CREDENTIALS = (
    "check the user name and password (password, password_file or the URL) and that the "
    "server lets this user connect from this host"
)
_DATABASE = (
    "create the database on the server, or correct the database name (database: or the URL's path)"
)
_UNREACHABLE = (
    "check that the server is running and reachable at the configured host and port "
    "(host:, port:, firewall, DNS); timeouts.connect bounds the wait"
)
_OTHER = "check the URL, the credentials and that the server is reachable"

_HINTS = {"credentials": _CREDENTIALS, "database": _DATABASE, "unreachable": _UNREACHABLE}


def connect_hint(orig: BaseException | None) -> str:
    """What to check when connecting failed with the driver error ``orig``: an OSError
    (asyncpg raises socket errors and timeouts unwrapped) means unreachable."""
    args = getattr(orig, "args", ())
    state = getattr(orig, "sqlstate", None)  # asyncpg through SQLAlchemy, psycopg 3
    if isinstance(orig, OSError | asyncio.TimeoutError) or isinstance(
        getattr(orig, "__cause__", None), OSError | asyncio.TimeoutError
    ):
        kind: str | None = "unreachable"
    elif args and type(args[0]) is int:
        kind = mysql_dialect.CONNECT_ERRORS.get(args[0])
    elif isinstance(state, str) and state in postgresql.CONNECT_SQLSTATES:
        kind = postgresql.CONNECT_SQLSTATES[state]
    else:
        text = str(orig)
        kind = next((k for pattern, k in postgresql.CONNECT_ERRORS if pattern.search(text)), None)
    return _HINTS[kind] if kind is not None else _OTHER


AUTH_SQLSTATES = frozenset({"28P01", "28000"})  # PostgreSQL: invalid password, authorization
MYSQL_ACCESS_DENIED = 1045  # MySQL/MariaDB: access denied (wrong password)


def is_auth_failure(error: BaseException) -> bool:
    """Whether connecting failed because the server refused the credentials: PostgreSQL
    SQLSTATE 28P01/28000 (asyncpg, psycopg 3 when it has one; the libpq drivers say it in
    the message only) or MySQL/MariaDB error 1045."""
    orig = getattr(error, "orig", None) or error
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str):
        return state in AUTH_SQLSTATES
    args = getattr(orig, "args", ())
    if args and type(args[0]) is int:
        return args[0] == MYSQL_ACCESS_DENIED
    text = str(orig)
    return any(k == "credentials" and p.search(text) for p, k in postgresql.CONNECT_ERRORS)


# --- hide_parameters ----------------------------------------------------------------------


def _texts(params: Any) -> Iterator[str]:
    """The text of every bound value in ``params`` (a dict, a sequence, or many of them)."""
    if isinstance(params, dict):
        for value in params.values():
            yield from _texts(value)
    elif isinstance(params, list | tuple):
        for value in params:
            yield from _texts(value)
    elif isinstance(params, bytes | bytearray | memoryview):
        yield bytes(params).decode("utf-8", "replace")
    elif params is not None and not isinstance(params, bool):
        yield str(params)


def _variants(value: str) -> set[str]:
    """``value`` as given and as the drivers escape it inside a quoted literal."""
    mysql = value.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')
    return {value, value.replace("'", "''"), mysql}


def _mask(line: str, params: Any) -> str:
    values = {v for text in _texts(params) for v in _variants(text) if v}
    for value in sorted((v for v in values if len(v) >= _MIN_CONTAINED), key=len, reverse=True):
        line = line.replace(value, "***")
    for value in (v for v in values if len(v) < _MIN_CONTAINED):
        for quote in "'\"":
            line = line.replace(f"{quote}{value}{quote}", f"{quote}***{quote}")
    return line


def hide_values(error: sa_exc.DBAPIError) -> None:
    """Remove the bound values the server echoed from ``error``'s text and from its driver
    exception's ``args`` (see the module doc). A no-op for an error without parameters."""
    orig = error.orig
    if not error.params or orig is None:
        return
    args = orig.args
    mysql = bool(args) and type(args[0]) is int and len(args) > 1 and isinstance(args[1], str)
    if mysql:
        message = args[1]
    elif args and isinstance(args[0], str):
        message = args[0]
    else:
        return
    lines = [line for line in message.splitlines() if line.strip()]
    kept = lines[0] if lines else message
    kept = mysql_dialect.hide_statement_excerpt(kept) if mysql else kept
    kept = _mask(kept, error.params)
    if kept == message.strip():
        return
    state = None if mysql else getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    kept += f" [{f'SQLSTATE {state}; ' if state else ''}values hidden by hide_parameters]"
    before = str(orig)
    orig.args = (args[0], kept, *args[2:]) if mysql else (kept, *args[1:])
    if error.args and isinstance(error.args[0], str):
        error.args = (error.args[0].replace(before, str(orig), 1), *error.args[1:])
