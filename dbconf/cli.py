"""The ``dbconf`` command: show, profiles, schema, check.

Exit codes: 0 ok, 1 a database is unreachable or one worker's pools exceed a server's
max_connections (check), 2 configuration error. Errors are one
message, never a traceback, and never a password.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Secret, SecretStr
from sqlalchemy.engine import make_url

from dbconf.config import FileConfig
from dbconf.errors import DbconfError
from dbconf.loader import LoadedProfile, list_profiles, load_profile, resolve_path
from dbconf.origin import SECRET_KEY, KeyPath
from dbconf.urls import mask_url

__all__ = ["json_schema", "main", "masked_tree"]

MASK = "***"
SCHEMA_ID = "https://dbconf.dev/schema/databases.json"


def json_schema() -> dict[str, Any]:
    """JSON Schema of ``config/databases.yaml`` (for the YAML language server and editors)."""
    schema = FileConfig.model_json_schema(by_alias=True)
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
            and str(k) != "password_file"
            else masked_tree(v, str(k))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [masked_tree(item) for item in value]
    return value


def _flatten(value: Any, path: KeyPath = ()) -> list[tuple[KeyPath, Any]]:
    if isinstance(value, dict) and value:
        return [row for k, v in value.items() for row in _flatten(v, (*path, k))]
    return [(path, value)]


def _profile_data(loaded: LoadedProfile) -> dict[str, Any]:
    data = loaded.config.model_dump(by_alias=True, exclude_none=True)
    data.pop("extends", None)
    data["default_database"] = loaded.config.default_name
    tree: dict[str, Any] = masked_tree(data)
    for name, db in loaded.config.databases.items():
        tree["databases"][name] = {"effective_url": db.masked_url(), **tree["databases"][name]}
    return tree


def _show(loaded: LoadedProfile, args: argparse.Namespace) -> int:
    tree = _profile_data(loaded)
    rows = _flatten(tree)
    if args.format == "json":
        out: dict[str, Any] = {"profile": loaded.name, "file": str(loaded.path), "config": tree}
        if args.origin:
            out["origins"] = {".".join(p): _origin_text(loaded, p) for p, _ in rows}
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"# profile {loaded.name} from {loaded.path}")
    width = max(len(".".join(p)) for p, _ in rows)
    for path, value in rows:
        line = f"{'.'.join(path):<{width}} = {json.dumps(value, default=str)}"
        if args.origin:
            line += f"    # {_origin_text(loaded, path)}"
        print(line)
    return 0


def _origin_text(loaded: LoadedProfile, path: KeyPath) -> str:
    if path[-1:] == ("effective_url",):
        return "computed from url and its parts"
    if path == ("default_database",) and ("default_database",) not in loaded.origins:
        return "default (the first database declared)"
    return str(loaded.origin(*path))


def _profiles(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    profiles = list_profiles(args.config, environ=environ)
    print(f"# profiles in {resolve_path(args.config, environ)}")
    for name, parent in profiles.items():
        print(f"{name}  (extends {parent})" if parent else name)
    return 0


def _check(loaded: LoadedProfile, args: argparse.Namespace) -> int:
    from dbconf.budget import check_budget
    from dbconf.registry import Registry

    with Registry(loaded.config, profile=loaded.name, origins=loaded.origins) as registry:
        names = [args.database] if args.database else list(registry.names)
        if args.database:
            registry[args.database]  # unknown name → UnknownDatabaseError (exit 2)
        reports = registry.check(names)
        budgets = check_budget(registry, reports)  # connection budget: dbconf/budget.py
    for report in reports:
        print(report.render())
    for budget in budgets:
        print(budget.render())
    failed = any(b.failed for b in budgets)
    return 0 if all(report.ok for report in reports) and not failed else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbconf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_profile(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--profile", "-p", help="profile name (default: $DBCONF_PROFILE or development)"
        )
        p.add_argument(
            "--config", "-c", help="config file (default: $DBCONF_CONFIG or config/databases.yaml)"
        )

    show = sub.add_parser("show", help="the resolved profile, passwords masked")
    with_profile(show)
    show.add_argument("--origin", action="store_true", help="say where each value came from")
    show.add_argument("--format", choices=["text", "json"], default="text")
    profiles = sub.add_parser("profiles", help="the profiles in the file and what each extends")
    profiles.add_argument("--config", "-c")
    sub.add_parser("schema", help="JSON Schema of the file, for editors")
    check = sub.add_parser("check", help="connect to each database and report")
    with_profile(check)
    check.add_argument("--database", "-d", help="check only this database")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; ``environ`` defaults to ``os.environ``."""
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        if args.command == "schema":
            print(json.dumps(json_schema(), indent=2))
            return 0
        if args.command == "profiles":
            return _profiles(args, env)
        loaded = load_profile(args.profile, path=args.config, environ=env)
        return _show(loaded, args) if args.command == "show" else _check(loaded, args)
    except DbconfError as e:
        print(f"dbconf: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
