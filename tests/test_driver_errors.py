"""hide_parameters keeps bound values out of error text, even where the server echoes them;
connect-failure hints. Real PostgreSQL and MariaDB errors, and generated messages."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from hypothesis import assume, given
from hypothesis import strategies as st

from dbconf.config import DatabaseConfig
from dbconf.runtime.registry import Database
from dbconf.sessions.driver_errors import connect_hint, hide_values

# values with the characters drivers escape: quotes, backslashes, non-ASCII
SECRETS = [
    "4111-1111-1111-1111",
    "O'Brien-7731",
    'say "cheese" 55',
    "back\\slash-99",
    "ünï-cödé-42",
]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def caught(db: Database, sql: str, params: dict[str, Any]) -> sa_exc.DBAPIError:
    with pytest.raises(sa_exc.DBAPIError) as err, db.session() as s:
        s.execute(sa.text(sql), params)
    return err.value


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, sa.Engine]]:
    """(backend, url, admin engine) with a table ``<name> (card varchar primary key, n int
    not null)`` holding one row per secret."""
    backend = request.param
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "maria_url")
    table = unique("t_hide")
    admin = sa.create_engine(url, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (card varchar(60) PRIMARY KEY, n int NOT NULL)")
        for secret in SECRETS:
            conn.execute(sa.text(f"INSERT INTO {table} VALUES (:c, 1)"), {"c": secret})
    yield backend, url, table  # type: ignore[misc]
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    admin.dispose()


def statements(backend: str, table: str) -> list[tuple[str, str]]:
    """(SQL with :v, what the primary message still says) for errors that echo :v."""
    cases = [
        (f"INSERT INTO {table} VALUES (:v, 2)", "uplicate"),  # DETAIL / Duplicate entry '…'
        (f"INSERT INTO {table} VALUES (:v, NULL)", "null"),  # DETAIL: Failing row contains
    ]
    if backend == "postgresql":
        cases.append(("SELECT CAST(:v AS int)", "invalid input syntax for type integer"))
    else:  # the near '…' excerpt quotes the statement, value inlined by PyMySQL
        cases.append((f"SELECT FROM {table} WHERE card = :v", "error in your SQL syntax"))
    return cases


@pytest.mark.parametrize("secret", SECRETS)
def test_hide_parameters_keeps_echoed_values_out_of_errors(
    server: tuple[str, str, str], secret: str, assert_no_secret: Callable[..., None]
) -> None:
    backend, url, table = server
    db = Database("main", DatabaseConfig.model_validate({"url": url}))  # hide_parameters on
    shown = Database("shown", DatabaseConfig.model_validate({"url": url, "hide_parameters": False}))
    try:
        for sql, primary in statements(backend, table):
            error = caught(db, sql, {"v": secret})
            assert primary in str(error)
            assert error.orig is not None
            if backend == "postgresql":
                assert f"[SQLSTATE {error.orig.pgcode};" in str(error)  # type: ignore[attr-defined]
            else:
                assert isinstance(error.orig.args[0], int)  # the MariaDB error number stays
            assert_no_secret([error, str(error), error.orig, *error.orig.args], secret)
            # hide_parameters off: the same error, left as the server wrote it
            echoed = str(caught(shown, sql, {"v": secret}).orig)
            if secret.split("-")[0] in echoed:  # (MariaDB's NOT NULL error quotes no value)
                assert "values hidden by hide_parameters" in str(error)
    finally:
        db.dispose()
        shown.dispose()


def test_errors_keep_their_sqlalchemy_class(pg_url: str) -> None:
    db = Database("main", DatabaseConfig.model_validate({"url": pg_url}))
    try:
        assert isinstance(caught(db, "SELECT CAST(:v AS int)", {"v": "x-1"}), sa_exc.DataError)
        error = caught(db, "SELECT CAST(:v AS int) FROM no_such_table", {"v": "x-1"})
        assert isinstance(error, sa_exc.ProgrammingError)
        assert 'relation "no_such_table" does not exist' in str(error)  # identifiers stay
    finally:
        db.dispose()


# --- generated messages ---------------------------------------------------------------------


class FakePgError(Exception):
    pgcode = "22P02"


value_text = st.text(min_size=1, max_size=40).filter(
    lambda v: v.strip() == v and "\n" not in v and v.strip("*") != ""  # "***" is the mask
)


def hidden_pg_error(value: str, other: int = 0) -> sa_exc.DBAPIError:
    message = (
        f'invalid input syntax for type integer: "{value}"\n'
        f"DETAIL:  Key (card)=({value}) already exists.\n"
        f"LINE 1: SELECT CAST('{value.replace(chr(39), chr(39) * 2)}' AS int)\n"
        "                    ^\n"
    )
    params = {"v": value, "n": other}
    error = sa_exc.DataError("SELECT CAST(%(v)s AS int)", params, FakePgError(message), True)
    hide_values(error)
    return error


def hidden_mysql_errors(value: str) -> list[sa_exc.DBAPIError]:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')
    errors = []
    for message in (
        f"Duplicate entry '{value}' for key 'PRIMARY'",
        f"You have an error in your SQL syntax; near 'FROM t WHERE card = '{escaped}'' at line 1",
    ):
        orig = Exception(1062, message)
        errors.append(sa_exc.IntegrityError("INSERT …", [{"v": value}], orig, True))
        hide_values(errors[-1])
    return errors


def fixed_text(errors: list[sa_exc.DBAPIError]) -> str:
    """The text of the same errors for a one-character value: what never depends on it."""
    return " ".join(f"{e} {e.orig}" for e in errors)


@given(value=value_text, other=st.integers())
def test_postgresql_echo_is_removed_for_any_value(value: str, other: int) -> None:
    error = hidden_pg_error(value, other)
    text = str(error)
    assert f'"{value}"' not in text
    assert "DETAIL" not in text
    assert "LINE 1" not in text
    if value not in "invalid input syntax for type integer:":  # (else masked there too)
        assert "invalid input syntax for type integer:" in text
    assert "[SQLSTATE 22P02; values hidden by hide_parameters]" in text
    if len(value) >= 4:
        assume(value not in fixed_text([hidden_pg_error("§")]))
        assert value not in text
        assert value not in str(error.orig)


@given(value=value_text)
def test_mysql_echo_is_removed_for_any_value(value: str) -> None:
    errors = hidden_mysql_errors(value)
    for error in errors:
        assert f"'{value}'" not in str(error)
        assert error.orig is not None
        assert error.orig.args[0] == 1062
    if len(value) >= 4:
        assume(value not in fixed_text(hidden_mysql_errors("§")))
        assert value not in fixed_text(errors)


def test_errors_without_parameters_are_left_alone() -> None:
    orig = FakePgError('relation "t" does not exist\nLINE 1: SELECT * FROM t\n')
    error = sa_exc.ProgrammingError("SELECT * FROM t", None, orig)
    before = str(error)
    hide_values(error)
    assert str(error) == before


@pytest.mark.parametrize(
    ("orig", "hint"),
    [
        (Exception(1045, "Access denied for user 'app'@'h' (using password: YES)"), "password"),
        (Exception(1049, "Unknown database 'x'"), "create the database"),
        (Exception(2003, "Can't connect to MySQL server on 'h'"), "server is running"),
        (Exception('FATAL:  password authentication failed for user "app"'), "password"),
        (Exception('FATAL:  database "x" does not exist'), "create the database"),
        (Exception('could not translate host name "nohost" to address'), "server is running"),
        (Exception("something else"), "check the URL"),
    ],
)
def test_connect_hints(orig: Exception, hint: str) -> None:
    assert hint in connect_hint(orig)
