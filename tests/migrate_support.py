"""Helpers of the migration tests: scratch databases on the real servers, migration scripts."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from dbconf.integrations.alembic_files import write_directory

BACKENDS = ["sqlite", "postgresql", "mariadb"]


@contextmanager
def scratch_databases(backend: str, server_url: str, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """``make()`` gives the URL of a new empty database (a unique name on the server, a
    temp file on SQLite); every database made is dropped at the end."""
    made: list[str] = []

    def make() -> str:
        name = f"dbconf_mig_{uuid.uuid4().hex[:10]}"
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / name}.db"
        admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        finally:
            admin.dispose()
        made.append(name)
        return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)

    try:
        yield make
    finally:
        if made:
            admin = sa.create_engine(
                server_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
            )
            force = " WITH (FORCE)" if backend == "postgresql" else ""
            try:
                with admin.connect() as conn:
                    for name in made:
                        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
            finally:
                admin.dispose()


def write_scripts(path: Path, name: str, revisions: list[tuple[str, str]]) -> Path:
    """A migration directory (``dbconf migrations init``'s files) with a linear chain of
    revisions: each ``(revision id, body of upgrade())``."""
    write_directory(path, name)
    down = None
    for rev, body in revisions:
        (path / "versions" / f"{rev}.py").write_text(
            f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\n"
            "depends_on = None\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n\n"
            "def upgrade():\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"
        )
        down = rev
    return path


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def versions(url: str, table: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text(f"select version_num from {table}"))]
    finally:
        engine.dispose()
