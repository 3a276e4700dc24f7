"""dbconf.integrations.alembic driven by Alembic's own command API (as the ``alembic`` command
does, with ``-x`` arguments), against real servers."""

from __future__ import annotations

import argparse
import io
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from conftest import SECRET_PASSWORD, assert_no_secret
from migrate_support import scratch_databases, tables, versions, write_scripts
from sqlalchemy.pool import NullPool

from dbconf.errors import UnknownDatabaseError
from dbconf.integrations.alembic import (
    alembic_config,
    configure_options,
    migration_engine,
    target_for,
)
from dbconf.loading.loader import load_profile

NOTES = [("n1", 'op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True))')]


def plain_config(script: Path, *x: str, output: io.StringIO | None = None) -> Config:
    """An Alembic Config as the ``alembic`` command makes it: no dbconf attributes, ``-x``."""
    config = Config(cmd_opts=argparse.Namespace(x=list(x)), output_buffer=output)
    config.set_main_option("script_location", str(script))
    return config


def test_x_arguments_and_dbconf_profile_pick_the_database(
    pg_url: str,
    write_config: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"dbconf-mig-{uuid.uuid4().hex[:8]}"
    with scratch_databases("postgresql", pg_url, tmp_path) as make:
        app, bill = make(), make()
        script = write_scripts(tmp_path / "m", "billing", NOTES)
        config = write_config(
            f"""
            profiles:
              test:
                databases:
                  primary: {{url: "{app}"}}
                  billing:
                    url: "{bill}"
                    application_name: {name}
                    pool: {{size: 3}}
                    migrations: {{version_table: billing_version}}
            """
        )
        monkeypatch.setenv("DBCONF_PROFILE", "test")
        command.upgrade(plain_config(script, f"config={config}", "database=billing"), "heads")
        assert tables(bill) == {"notes", "billing_version"}
        assert tables(app) == set()
        assert versions(bill, "billing_version") == ["n1"]
        monkeypatch.delenv("DBCONF_PROFILE")
        # -x profile= instead; the default database is primary
        command.upgrade(plain_config(script, f"config={config}", "profile=test"), "heads")
        assert versions(app, "alembic_version") == ["n1"]
        # the migration connection was closed (NullPool), not kept in a pool of 3
        engine = sa.create_engine(pg_url, poolclass=NullPool)
        try:
            deadline = time.monotonic() + 10
            with engine.connect() as conn:
                while True:
                    left = conn.execute(
                        sa.text(
                            "select count(*) from pg_stat_activity where application_name = :n"
                        ),
                        {"n": name},
                    ).scalar_one()
                    if left == 0 or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
        finally:
            engine.dispose()
        assert left == 0
        with pytest.raises(UnknownDatabaseError, match="did you mean 'billing'"):
            command.upgrade(
                plain_config(script, f"config={config}", "profile=test", "database=biling"), "heads"
            )


def test_migration_engine_has_no_pool(write_config: Callable[[str], Path]) -> None:
    config = write_config(
        """
        profiles:
          development:
            databases:
              primary: {url: "postgresql://app@h/app", pool: {size: 20}}
              local: {url: "sqlite:///x.db"}
        """
    )
    loaded = load_profile(path=config, environ={})
    engine = migration_engine(target_for(loaded, "primary"))
    try:
        assert isinstance(engine.pool, NullPool)
    finally:
        engine.dispose()
    assert configure_options(target_for(loaded, "primary")) == {
        "version_table": "alembic_version",
        "render_as_batch": False,
    }
    assert configure_options(target_for(loaded, "local"))["render_as_batch"] is True


@pytest.mark.parametrize(("backend", "batch"), [("sqlite", True), ("postgresql", False)])
def test_autogenerate_renders_batch_operations_on_sqlite(
    backend: str,
    batch: bool,
    request: pytest.FixtureRequest,
    write_config: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    server = request.getfixturevalue("pg_url") if backend == "postgresql" else ""
    with scratch_databases(backend, server, tmp_path) as make:
        url = make()
        script = write_scripts(tmp_path / "m", "primary", NOTES)
        # env.py with metadata: notes gains a column, so autogenerate emits an add_column
        (script / "env.py").write_text(
            "import sqlalchemy as sa\n"
            "from dbconf.integrations.alembic import run_migrations\n"
            "metadata = sa.MetaData()\n"
            'sa.Table("notes", metadata, sa.Column("id", sa.Integer, primary_key=True),'
            ' sa.Column("body", sa.String(20)))\n'
            "run_migrations(target_metadata=metadata)\n"
        )
        config = write_config(
            f"""
            profiles:
              test:
                databases:
                  primary: {{url: "{url}", migrations: {{path: "{script}"}}}}
            """
        )
        target = target_for(load_profile("test", path=config, environ={}))
        command.upgrade(alembic_config(target), "heads")
        command.revision(alembic_config(target, stdout=io.StringIO()), "body", autogenerate=True)
        (new,) = [p for p in (script / "versions").glob("*.py") if p.name != "n1.py"]
        text = new.read_text()
        assert "add_column" in text
        assert ("op.batch_alter_table('notes'" in text) is batch


def test_offline_gets_the_dialect_only(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    script = write_scripts(tmp_path / "m", "primary", NOTES)
    encoded = sa.URL.create("postgresql+psycopg2", "app", SECRET_PASSWORD, "db").render_as_string(
        hide_password=False
    )
    config = write_config(
        f"""
        profiles:
          production:
            databases:
              primary: {{url: "{encoded}/app", migrations: {{version_table: app_version}}}}
        """
    )
    output = io.StringIO()
    command.upgrade(
        plain_config(script, f"config={config}", "profile=production", output=output),
        "heads",
        sql=True,
    )
    sql = output.getvalue()
    assert "CREATE TABLE app_version" in sql
    assert "CREATE TABLE notes" in sql
    assert_no_secret([sql], SECRET_PASSWORD)
