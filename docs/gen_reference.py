"""Generated reference pages of the docs site, made from the code at build time.

Used as a MkDocs hook (``hooks:`` in mkdocs.yml): ``on_files`` adds

- ``reference/configuration.md`` from ``dbconf/schema.json`` (every key, type, default, env var),
- ``reference/cli.md`` from ``dbconf.cli.build_parser()`` (every command's ``--help``),
- ``reference/errors.md`` from ``dbconf/errors.py`` (every error class, its docstring, where
  dbconf raises it).

The pages are never written to the repository; ``tests/test_docs.py`` builds the site with
``mkdocs build --strict`` and checks the generated pages against the code.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "dbconf" / "schema.json"
PLACEHOLDER = {"databases": "<NAME>", "sessions": "<FLAVOUR>", "replicas": "<N>"}
FILE_ONLY = {"extends"}  # read only from the file (an env var or overrides= is an error)


# ---------------------------------------------------------------- configuration keys


def _type(node: Any) -> str:
    """A short human type for a schema node (``${VAR}`` alternatives left out)."""
    if not isinstance(node, dict):
        return "any"
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    if node.get("description", "").startswith("a duration"):
        return "duration"
    if "anyOf" in node:
        parts = [
            _type(n)
            for n in node["anyOf"]
            if not (n.get("type") == "string" and str(n.get("pattern", "")).startswith("^\\$\\{"))
        ]
        kinds = list(dict.fromkeys(p for p in parts if p))
        if "duration" in kinds and "number" in kinds:  # a number of seconds is a duration
            kinds.remove("number")
        return " or ".join(kinds)
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"mapping of name → {_type(node['additionalProperties'])}"
    if kind == "string" and "(ms|s|m|h)" in str(node.get("pattern", "")):
        return "duration"
    if kind == "string" and node.get("format") == "password":
        return "string (secret)"
    if kind == "integer" and ("minimum" in node or "maximum" in node):
        low, high = node.get("minimum", ""), node.get("maximum", "")
        return f"integer {low}…{high}"
    return {"null": "null"}.get(str(kind), str(kind)) if kind else "any"


def _description(node: dict[str, Any]) -> str:
    """The node's description, or that of its first alternative that has one."""
    texts = [node.get("description", "")] + [
        n.get("description", "") for n in node.get("anyOf", [])
    ]
    text = next((t for t in texts if t and not t.startswith("${VAR")), "")
    return text.replace("|", "\\|")


def _default(node: dict[str, Any], required: bool = False) -> str:
    if "default" not in node:
        return "required" if required else "—"
    if isinstance(node["default"], dict):  # a block: its keys' defaults are in its table
        return "see its keys"
    return f"`{json.dumps(node['default'])}`"


def _rows(
    schema: dict[str, Any], name: str, env_path: list[str] | None
) -> Iterator[tuple[str, str, str, str, str]]:
    model = schema["$defs"][name]
    for key, node in model["properties"].items():
        if env_path is None or key in FILE_ONLY:
            env = "— (file only)"
        else:
            env = "`DBCONF_" + "__".join([*env_path, key.upper()]) + "`"
        kind = _type(node)
        default = _default(node, key in model.get("required", []))
        yield key, kind, default, env, _description(node)


def _env_prefixes(schema: dict[str, Any]) -> dict[str, list[str]]:
    """The env path of each model, found by walking from the profile (first path wins)."""
    found: dict[str, list[str]] = {"ProfileConfig": []}
    queue = ["ProfileConfig"]
    while queue:
        name = queue.pop(0)
        for key, node in schema["$defs"][name]["properties"].items():
            for ref in re.findall(r"#/\$defs/(\w+)", json.dumps(node)):
                if ref in found:
                    continue
                path = [*found[name], key.upper()]
                if key in PLACEHOLDER:
                    path.append(PLACEHOLDER[key])
                found[ref] = path
                queue.append(ref)
    return found


def configuration_page(schema_path: Path = SCHEMA) -> str:
    schema = json.loads(schema_path.read_text())
    prefixes = _env_prefixes(schema)
    out = [
        "# Configuration keys",
        "",
        "Generated from `dbconf/schema.json` (`dbconf schema` prints it) when the site is",
        "built. Durations are `250ms`, `30s`, `5m`, `1h` or a number of seconds; every value",
        "may also be a `${VAR}` reference. The env variable of a key is `DBCONF_` and its YAML",
        "path under the profile, upper-case, joined by `__` (see",
        "[Environment variables](../guides/profiles.md#environment-variables)); `<NAME>`,",
        "`<FLAVOUR>` and `<N>` stand for a database name, a session flavour and a replica index.",
        "",
        "## The file",
        "",
        schema.get("description", "").replace("``", "`"),
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    for key, node in schema["properties"].items():
        desc = node.get("description", "").replace("|", "\\|")
        required = key in schema.get("required", [])
        out.append(f"| `{key}` | {_type(node)} | {_default(node, required)} | {desc} |")
    out.append("")
    for name in ["ProfileConfig", *sorted(n for n in schema["$defs"] if n != "ProfileConfig")]:
        model = schema["$defs"][name]
        env_path = prefixes.get(name)
        out += [f"## {name}", ""]
        if model.get("description"):
            out += [model["description"].replace("``", "`"), ""]
        if env_path is not None:
            under = ".".join(p.lower() for p in env_path) or "the profile"
            out += [f"Under `{under}`." if env_path else "The keys of a profile.", ""]
        out += [
            "| key | type | default | env variable | description |",
            "|---|---|---|---|---|",
        ]
        for key, kind, default, env, desc in _rows(schema, name, env_path):
            out.append(f"| `{key}` | {kind} | {default} | {env} | {desc} |")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- command line


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for deeper, subsub in _subparsers(sub):
                    yield f"{name} {deeper}", subsub


def cli_page() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal width: fix it
    from dbconf.cli import build_parser

    parser = build_parser()
    out = [
        "# Command line",
        "",
        "Generated from `dbconf.cli.build_parser()` when the site is built: the `--help` of",
        "every command. Exit codes: 0 success, 1 a check failed (a database down, migrations",
        "behind), 2 a configuration or usage error. See the guide",
        "[Migrations and the CLI](../guides/migrations-cli.md).",
        "",
        "## dbconf",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    for name, sub in _subparsers(parser):
        out += [f"## dbconf {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(out)


# ---------------------------------------------------------------- errors


def _raised_in(cls_name: str) -> list[str]:
    pattern = re.compile(rf"\braise {cls_name}\b|\b{cls_name}\(")
    places = []
    for path in sorted((ROOT / "dbconf").rglob("*.py")):
        if path.name == "errors.py":
            continue
        if pattern.search(path.read_text()):
            places.append(path.relative_to(ROOT).as_posix())
    return places


def _base(base: type, public: list[str]) -> str:
    if base.__name__ in public:
        return f"[`{base.__name__}`](#{base.__name__.lower()})"
    if base.__module__.startswith("dbconf"):  # a private intermediate class: name its bases
        inner = ", ".join(_base(b, public) for b in base.__bases__)
        return f"`{base.__name__}` ({inner})"
    return f"`{base.__module__}.{base.__qualname__}`"


def errors_page() -> str:
    from dbconf import errors

    out = [
        "# Errors",
        "",
        "Generated from `dbconf/errors.py` when the site is built. Every error dbconf raises",
        "derives from `DbconfError`; none holds a password. The guide page",
        "[Errors](../guides/errors.md) shows what the messages look like.",
        "",
    ]
    for name in errors.__all__:
        cls = getattr(errors, name)
        if not (inspect.isclass(cls) and issubclass(cls, BaseException)):
            continue
        bases = ", ".join(_base(b, errors.__all__) for b in cls.__bases__)
        doc = inspect.cleandoc(cls.__doc__ or "").replace("``", "`")
        out += [f"## {name}", "", f"`dbconf.{name}`, a subclass of {bases}.", "", doc, ""]
        places = _raised_in(name)
        if places:
            out += ["Raised in: " + ", ".join(f"`{p}`" for p in places) + ".", ""]
    return "\n".join(out)


PAGES = {
    "reference/configuration.md": configuration_page,
    "reference/cli.md": cli_page,
    "reference/errors.md": errors_page,
}


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated pages (virtual files, never written to docs/)."""
    from mkdocs.structure.files import File

    for uri, make in PAGES.items():
        files.append(File.generated(config, uri, content=make()))
    return files
