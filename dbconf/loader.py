"""YAML profiles + environment → one validated :class:`ProfileConfig`, every value with its origin.

Layers, lowest precedence first (each deep-merges over the one before):

1. built-in defaults (the model defaults, origin ``default``);
2. the profiles named by ``extends``, base first, then the profile itself (``${VAR}`` expanded);
3. ``DATABASE_URL`` (the default database) and ``<NAME>_DATABASE_URL``;
4. ``DBCONF_<PATH>`` env vars, path joined by ``__`` (``DBCONF_DATABASES__PRIMARY__POOL__SIZE``);
5. files in ``DBCONF_SECRETS_DIR`` named like those env vars;
6. ``overrides=`` given in code.

A layer that sets a database's ``url`` drops the URL parts (host, port, …) of the layers below;
``password`` and ``password_file`` likewise replace each other; ``null`` resets a key.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dbconf.config import URL_PARTS, ProfileConfig
from dbconf.errors import ConfigError, Problem, did_you_mean
from dbconf.origin import KeyPath, Origin, find_origin, validation_problems
from dbconf.yamlfile import read_yaml

__all__ = ["DEFAULT_PATH", "LoadedProfile", "list_profiles", "load_profile", "resolve_path"]

log = logging.getLogger("dbconf.loader")

DEFAULT_PATH = Path("config/databases.yaml")
DEFAULT_PROFILE = "development"
ENV_PREFIX = "DBCONF_"
RESERVED_ENV = frozenset({"DBCONF_PROFILE", "DBCONF_CONFIG", "DBCONF_SECRETS_DIR"})
# Keys whose env/secret values stay raw strings (a password "123" must not become an int).
STRING_KEYS = frozenset(
    {
        "url",
        "driver",
        "host",
        "username",
        "password",
        "password_file",
        "database",
        "application_name",
        "isolation_level",
        "default_database",
        "extends",
        "class",  # pool.class: null means NullPool here, not "reset"
    }
)
_VAR = re.compile(r"\$(?:(\$)|\{([^}]*)(\})?)")
_EXPR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?$", re.DOTALL)

Tree = dict[str, Any]
Origins = dict[KeyPath, Origin]


@dataclass(frozen=True)
class LoadedProfile:
    """A validated profile and the origin of each value in it."""

    name: str
    path: Path | None
    config: ProfileConfig
    origins: Mapping[KeyPath, Origin]

    def origin(self, *path: str) -> Origin:
        """Where the value at ``path`` (under the profile) came from; ``default`` if unset."""
        return self.origins.get(path) or Origin("default")


def resolve_path(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """``path`` if given, else ``$DBCONF_CONFIG``, else ``config/databases.yaml``."""
    if path is not None:
        return Path(path)
    return Path(environ["DBCONF_CONFIG"]) if environ.get("DBCONF_CONFIG") else DEFAULT_PATH


def read_profiles(path: Path) -> tuple[dict[str, Tree], Origins]:
    """The raw ``profiles:`` mapping of a file, with origins keyed from ``("profiles", …)``."""
    data, origins = read_yaml(path)
    where = str(path)
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise ConfigError(
            [
                Problem(
                    where,
                    "",
                    "the file must be a mapping with a 'profiles:' "
                    "mapping of profile names (see README: the file format)",
                )
            ]
        )
    problems = [
        Problem(
            str(origins[(key,)]),
            key,
            "unknown top-level key; only 'profiles' is read "
            "(keys starting with 'x-' or '.' are allowed for YAML anchors)",
        )
        for key in data
        if key != "profiles" and not key.startswith(("x-", "."))
    ]
    for name, body in data["profiles"].items():
        if not isinstance(body, dict):
            origin = origins[("profiles", name)]
            problems.append(Problem(str(origin), f"profiles.{name}", "a profile must be a mapping"))
    if problems:
        raise ConfigError(problems)
    return data["profiles"], origins


def list_profiles(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """Profile names in file order, each with the profile it extends (or None)."""
    profiles, _ = read_profiles(resolve_path(path, os.environ if environ is None else environ))
    return {name: body.get("extends") for name, body in profiles.items()}


def load_profile(
    profile: str | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedProfile:
    """Read, merge, interpolate and validate one profile. Raises :class:`ConfigError`."""
    env = os.environ if environ is None else environ
    file = resolve_path(path, env)
    profiles, file_origins = read_profiles(file)
    name, name_origin = _profile_name(profile, env)
    chain = _extends_chain(name, name_origin, profiles, file_origins)

    tree: Tree = {}
    origins: Origins = {}
    for link in chain:
        prefix = ("profiles", link)
        layer_origins = {k[2:]: o for k, o in file_origins.items() if k[:2] == prefix and k[2:]}
        _merge(tree, origins, copy.deepcopy(profiles[link]), layer_origins)
    tree.pop("extends", None)
    origins.pop(("extends",), None)

    problems: list[Problem] = []
    # Env vars and secrets may only name databases that exist: declared in the file, added
    # by DATABASE_URL to a profile without databases, or (for secrets) added by an env var.
    known = copy.deepcopy(tree)
    if not known.get("databases") and (env.get("DATABASE_URL") or env.get("PRIMARY_DATABASE_URL")):
        known["databases"] = {"primary": {}}
    env_layer = _env_layer(env, known, problems)
    _merge(known, {}, copy.deepcopy(env_layer[0]), {})
    upper: list[tuple[Tree, Origins]] = [
        env_layer,
        _secrets_layer(env, known, problems),
        _code_layer(overrides or {}),
    ]
    url_layer = _url_layer(env, tree, upper)
    for layer, layer_origins in [url_layer, *upper]:
        _merge(tree, origins, layer, layer_origins)

    _interpolate_tree(tree, origins, env, problems, ())
    _read_password_files(tree, origins, file, problems)
    prefix = ("profiles", name)
    problems = [
        Problem(p.origin, ".".join((*prefix, p.path)) if p.path else "", p.message)
        for p in problems
    ]
    profile_origin = str(file_origins.get(prefix, file))  # for errors about the whole profile
    try:
        config = ProfileConfig.model_validate(tree)
    except ValidationError as e:
        # Report every problem at once, but not twice: a value that already failed to
        # interpolate or to read is not reported again by validation.
        seen = [p.path for p in problems]
        problems += [
            p
            for p in validation_problems(e, ProfileConfig, origins, prefix, profile_origin)
            if not any(_related(p.path, path) for path in seen)
        ]
        raise ConfigError(problems) from e
    if problems:
        raise ConfigError(problems)
    return LoadedProfile(name, file, config, origins)


def _related(a: str, b: str) -> bool:
    """Whether dotted key paths a and b are equal or one contains the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _profile_name(profile: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    if profile is not None:
        return profile, "profile= in code"
    if env.get("DBCONF_PROFILE"):
        return env["DBCONF_PROFILE"], "env DBCONF_PROFILE"
    return DEFAULT_PROFILE, "default profile"


def _extends_chain(
    name: str, origin: str, profiles: dict[str, Tree], origins: Origins
) -> list[str]:
    """[root base, …, name]; unknown profiles and cycles are errors."""
    if name not in profiles:
        raise ConfigError(
            [
                Problem(
                    origin,
                    "",
                    f"no profile {name!r}{did_you_mean(name, profiles)}"
                    f"; the file declares: {', '.join(profiles)}",
                )
            ]
        )
    chain = [name]
    while (parent := profiles[chain[-1]].get("extends")) is not None:
        where = str(origins[("profiles", chain[-1], "extends")])
        key = f"profiles.{chain[-1]}.extends"
        if not isinstance(parent, str) or parent not in profiles:
            hint = did_you_mean(str(parent), profiles)
            raise ConfigError([Problem(where, key, f"extends unknown profile {parent!r}{hint}")])
        if parent in chain:
            cycle = " → ".join([*chain, parent])
            raise ConfigError(
                [Problem(where, key, f"profiles extend each other in a cycle: {cycle}")]
            )
        chain.append(parent)
    return list(reversed(chain))


def _merge(
    tree: Tree, origins: Origins, layer: Tree, layer_origins: Origins, path: KeyPath = ()
) -> None:
    """Deep-merge ``layer`` into ``tree`` in place, keeping ``origins`` in step."""
    if len(path) == 2 and path[0] == "databases":
        _drop_replaced(tree, origins, layer, path)
    for key, value in layer.items():
        here = (*path, key)
        if value is None:
            if isinstance(tree.get(key), dict | list):
                _drop_origins(origins, here)
            tree.pop(key, None)
            origins.pop(here, None)
        elif isinstance(value, dict) and isinstance(tree.get(key), dict):
            if here in layer_origins and here not in origins:
                origins[here] = layer_origins[here]
            _merge(tree[key], origins, value, layer_origins, here)
        else:
            if isinstance(tree.get(key), dict | list):
                _drop_origins(origins, here)
            tree[key] = value
            origins.update({k: o for k, o in layer_origins.items() if k[: len(here)] == here})


def _drop_replaced(current: Tree, origins: Origins, layer: Tree, path: KeyPath) -> None:
    """A database's url replaces lower URL parts; password and password_file replace each other.

    ``current`` is the database's mapping so far, at ``path`` (``("databases", name)``).
    """
    dropped: list[str] = []
    if layer.get("url") is not None:
        dropped += [k for k in URL_PARTS if k not in layer]
    for key, other in (("password", "password_file"), ("password_file", "password")):
        if layer.get(key) is not None and other not in layer:
            dropped.append(other)
    for key in dropped:
        if current.pop(key, None) is not None:
            _drop_origins(origins, (*path, key))


def _drop_origins(origins: Origins, path: KeyPath) -> None:
    for key in [k for k in origins if k[: len(path)] == path]:
        del origins[key]


def _set_path(tree: Tree, origins: Origins, path: KeyPath, value: Any, origin: Origin) -> None:
    node = tree
    for depth, part in enumerate(path[:-1]):
        node = node.setdefault(part, {})
        origins.setdefault(path[: depth + 1], origin)
    node[path[-1]] = value
    origins[path] = origin


def _scalar(key: str, raw: str) -> Any:
    """Env and secrets-file values parse like YAML scalars, except keys that are strings."""
    if key in STRING_KEYS:
        return raw
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


def _declared_names_check(
    path: KeyPath, where: str, tree: Tree, layer: Tree, problems: list[Problem]
) -> bool:
    """An env var or secret may not invent a database or session flavour by a typo."""
    if len(path) >= 3 and path[0] == "databases":
        known = tree.get("databases", {})
        adds_url = path[2:] == ("url",) or "url" in layer.get("databases", {}).get(path[1], {})
        if path[1] not in known and not adds_url:
            problems.append(
                Problem(
                    where,
                    ".".join(path),
                    f"the profile declares no database "
                    f"{path[1]!r}{did_you_mean(path[1], known)}; set "
                    f"…__{path[1].upper()}__URL to add one",
                )
            )
            return False
        sessions = known.get(path[1], {}).get("sessions", {}) if path[1] in known else {}
        if len(path) >= 5 and path[2] == "sessions" and path[3] not in {*sessions, "default"}:
            problems.append(
                Problem(
                    where,
                    ".".join(path),
                    f"database {path[1]!r} declares no "
                    f"session flavour {path[3]!r}{did_you_mean(path[3], sessions)}",
                )
            )
            return False
    return True


def _env_keyed_layer(
    items: list[tuple[str, str, Origin]], tree: Tree, problems: list[Problem]
) -> tuple[Tree, Origins]:
    layer: Tree = {}
    origins: Origins = {}
    # Two passes: every url first, so a database added by an env var can take its other keys.
    ordered = sorted(items, key=lambda item: not item[0].upper().endswith("__URL"))
    for name, raw, origin in ordered:
        parts = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if not all(parts):
            problems.append(
                Problem(
                    str(origin),
                    "",
                    "empty key segment: separate keys with "
                    "exactly two underscores, e.g. DBCONF_DATABASES__PRIMARY__URL",
                )
            )
            continue
        if _declared_names_check(parts, str(origin), tree, layer, problems):
            _set_path(layer, origins, parts, _scalar(parts[-1], raw), origin)
    return layer, origins


def _env_layer(env: Mapping[str, str], tree: Tree, problems: list[Problem]) -> tuple[Tree, Origins]:
    items = [
        (key, value, Origin("env", key))
        for key, value in env.items()
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in RESERVED_ENV
    ]
    return _env_keyed_layer(items, tree, problems)


def _secrets_layer(
    env: Mapping[str, str], tree: Tree, problems: list[Problem]
) -> tuple[Tree, Origins]:
    directory = env.get("DBCONF_SECRETS_DIR")
    if not directory:
        return {}, {}
    root = Path(directory)
    if not root.is_dir():
        problems.append(Problem("env DBCONF_SECRETS_DIR", "", f"{root} is not a directory"))
        return {}, {}
    items = []
    for entry in sorted(root.iterdir()):
        if entry.name.upper().startswith(ENV_PREFIX) and entry.is_file():
            items.append((entry.name, _read_secret(entry), Origin("secret", str(entry))))
    return _env_keyed_layer(items, tree, problems)


def _read_secret(path: Path) -> str:
    if path.stat().st_mode & stat.S_IROTH:
        log.warning("secret file %s is readable by every user; chmod o-r it", path)
    return path.read_text(encoding="utf-8").rstrip("\r\n")


def _code_layer(overrides: Mapping[str, Any]) -> tuple[Tree, Origins]:
    layer: Tree = {}
    origins: Origins = {}
    origin = Origin("code")

    def walk(value: Mapping[str, Any], path: KeyPath) -> None:
        for key, item in value.items():
            here = (*path, *str(key).split("."))
            if isinstance(item, Mapping):
                walk(item, here)
            else:
                _set_path(layer, origins, here, copy.deepcopy(item), origin)

    walk(overrides, ())
    return layer, origins


def _url_layer(
    env: Mapping[str, str], tree: Tree, upper: list[tuple[Tree, Origins]]
) -> tuple[Tree, Origins]:
    """DATABASE_URL → the default database's url; <NAME>_DATABASE_URL → database NAME's."""
    merged: Tree = copy.deepcopy(tree)
    for upper_layer, _ in upper:
        _merge(merged, {}, copy.deepcopy(upper_layer), {})
    names = list(merged.get("databases") or {}) or ["primary"]
    default = merged.get("default_database") or names[0]
    layer: Tree = {}
    origins: Origins = {}
    for name in names:
        for var in (f"{name.upper()}_DATABASE_URL", *(["DATABASE_URL"] if name == default else [])):
            if env.get(var):
                _set_path(layer, origins, ("databases", name, "url"), env[var], Origin("env", var))
                break
    return layer, origins


def _interpolate_tree(
    node: Any, origins: Origins, env: Mapping[str, str], problems: list[Problem], path: KeyPath
) -> Any:
    """Expand ${VAR} forms in strings that came from the file (env values are taken literally)."""
    if isinstance(node, dict):
        for key in list(node):
            node[key] = _interpolate_tree(node[key], origins, env, problems, (*path, key))
        return node
    if isinstance(node, list):
        return [_interpolate_tree(item, origins, env, problems, path) for item in node]
    origin = find_origin(origins, path)
    if not isinstance(node, str) or origin is None or origin.kind != "file" or "$" not in node:
        return node
    errors: list[str] = []
    used: list[str] = []
    value = interpolate(node, env, errors, used)
    for error in errors:
        problems.append(Problem(str(origin), ".".join(path), error))
    if used and path in origins:
        origins[path] = Origin(
            "file",
            origin.source,
            origin.line,
            origin.column,
            via=", ".join(f"${{{name}}}" for name in used),
        )
    whole = _VAR.fullmatch(node) is not None and node != "$$"
    return _scalar(path[-1], value) if whole and path else value


def interpolate(text: str, env: Mapping[str, str], errors: list[str], used: list[str]) -> str:
    """Expand ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?msg}``, ``$$``."""

    def expand(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        body, closed = match.group(2), match.group(3)
        expr = _EXPR.match(body) if closed else None
        if expr is None:
            errors.append(
                f"malformed ${{{body}{closed or ''}: write ${{VAR}}, ${{VAR:-default}}, "
                "${VAR:?message}, or $$ for a literal $"
            )
            return ""
        var, op, arg = expr.groups()
        used.append(var)
        value = env.get(var)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if not missing:
            return str(value)
        if op in (":-", "-"):
            return str(arg)
        if op in (":?", "?"):
            errors.append(f"environment variable {var} is not set: {arg or 'it is required'}")
        else:
            errors.append(
                f"environment variable {var} is not set; export it, or give a "
                f"default: ${{{var}:-…}}"
            )
        return ""

    return _VAR.sub(expand, text)


def _read_password_files(tree: Tree, origins: Origins, file: Path, problems: list[Problem]) -> None:
    for name, db in (tree.get("databases") or {}).items():
        if not isinstance(db, dict) or db.get("password_file") is None:
            continue
        where = ("databases", name, "password_file")
        origin = origins.get(where)
        key = f"databases.{name}.password_file"
        if db.get("password") is not None:
            problems.append(
                Problem(
                    str(origin),
                    key,
                    "password and password_file are both set at the same level; keep one",
                )
            )
            continue
        secret = Path(str(db["password_file"]))
        if not secret.is_absolute():
            secret = file.parent / secret
        try:
            db["password"] = _read_secret(secret)
        except OSError as e:
            problems.append(
                Problem(
                    str(origin),
                    key,
                    f"cannot read password file {secret} "
                    f"({e.strerror}); fix the path or mount the secret",
                )
            )
            continue
        origins[("databases", name, "password")] = Origin("secret", str(secret))
