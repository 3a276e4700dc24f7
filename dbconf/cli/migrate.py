"""``dbconf migrate`` and ``dbconf migrations status|init|revision``: Alembic from the profile.

The exit codes are :mod:`dbconf.cli`'s: 0 ok; 1 the command ran and did not succeed (a
migration failed, a database is unreachable, ``status`` found a database behind its head);
2 the input is wrong (configuration, unknown profile or database with a did-you-mean, no
migration directory, a database with ``migrations.managed: false`` named, an unknown revision,
Alembic not installed). Every URL shown is masked; a failed migration is reported as one line on
stderr naming the database and the error (``dbconf --traceback migrate …`` shows the
traceback). Alembic is driven through its ``Config`` object, built from the profile
(:func:`dbconf.integrations.alembic.alembic_config`): no ``alembic.ini``.
"""

from __future__ import annotations

import argparse
import io
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from dbconf.errors import DbconfError
from dbconf.loading.loader import LoadedProfile, load_profile

if TYPE_CHECKING:
    from dbconf.integrations.alembic import MigrationTarget

__all__ = ["MIGRATE_COMMANDS", "MigrationsError", "add_migrate_parsers"]

EXIT_OK, EXIT_FAILED = 0, 1  # as dbconf.cli; a MigrationsError is its exit 2
Result = tuple[int, str]
PROFILE_HELP = "profile name (default: $DBCONF_PROFILE or development)"
CONFIG_HELP = "config file (default: $DBCONF_CONFIG or config/databases.yaml)"


class MigrationsError(DbconfError, ValueError):
    """The input of a migrations command is wrong (exit 2): the message says what to do."""


def _alembic() -> tuple[Any, tuple[type[Exception], ...]]:
    """Alembic's ``command`` module and the errors that say its input is wrong (an unknown
    revision, several heads, …); a clear error when Alembic is missing."""
    try:
        from alembic import command
        from alembic.script.revision import RevisionError
        from alembic.util import CommandError
    except ImportError:
        raise MigrationsError(
            "the migrations commands need Alembic: pip install 'dbconf[alembic]'"
        ) from None
    return command, (CommandError, RevisionError)


def _targets(loaded: LoadedProfile, name: str | None, every: bool) -> list[MigrationTarget]:
    """``--all``: the managed databases; else ``name`` (default: the profile's default)."""
    from dbconf.integrations.alembic import target_for

    if every:
        targets = [target_for(loaded, n) for n in loaded.config.databases]
        managed = [t for t in targets if t.managed]
        if not managed:
            raise MigrationsError(
                f"profile {loaded.name!r} has no database to migrate: every one sets "
                "migrations.managed: false"
            )
        return managed
    target = target_for(loaded, name)
    if not target.managed:
        raise MigrationsError(
            f"database {target.name!r} sets migrations.managed: false, so dbconf does not "
            "migrate it; remove that key (or set it to true) to migrate it"
        )
    return [target]


def _require_scripts(target: MigrationTarget) -> None:
    path = Path(target.script_path)
    if not (path / "env.py").is_file():
        raise MigrationsError(
            f"database {target.name!r}: no migration directory at {path} (no env.py; "
            f"migrations.path sets it, default migrations/<database>): create it with "
            f"'dbconf migrations init {target.name}', or set migrations.managed: false"
        )


def _revisions(revs: tuple[str, ...]) -> str:
    return ", ".join(revs) if revs else "base (nothing applied)"


def _failed(target: MigrationTarget, error: BaseException, args: argparse.Namespace) -> str:
    """One line for a migration that raised: dbconf's messages hold no password; a driver's
    error is shown by its own message (the SQL is the user's, its parameters hidden); any
    other exception (a bug in a migration script) by its type only."""
    if getattr(args, "traceback", False):
        return "".join(traceback.format_exception(error))
    if isinstance(error, DbconfError):
        text = str(error)
    elif isinstance(error, DBAPIError):
        first = (str(error.orig).strip().splitlines() or [""])[0]
        text = f"{type(error.orig).__name__}: {first}"
    else:
        text = f"{type(error).__name__} raised in a migration (dbconf --traceback … shows where)"
    return f"dbconf: database {target.name!r}: migration failed: {text}\n"


def _command_error(target: MigrationTarget, error: Exception) -> MigrationsError:
    return MigrationsError(f"database {target.name!r} ({target.script_path}): {error}")


def _migrate(loaded: LoadedProfile, args: argparse.Namespace) -> Result:
    """Upgrade databases with Alembic. The profile's default database, --database NAME or,
    with --all, every managed one, each with its own scripts and version table, to --to
    (default: heads). --sql prints the SQL instead of running it (offline: no connection)."""
    command, input_errors = _alembic()
    from dbconf.integrations.alembic import alembic_config, current_heads

    targets = _targets(loaded, args.database, args.all)
    for target in targets:
        _require_scripts(target)
    out: list[str] = []
    for target in targets:
        where = f"{target.masked_url()}, version table {target.version_table}"
        try:
            if args.sql:
                buffer = io.StringIO()
                command.upgrade(alembic_config(target, output=buffer), args.to, sql=True)
                out.append(f"-- dbconf: database {target.name} ({where})\n{buffer.getvalue()}")
                continue
            before = current_heads(target)
            command.upgrade(alembic_config(target), args.to)
            after = current_heads(target)
        except input_errors as e:
            raise _command_error(target, e) from None
        except DbconfError as e:
            if not isinstance(e, SQLAlchemyError):
                raise
            sys.stderr.write(_failed(target, e, args))
            return EXIT_FAILED, "".join(out)
        except Exception as e:  # the migration's own error: one line, no traceback
            sys.stderr.write(_failed(target, e, args))
            return EXIT_FAILED, "".join(out)
        done = (
            f"upgraded {_revisions(before)} -> {_revisions(after)}"
            if before != after
            else f"already at {_revisions(after)}"
        )
        out.append(f"{target.name}: {done} ({where})\n")
    return EXIT_OK, "".join(out)


def _status(loaded: LoadedProfile, args: argparse.Namespace) -> Result:
    """Each managed database's current revision against its scripts' head. Only --database
    when given. Exit 1 if any is behind, at a revision its scripts do not know, or
    unreachable."""
    _, input_errors = _alembic()
    from alembic.script import ScriptDirectory

    from dbconf.integrations.alembic import alembic_config, current_heads

    targets = _targets(loaded, args.database, args.database is None)
    lines, ok = [], True
    for target in targets:
        _require_scripts(target)
        script = ScriptDirectory.from_config(alembic_config(target))
        heads = tuple(script.get_heads())
        try:
            current = current_heads(target)
        except DbconfError as e:
            if not isinstance(e, SQLAlchemyError):
                raise
            lines.append(f"{target.name}: cannot read its version table: {e}")
            ok = False
            continue
        if set(current) == set(heads):
            state = f"up to date at {_revisions(heads)}"
        else:
            ok = False
            try:
                pending = len(list(script.iterate_revisions(heads, current or "base")))
                state = f"behind: at {_revisions(current)}, head {_revisions(heads)}"
                state += f", {pending} to apply"
            except input_errors:
                state = (
                    f"at {_revisions(current)}, which its scripts ({target.script_path}) do "
                    f"not lead to from head {_revisions(heads)}"
                )
        lines.append(f"{target.name}: {state} ({target.masked_url()})")
    return (EXIT_OK if ok else EXIT_FAILED), "".join(f"{line}\n" for line in lines)


def _init(loaded: LoadedProfile, args: argparse.Namespace) -> Result:
    """Write the migration directory of database NAME. It goes to the database's
    migrations.path (default migrations/NAME): env.py (one call to dbconf), script.py.mako
    and versions/; no alembic.ini is needed."""
    from dbconf.integrations.alembic import target_for
    from dbconf.integrations.alembic_files import write_directory

    target = target_for(loaded, args.name)
    path = Path(target.script_path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise MigrationsError(
            f"{path} already exists and is not an empty directory: remove it, or set "
            f"databases.{target.name}.migrations.path to another directory"
        )
    written = write_directory(path, target.name)
    return EXIT_OK, (
        f"wrote {path}: {', '.join(written)}\n"
        f"next: dbconf migrations revision -d {target.name} -m 'create tables', "
        f"then dbconf migrate -d {target.name}\n"
    )


def _revision(loaded: LoadedProfile, args: argparse.Namespace) -> Result:
    """Create a new revision script in a database's migration directory. With --autogenerate,
    Alembic compares the database with env.py's target_metadata."""
    command, input_errors = _alembic()
    from dbconf.integrations.alembic import alembic_config, target_for

    target = target_for(loaded, args.database)
    _require_scripts(target)
    messages = io.StringIO()
    try:
        command.revision(
            alembic_config(target, stdout=messages),
            message=args.message,
            autogenerate=args.autogenerate,
        )
    except input_errors as e:
        raise _command_error(target, e) from None
    return EXIT_OK, messages.getvalue()


_MIGRATIONS: dict[str, Callable[[LoadedProfile, argparse.Namespace], Result]] = {
    "status": _status,
    "init": _init,
    "revision": _revision,
}


def _loaded(args: argparse.Namespace, environ: Mapping[str, str]) -> LoadedProfile:
    return load_profile(args.profile, path=args.config, environ=environ)


def _run_migrate(args: argparse.Namespace, environ: Mapping[str, str]) -> Result:
    return _migrate(_loaded(args, environ), args)


def _run_migrations(args: argparse.Namespace, environ: Mapping[str, str]) -> Result:
    return _MIGRATIONS[args.migrations_command](_loaded(args, environ), args)


_run_migrate.__doc__ = _migrate.__doc__
_run_migrations.__doc__ = "Alembic migrations of the profile's databases: status, init, revision."

MIGRATE_COMMANDS = {"migrate": _run_migrate, "migrations": _run_migrations}


def _first_sentence(doc: str | None) -> str:
    return " ".join((doc or "").split()).split(". ")[0].rstrip(".") + "."


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", "-p", help=PROFILE_HELP)
    parser.add_argument("--config", "-c", help=CONFIG_HELP)


def add_migrate_parsers(sub: Any) -> None:
    """Add ``migrate`` and ``migrations`` to the subparsers ``sub`` of the ``dbconf`` parser."""

    def add(parent: Any, name: str, fn: Callable[..., Any]) -> argparse.ArgumentParser:
        doc = " ".join((fn.__doc__ or "").split())
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=_first_sentence(fn.__doc__), description=doc
        )
        _common(parser)
        return parser

    migrate = add(sub, "migrate", _migrate)
    which = migrate.add_mutually_exclusive_group()
    which.add_argument("--database", "-d", help="migrate this database (default: the default one)")
    which.add_argument("--all", action="store_true", help="migrate every managed database")
    migrate.add_argument("--to", default="heads", help="target revision (default: heads)")
    migrate.add_argument("--sql", action="store_true", help="print the SQL, run nothing")
    migrations = sub.add_parser(
        "migrations",
        help=_first_sentence(_run_migrations.__doc__),
        description=_run_migrations.__doc__,
    )
    inner = migrations.add_subparsers(dest="migrations_command", required=True)
    status = add(inner, "status", _status)
    status.add_argument("--database", "-d", help="only this database (default: every managed one)")
    init = add(inner, "init", _init)
    init.add_argument("name", metavar="NAME", help="the database whose directory to write")
    revision = add(inner, "revision", _revision)
    revision.add_argument("--database", "-d", help="the database (default: the default one)")
    revision.add_argument("--message", "-m", required=True, help="what the revision does")
    revision.add_argument(
        "--autogenerate", action="store_true", help="compare with env.py's target_metadata"
    )
