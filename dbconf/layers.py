"""Configuration layers and how they merge: env vars, secrets dir, DATABASE_URL, overrides=.

Each layer is a nested mapping under the profile plus the origin of every key in it. Merging is
deep; ``null`` resets a key; a layer that sets a database's ``url`` replaces the location parts
of the layers below it, and their password only when the URL carries one (a URL without a
password keeps the ``password``/``password_file`` from below); ``password`` and
``password_file`` replace each other.

The env source follows pydantic-settings' conventions (``DBCONF_`` prefix, ``__`` as the nested
delimiter, a secrets directory) but is our own: pydantic-settings' env source drops unknown keys
silently and keeps no per-value origin, and both are part of dbconf's contract.
"""

from __future__ import annotations

import copy
import logging
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url

from dbconf.config import URL_PARTS
from dbconf.errors import Problem, did_you_mean
from dbconf.files import (
    CONFIG_LIMIT_VAR,
    SECRET_LIMIT_VAR,
    UnreadableFileError,
    read_text,
    shown,
    size_limits,
)
from dbconf.origin import KeyPath, Origin

__all__ = [
    "ENV_PREFIX",
    "RESERVED_ENV",
    "Origins",
    "Tree",
    "code_layer",
    "env_layer",
    "merge",
    "read_secret",
    "scalar",
    "secrets_layer",
    "url_layer",
]

log = logging.getLogger("dbconf.loader")

ENV_PREFIX = "DBCONF_"
RESERVED_ENV = frozenset(
    {"DBCONF_PROFILE", "DBCONF_CONFIG", "DBCONF_SECRETS_DIR", CONFIG_LIMIT_VAR, SECRET_LIMIT_VAR}
)
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
Tree = dict[str, Any]
Origins = dict[KeyPath, Origin]


def merge(
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
            merge(tree[key], origins, value, layer_origins, here)
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
    url = layer.get("url")
    if url is not None:
        keep = () if _has_password(url) else ("password", "password_file")
        dropped += [k for k in URL_PARTS if k not in layer and k not in keep]
    for key, other in (("password", "password_file"), ("password_file", "password")):
        if layer.get(key) is not None and other not in layer:
            dropped.append(other)
    for key in dropped:
        if current.pop(key, None) is not None:
            _drop_origins(origins, (*path, key))


def _has_password(url: Any) -> bool:
    """Whether a url visibly carries a password (a ``${…}`` template or a bad URL: no)."""
    if not isinstance(url, str) or "${" in url:
        return False
    try:
        return make_url(url).password is not None
    except Exception:
        return False


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


def scalar(key: str, raw: str) -> Any:
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
            _set_path(layer, origins, parts, scalar(parts[-1], raw), origin)
    return layer, origins


def env_layer(env: Mapping[str, str], tree: Tree, problems: list[Problem]) -> tuple[Tree, Origins]:
    items = [
        (key, value, Origin("env", key))
        for key, value in env.items()
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in RESERVED_ENV
    ]
    return _env_keyed_layer(items, tree, problems)


def secrets_layer(
    env: Mapping[str, str], tree: Tree, problems: list[Problem]
) -> tuple[Tree, Origins]:
    directory = env.get("DBCONF_SECRETS_DIR")
    if not directory:
        return {}, {}
    root = Path(directory)
    where = "env DBCONF_SECRETS_DIR"
    try:
        entries = sorted(root.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        problems.append(Problem(where, "", f"{shown(root)} is not a directory"))
        return {}, {}
    except (OSError, ValueError) as e:  # ValueError: a NUL byte or a lone surrogate
        why = e.strerror if isinstance(e, OSError) else "not a valid path"
        problems.append(Problem(where, "", f"cannot list the directory {shown(root)} ({why})"))
        return {}, {}
    limit = size_limits(env).secret
    items = []
    for entry in entries:
        name = entry.name.upper()
        if name.startswith(ENV_PREFIX) and name not in RESERVED_ENV:
            origin = Origin("secret", str(entry))
            try:
                items.append((entry.name, read_secret(entry, limit), origin))
            except UnreadableFileError as e:
                problems.append(Problem(str(origin), "", f"cannot read it: {e}"))
    return _env_keyed_layer(items, tree, problems)


def read_secret(path: Path, limit: int) -> str:
    """A secret file's text, trailing newline stripped; warns when others can read it.

    Raises :class:`~dbconf.files.UnreadableFileError` (not a regular file, over ``limit`` bytes, …).
    """
    text, mode = read_text(path, limit, SECRET_LIMIT_VAR)
    if mode & stat.S_IROTH:
        log.warning("secret file %s is readable by every user; chmod o-r it", shown(path))
    return text.rstrip("\r\n")


def code_layer(overrides: Mapping[str, Any]) -> tuple[Tree, Origins]:
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


def url_layer(
    env: Mapping[str, str], tree: Tree, upper: list[tuple[Tree, Origins]]
) -> tuple[Tree, Origins]:
    """DATABASE_URL → the default database's url; <NAME>_DATABASE_URL → database NAME's."""
    merged: Tree = copy.deepcopy(tree)
    for upper_layer, _ in upper:
        merge(merged, {}, copy.deepcopy(upper_layer), {})
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
