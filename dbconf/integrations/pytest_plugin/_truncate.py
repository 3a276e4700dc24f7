"""``@pytest.mark.dbconf(transaction=True)``: note the tables a test writes, empty them after.

While such a test runs, a listener on every :class:`sqlalchemy.engine.Engine` notes the table
of each INSERT, UPDATE, DELETE (Core and ORM statements by their table, textual SQL by its
leading ``INSERT INTO``/``UPDATE``/``DELETE FROM``/``REPLACE INTO``) per database location;
afterwards those tables that exist are emptied (PostgreSQL ``TRUNCATE … RESTART IDENTITY
CASCADE``, MariaDB ``TRUNCATE`` with foreign key checks off, SQLite ``DELETE`` and its
``sqlite_sequence`` rows).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.sql.dml import UpdateBase

from dbconf.integrations.pytest_plugin._databases import LocationKey

_DML = re.compile(
    r"^\s*(?:insert\s+(?:ignore\s+)?into|replace\s+into|update|delete\s+from)\s+"
    r"[`\"\[]?(?:\w+[`\"\]]?\.[`\"\[]?)?(\w+)",
    re.IGNORECASE,
)

Listener = Callable[..., None]


def engine_key(engine: sa.Engine) -> LocationKey:
    url = engine.url
    backend = "mysql" if url.get_backend_name() == "mariadb" else url.get_backend_name()
    return (backend, url.host, url.port, url.database)


def start(touched: dict[LocationKey, set[str]]) -> Listener:
    """Begin noting tables written, into ``touched``; pass the result to :func:`stop`."""

    def note(
        conn: sa.Connection,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        context: Any,
        _executemany: bool,
    ) -> None:
        table = None
        compiled = getattr(context, "compiled", None)
        node = getattr(compiled, "statement", None)
        if isinstance(node, UpdateBase):
            table = getattr(node.table, "name", None)
        if table is None:
            match = _DML.match(statement)
            table = match.group(1) if match else None
        if table:
            touched.setdefault(engine_key(conn.engine), set()).add(table)

    event.listen(sa.Engine, "before_cursor_execute", note)
    return note


def stop(listener: Listener) -> None:
    event.remove(sa.Engine, "before_cursor_execute", listener)


def truncate(engine: sa.Engine, tables: set[str]) -> None:
    """Empty those of ``tables`` that exist in ``engine``'s database."""
    with engine.connect() as conn:
        present = [t for t in sorted(tables) if sa.inspect(conn).has_table(t)]
        if not present:
            return
        quote = conn.dialect.identifier_preparer.quote_identifier
        backend = engine.url.get_backend_name()
        if backend == "postgresql":
            names = ", ".join(quote(t) for t in present)
            conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        elif backend in ("mysql", "mariadb"):
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
            try:
                for table in present:
                    conn.exec_driver_sql(f"TRUNCATE TABLE {quote(table)}")
            finally:
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")
        else:
            for table in present:
                conn.exec_driver_sql(f"DELETE FROM {quote(table)}")
            if sa.inspect(conn).has_table("sqlite_sequence"):
                conn.execute(
                    sa.text("DELETE FROM sqlite_sequence WHERE name IN :names").bindparams(
                        sa.bindparam("names", expanding=True)
                    ),
                    {"names": present},
                )
        conn.commit()
