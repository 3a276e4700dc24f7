"""The ``dbconf`` command: show, profiles, schema, check, shell, migrate, migrations.

Exit codes, the only ones :func:`main` returns (except ``shell``, which returns its client's
exit code once the client runs, 127 when it is not installed):

- 0: ok (also ``--help`` and ``--version``).
- 1: the command ran and did not succeed: a database is unreachable or one worker's pools
  exceed a server's max_connections (``check``); interrupted (Ctrl-C, one line
  ``dbconf: interrupted``); an unexpected error, which is a bug in dbconf.
- 2: the input is wrong: a configuration error (one message listing every problem) or a
  usage error (argparse).

Nothing is ever printed as a traceback, and no password ever appears. An unexpected exception
prints one line naming only its type (its text could hold a secret) and how to see the
traceback: ``dbconf --traceback …`` (which may show secrets). When the reader of stdout goes
away (``dbconf show | head -1``), the rest of the output is dropped silently (stdout is
pointed at ``os.devnull``, as the Python docs recommend for SIGPIPE) and the exit code is the
command's own result, as if the output had been read.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any, TextIO

import sqlalchemy
from pydantic import Secret, SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from dbconf.cli.check_json import check_json
from dbconf.cli.migrate import MIGRATE_COMMANDS, add_migrate_parsers
from dbconf.cli.shell import shell
from dbconf.config.file_model import WholeFile
from dbconf.config.origin import NOT_SECRET_KEYS, SECRET_KEY, KeyPath, dotted
from dbconf.config.urls import mask_url
from dbconf.errors import DbconfError
from dbconf.loading.loader import LoadedProfile, list_profiles, load_profile, resolve_path

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "build_parser",
    "json_schema",
    "main",
    "masked_tree",
    "package_version",
]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

MASK = "***"
SCHEMA_ID = "https://dbconf.dev/schema/databases.json"


def json_schema() -> dict[str, Any]:
    """JSON Schema of ``config/databases.yaml`` (for the YAML language server and editors)."""
    schema = WholeFile.model_json_schema(by_alias=True)
    schema["properties"]["profiles"]["description"] = "Named profiles (development, test, …)."
    schema["patternProperties"] = {"^(x-|\\.)": {"description": "free for YAML anchors"}}
    schema["title"] = "dbconf database profiles"
    for model in schema["$defs"].values():
        for name, prop in model.get("properties", {}).items():
            model["properties"][name] = _allow_interpolation(prop)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


_INTERPOLATION = {"type": "string", "pattern": "^\\$\\{[^}]+\\}$", "description": "${VAR…}"}


def _allow_interpolation(prop: dict[str, Any]) -> dict[str, Any]:
    """A number or boolean may also be written as one ``${VAR…}`` (read as a YAML scalar)."""
    options = prop.get("anyOf", [prop])
    if not any(o.get("type") in ("integer", "number", "boolean") for o in options):
        return prop
    extra = {k: v for k, v in prop.items() if k in ("default", "description", "title")}
    typed = (
        [o for o in options if o.get("type") != "null"]
        if "anyOf" in prop
        else [{k: v for k, v in prop.items() if k not in extra}]
    )
    nullable = [o for o in options if o.get("type") == "null"] if "anyOf" in prop else []
    return {"anyOf": [*typed, _INTERPOLATION, *nullable], **extra}


def masked_tree(value: Any, key: str = "") -> Any:
    """Plain data of a config with every secret masked and URLs rendered without password."""
    if isinstance(value, SecretStr | Secret):
        if key == "url":
            return mask_url(make_url(value.get_secret_value()))
        return MASK
    if isinstance(value, Mapping):
        return {
            str(k): MASK
            if SECRET_KEY.search(str(k))
            and not isinstance(v, Mapping | SecretStr | Secret)
            and v is not None
            and str(k) not in NOT_SECRET_KEYS
            else masked_tree(v, str(k))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [masked_tree(item) for item in value]
    return value


def _flatten(value: Any, path: KeyPath = ()) -> list[tuple[KeyPath, Any]]:
    """Rows of (key path, value); a list of mappings (replicas) row by row, under its index."""
    if isinstance(value, dict) and value:
        return [row for k, v in value.items() for row in _flatten(v, (*path, k))]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [row for i, v in enumerate(value) for row in _flatten(v, (*path, str(i)))]
    return [(path, value)]


def _profile_data(loaded: LoadedProfile) -> dict[str, Any]:
    data = loaded.config.model_dump(by_alias=True, exclude_none=True)
    data.pop("extends", None)
    data["default_database"] = loaded.config.default_name
    tree: dict[str, Any] = masked_tree(data)
    for name, db in loaded.config.databases.items():
        shown = tree["databases"][name]
        for index, replica in enumerate(db.replica_configs):
            shown["replicas"][index] = {
                "effective_url": replica.masked_url(),
                **shown["replicas"][index],
            }
        tree["databases"][name] = {"effective_url": db.masked_url(), **shown}
    return tree


Result = tuple[int, str]  # exit code, text for stdout
Command = Callable[[argparse.Namespace, Mapping[str, str]], Result]


def _show(loaded: LoadedProfile, args: argparse.Namespace) -> Result:
    """The resolved profile, passwords masked.

    With ``--origin``, each value says where it came from: the file:line:col, an ``env VAR``,
    a .env file's path:line, a secrets file, the file:line that passed ``overrides=``, or a
    default.
    """
    tree = _profile_data(loaded)
    rows = _flatten(tree)
    if args.format == "json":
        out: dict[str, Any] = {"profile": loaded.name, "file": str(loaded.path), "config": tree}
        out["chosen_by"] = loaded.chosen_by
        if args.origin:
            out["origins"] = {dotted(p): _origin_text(loaded, p) for p, _ in rows}
        return EXIT_OK, json.dumps(out, indent=2, default=str) + "\n"
    lines = [f"# profile {loaded.name} from {loaded.path}", f"# chosen by {loaded.chosen_by}"]
    width = max(len(dotted(p)) for p, _ in rows)
    for path, value in rows:
        line = f"{dotted(path):<{width}} = {json.dumps(value, default=str)}"
        if args.origin:
            line += f"    # {_origin_text(loaded, path)}"
        lines.append(line)
    return EXIT_OK, _text(lines)


def _text(lines: Sequence[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def _origin_text(loaded: LoadedProfile, path: KeyPath) -> str:
    if path[-1:] == ("effective_url",):
        if "replicas" in path:
            return "computed from the replica's keys over its primary's"
        return "computed from url and its parts"
    if path == ("default_database",) and ("default_database",) not in loaded.origins:
        return "default (the first database declared)"
    return str(loaded.origin(*path))


def _profiles(args: argparse.Namespace, environ: Mapping[str, str]) -> Result:
    """The profiles in the file and what each extends."""
    profiles = list_profiles(args.config, environ=environ)
    lines = [f"# profiles in {resolve_path(args.config, environ)}"]
    lines += [
        f"{name}  (extends {parent})" if parent else name for name, parent in profiles.items()
    ]
    return EXIT_OK, _text(lines)


def _schema(args: argparse.Namespace, environ: Mapping[str, str]) -> Result:
    """JSON Schema of the file, for editors.

    Save it and point the YAML language server at it (``dbconf/schema.json`` ships with the
    package).
    """
    return EXIT_OK, json.dumps(json_schema(), indent=2) + "\n"


def _check(loaded: LoadedProfile, args: argparse.Namespace) -> Result:
    """Connect to each database and report.

    A round trip on each database of the profile (or only ``--database``), then each server's
    connection budget: the pools of all ``workers`` against ``max_connections``; each read
    replica is probed once and listed under its database (state, lag, why it is out). Exit 1
    when a database is unreachable, a replica cannot be measured (unreachable, not a standby,
    not replicating; a replica only lagging past max_lag is listed but is not a failure: it is
    transient and reads fall back as routing says), or one worker alone can exceed a server's
    limit.
    """
    from dbconf.cli.budget import check_budget
    from dbconf.runtime.registry import Registry

    with Registry(loaded.config, profile=loaded.name, origins=loaded.origins) as registry:
        names = [args.database] if args.database else list(registry.names)
        if args.database:
            registry[args.database]  # unknown name → UnknownDatabaseError (exit 2)
        reports = registry.check(names)
        budgets = check_budget(registry, reports)  # connection budget: dbconf/cli/budget.py
    ok = all(r.ok and r.replicas_ok for r in reports) and not any(b.failed for b in budgets)
    if getattr(args, "format", "text") == "json":
        return (EXIT_OK if ok else EXIT_FAILED), check_json(loaded.name, ok, reports, budgets)
    lines = [report.render() for report in reports] + [budget.render() for budget in budgets]
    return (EXIT_OK if ok else EXIT_FAILED), _text(lines)


def _loading(command: Callable[[LoadedProfile, argparse.Namespace], Result]) -> Command:
    """``command`` run on the profile that ``--profile`` and ``--config`` name."""

    def run(args: argparse.Namespace, environ: Mapping[str, str]) -> Result:
        loaded = load_profile(
            args.profile, path=args.config, environ=environ, env_file=args.env_file
        )
        return command(loaded, args)

    run.__doc__ = command.__doc__
    return run


COMMANDS: dict[str, Command] = {
    "show": _loading(_show),
    "profiles": _profiles,
    "schema": _schema,
    "check": _loading(_check),
    "shell": shell,  # dbconf/cli/shell.py
    **MIGRATE_COMMANDS,  # migrate, migrations status|init|revision (dbconf/cli/migrate.py)
}

# :class:`x`, :func:`~a.b` (shown as b), :ref:`title <target>` (shown as title)
_ROLE = re.compile(r":[\w:.-]+:`(~?)([^`<]*?)\s*(?:<[^`]*>)?`")


def plain(text: str) -> str:
    """Docstring reST as plain text for ``--help``: inline literals and roles lose their
    markup, and whitespace is folded (argparse wraps the text itself)."""
    text = _ROLE.sub(lambda m: m[2].rsplit(".", 1)[-1] if m[1] else m[2], text)
    return " ".join(text.replace("``", "").replace("`", "").split())


def package_version(distribution: str = "dbconf") -> str:
    """The installed version, from the package metadata; a note when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(version unknown: not installed as a package)"


CONFIG_HELP = (
    "config file (default: $DBCONF_CONFIG, else config/databases.yaml in the working directory "
    "or the nearest parent, up to the repository root)"
)
PROFILE_HELP = (
    "profile name; wins over $DBCONF_PROFILE (default: $DBCONF_PROFILE, else the file's "
    "default_profile, else development)"
)
ENV_FILE_HELP = (
    ".env file read under the environment (default: $DBCONF_ENV_FILE, else the file's env_file)"
)


def build_parser() -> argparse.ArgumentParser:
    summary = (__doc__ or "").split("\n\n", 1)[0]
    parser = argparse.ArgumentParser(prog="dbconf", description=plain(summary))
    versions = f"dbconf {package_version()} (SQLAlchemy {sqlalchemy.__version__})"
    parser.add_argument("--version", action="version", version=versions)
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an unexpected error (a bug), print the whole traceback (it may show secrets)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, *, profile: bool = False, config: bool = True
    ) -> argparse.ArgumentParser:
        doc = COMMANDS[name].__doc__ or ""
        p = sub.add_parser(name, help=plain(doc.split("\n\n")[0]), description=plain(doc))
        if profile:
            p.add_argument("--profile", "-p", help=PROFILE_HELP)
            p.add_argument("--env-file", help=ENV_FILE_HELP)
        if config:
            p.add_argument("--config", "-c", help=CONFIG_HELP)
        return p

    show = command("show", profile=True)
    show.add_argument("--origin", action="store_true", help="say where each value came from")
    show.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    command("profiles")
    command("schema", config=False)
    check = command("check", profile=True)
    check.add_argument("--database", "-d", help="check only this database")
    check.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    shell_parser = command("shell", profile=True)
    shell_parser.add_argument("--database", "-d", help="this database, not the default one")
    shell_parser.add_argument("client_args", nargs="*", help="after --: the client's arguments")
    add_migrate_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line and return its exit code (0, 1 or 2: see the module docstring);
    ``environ`` defaults to ``os.environ``."""
    env = os.environ if environ is None else environ
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version (0) and usage errors (2), already printed
        return e.code if isinstance(e.code, int) else EXIT_CONFIG if e.code else EXIT_OK
    except BrokenPipeError:  # the reader of --help went away
        _silence(sys.stdout)
        return EXIT_OK
    try:
        code, text = COMMANDS[args.command](args, env)
        _write(sys.stdout, text)
        return code
    except DbconfError as e:  # the messages of dbconf's errors never hold a password
        _write(sys.stderr, f"dbconf: {e}\n")
        return EXIT_FAILED if isinstance(e, SQLAlchemyError) else EXIT_CONFIG
    except KeyboardInterrupt:
        _write(sys.stderr, "dbconf: interrupted\n")
        return EXIT_FAILED
    except Exception as e:  # a bug: its text may hold a secret, so only its type by default
        _write(
            sys.stderr,
            traceback.format_exc()
            if args.traceback
            else f"dbconf: internal error ({type(e).__name__}), a bug in dbconf; run "
            "'dbconf --traceback …' to see where (the traceback may show secrets)\n",
        )
        return EXIT_FAILED


def _write(stream: TextIO, text: str) -> None:
    """Write and flush; a reader that went away (a closed pipe) is not an error."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        _silence(stream)


def _silence(stream: TextIO) -> None:
    """Point the stream's file descriptor at os.devnull, so that what is still buffered is
    dropped at exit instead of raising BrokenPipeError again (the Python docs' SIGPIPE note)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor (captured output in tests)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
