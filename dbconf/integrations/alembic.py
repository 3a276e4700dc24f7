"""Alembic from the profile (needs the ``alembic`` extra: ``pip install dbconf[alembic]``).

A migration directory's ``env.py`` is one call (``dbconf migrations init NAME`` writes it):

.. code-block:: python

    from dbconf.integrations.alembic import run_migrations

    run_migrations()  # autogenerate: run_migrations(target_metadata=myapp.models.Base.metadata)

:func:`run_migrations` finds its database in the Alembic config's attributes when dbconf runs
Alembic (``dbconf migrate``, :func:`alembic_config`), otherwise from Alembic's ``-x``
arguments: ``-x profile=`` (default ``$DBCONF_PROFILE``, then ``development``), ``-x
database=`` (default: the profile's default database) and ``-x config=`` (default
``$DBCONF_CONFIG``, then ``config/databases.yaml``). It connects with the database's
migration configuration (:mod:`dbconf.config.migration_config`: its own timeouts, optional
direct URL, a ``NullPool``), uses the database's ``version_table`` and ``render_as_batch`` on
SQLite. Offline (``--sql``), Alembic gets only the dialect, never the URL, so no password can
reach the SQL it prints.

No ``alembic.ini`` is needed: :func:`alembic_config` builds Alembic's ``Config``
programmatically (``script_location`` from ``migrations.path``), which the ``alembic.command``
functions take.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from dbconf.config import DatabaseConfig
from dbconf.errors import UnknownDatabaseError
from dbconf.loading.loader import LoadedProfile, load_profile
from dbconf.runtime.builder import build_engine

if TYPE_CHECKING:
    import sqlalchemy as sa
    from alembic.config import Config
    from sqlalchemy import MetaData

__all__ = [
    "ATTRIBUTE",
    "MigrationTarget",
    "alembic_config",
    "configure_options",
    "migration_engine",
    "run_migrations",
    "target_for",
]

ATTRIBUTE = "dbconf.target"  # the key of Config.attributes that holds the MigrationTarget


@dataclass(frozen=True)
class MigrationTarget:
    """One database to migrate: its name, its profile's name and its configuration."""

    name: str
    profile: str
    database: DatabaseConfig

    @property
    def config(self) -> DatabaseConfig:
        """What the migrations connect with (:mod:`dbconf.config.migration_config`)."""
        return self.database.migration_config

    @property
    def script_path(self) -> str:
        block = self.database.migrations
        return block.script_path(self.name) if block else f"migrations/{self.name}"

    @property
    def version_table(self) -> str:
        block = self.database.migrations
        return block.version_table if block else "alembic_version"

    @property
    def managed(self) -> bool:
        return self.database.migrations is None or self.database.migrations.managed

    def masked_url(self) -> str:
        return self.config.masked_url()


def target_for(loaded: LoadedProfile, name: str | None = None) -> MigrationTarget:
    """The database ``name`` (default: the profile's default) of a loaded profile; an unknown
    name raises :class:`~dbconf.UnknownDatabaseError` (with a did-you-mean)."""
    databases = loaded.config.databases
    name = loaded.config.default_name if name is None else name
    if name not in databases:
        raise UnknownDatabaseError(name, list(databases), loaded.name)
    return MigrationTarget(name, loaded.name, databases[name])


def alembic_config(
    target: MigrationTarget, *, output: IO[str] | None = None, stdout: IO[str] | None = None
) -> Config:
    """An Alembic ``Config`` for ``target``, without any ``alembic.ini``: ``script_location``
    is the database's ``migrations.path`` and the target rides in ``attributes`` for
    :func:`run_migrations`. ``output`` receives offline (``--sql``) SQL, ``stdout`` Alembic's
    messages."""
    from alembic.config import Config

    kwargs: dict[str, Any] = {"output_buffer": output}
    if stdout is not None:
        kwargs["stdout"] = stdout
    config = Config(attributes={ATTRIBUTE: target}, **kwargs)
    config.set_main_option("script_location", target.script_path)
    return config


def configure_options(target: MigrationTarget) -> dict[str, Any]:
    """The ``context.configure`` options dbconf sets: the version table, and batch mode on
    SQLite (its ALTER TABLE cannot drop or alter a column)."""
    return {
        "version_table": target.version_table,
        "render_as_batch": target.config.backend == "sqlite",
    }


def migration_engine(target: MigrationTarget) -> sa.Engine:
    """An engine on the migration configuration (a ``NullPool``: the connection is closed
    when returned); dispose of it when done."""
    return build_engine(f"{target.name} (migrations)", target.config)


def _from_context(config: Config, x: Mapping[str, str]) -> MigrationTarget:
    target = config.attributes.get(ATTRIBUTE)
    if isinstance(target, MigrationTarget):
        return target
    loaded = load_profile(x.get("profile"), path=x.get("config"), environ=os.environ)
    return target_for(loaded, x.get("database"))


def run_migrations(
    target_metadata: MetaData | list[MetaData] | None = None, **configure: Any
) -> None:
    """The body of ``env.py``: run the migrations of the database this Alembic run is for,
    online or offline. ``configure`` adds or overrides ``context.configure`` options
    (``compare_type``, ``include_object``, …)."""
    from alembic import context

    x = context.get_x_argument(as_dictionary=True)
    target = _from_context(context.config, x)
    options = {**configure_options(target), "target_metadata": target_metadata, **configure}
    if context.is_offline_mode():
        url = make_url(f"{target.config.sqlalchemy_url.drivername}://")  # the dialect only
        context.configure(url=url, literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = migration_engine(target)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, **options)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


def current_heads(target: MigrationTarget) -> tuple[str, ...]:
    """The revisions the database is at (its version table; empty when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    engine = migration_engine(target)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": target.version_table}
            )
            return tuple(context.get_current_heads())
    finally:
        engine.dispose()
