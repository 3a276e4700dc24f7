"""Configuration layers: env vars, secrets dir, DATABASE_URL, overrides=.

Each layer is a nested mapping under the profile plus the origin of every key in it (every key
inside a mapping-valued env var too: values from env vars, secrets and code are never
interpolated). Layers merge deeply (:mod:`dbconf.loading.merging`); ``null`` resets a key; a layer
that sets a database's ``url`` replaces the location parts of the layers below it, and their
password only when the URL carries one (a URL without a password keeps the
``password``/``password_file`` from below); ``password``, ``password_file``, ``password_command``
and ``credentials`` replace each other (:data:`dbconf.config.credential_config.CREDENTIAL_KEYS`).

Within one layer the order of its env vars, secrets files or ``overrides=`` keys never matters:
entries apply shallowest key path first, so the keys of a deeper entry merge over a mapping a
shallower one set (``…__POOL='{size: 5}'`` and ``…__POOL__MAX_OVERFLOW=2`` give both keys). A
key set twice (``DBCONF_X`` and ``dbconf_x``), or a key under a value that is not a mapping
(``…__POOL=5`` and ``…__POOL__SIZE=3``), is an error naming both. ``extends`` is read only from
the file (a profile is picked with ``DBCONF_PROFILE``).

The env source follows pydantic-settings' conventions (``DBCONF_`` prefix, ``__`` as the nested
delimiter, a secrets directory: :mod:`dbconf.loading.secrets_dir`) but is our own:
pydantic-settings' env source drops unknown keys silently and keeps no per-value origin, and
both are part of dbconf's contract.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml

from dbconf.config import ProfileConfig
from dbconf.config.origin import KeyPath, Origin
from dbconf.errors import Problem, closest, did_you_mean
from dbconf.loading.files import LIMIT_VARS
from dbconf.loading.merging import Origins, Tree, as_mapping, forget, key_paths, merge

__all__ = [
    "ENV_PREFIX",
    "RESERVED_ENV",
    "Origins",
    "Tree",
    "code_layer",
    "env_items",
    "env_layer",
    "merge",
    "scalar",
    "url_layer",
]

ENV_PREFIX = "DBCONF_"
RESERVED_ENV = frozenset(
    {"DBCONF_PROFILE", "DBCONF_CONFIG", "DBCONF_SECRETS_DIR", "DBCONF_ENV_FILE", *LIMIT_VARS}
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
        "credentials",
        "database",
        "application_name",
        "isolation_level",
        "default_database",
        "extends",
        "class",  # pool.class: null means NullPool here, not "reset"
    }
)


FILE_ONLY = {  # key paths only the file may set, and what to do instead
    ("extends",): "to load another profile set DBCONF_PROFILE (or pass profile= / --profile)"
}
PROFILE_KEYS = tuple(field.alias or name for name, field in ProfileConfig.model_fields.items())
Entry = tuple[KeyPath, Any, Origin]  # one env var, secrets file or overrides= key: path, value
EnvItem = tuple[str, str, Origin]  # an env var or secrets file: name, raw value, origin


def scalar(key: str, raw: str) -> Any:
    """Env and secrets-file values parse like YAML scalars, except keys that are strings.

    A value YAML cannot read (bad syntax, an unknown tag, ``!!int x``, a number too long for
    Python), or that is not a plain tree (an alias used twice or to itself, nesting deeper
    than 32), is the string as written: validation then says whether the key takes a string.
    """
    if key in STRING_KEYS:
        return raw
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except Exception:  # YAMLError, and ValueError/OverflowError/... from tag constructors
        return raw
    return value if _plain_tree(value, 0, set()) else raw


def _plain_tree(value: Any, depth: int, seen: set[int]) -> bool:
    """Whether ``value`` is a tree: no container reached twice, at most 32 levels deep."""
    if not isinstance(value, dict | list):
        return True
    if depth > 32 or id(value) in seen:
        return False
    seen.add(id(value))
    items = value.values() if isinstance(value, dict) else value
    return all(_plain_tree(item, depth + 1, seen) for item in items)


def build_layer(entries: list[Entry], problems: list[Problem]) -> tuple[Tree, Origins]:
    """One layer from its entries, the same whatever their order (see the module docstring)."""
    layer: Tree = {}
    origins: Origins = {}
    set_at: dict[KeyPath, Origin] = {}
    for path, value, origin in sorted(entries, key=lambda e: (len(e[0]), e[0], str(e[2]))):
        node = layer
        for depth in range(1, len(path)):
            prefix, part = path[:depth], path[depth - 1]
            if part not in node:
                node[part] = {}
                origins[prefix] = origin
            elif not isinstance(node[part], dict):
                problems.append(
                    Problem(
                        f"{origins[prefix]} and {origin}",
                        ".".join(prefix),
                        f"the first sets it to a single value, the second sets "
                        f"{'.'.join(path)} under it; keep one",
                    )
                )
                break
            node = node[part]
        else:
            if path in set_at:
                where = f"{set_at[path]} and {origin}"
                problems.append(Problem(where, ".".join(path), "both set this key; keep one"))
                continue
            set_at[path] = origin
            _overlay(node, path, value, origins, origin)
    return layer, origins


def _overlay(node: Tree, path: KeyPath, value: Any, origins: Origins, origin: Origin) -> None:
    """Set ``value`` at ``path`` in its parent ``node``, merging into a mapping already there."""
    key = path[-1]
    old = node.get(key)
    if isinstance(value, dict) and isinstance(old, dict):
        for inner, item in value.items():
            _overlay(old, (*path, inner), item, origins, origin)
        return
    if key in node:
        forget(origins, path, node[key])
    node[key] = value  # null stays: it resets the key in the layers below
    origins[path] = origin
    for inner_path in key_paths(value, path):
        origins[inner_path] = origin


def _admissible(entries: list[Entry], problems: list[Problem]) -> list[Entry]:
    """The entries that set no file-only key and no mapping key that is not a string."""
    kept = []
    for path, value, origin in entries:
        found = [
            Problem(
                str(origin),
                ".".join(str(part) for part in inner[:-1]),
                f"key {inner[-1]!r} must be a string; quote it",
            )
            for inner in key_paths(value, path)
            if not isinstance(inner[-1], str)
        ]
        if path in FILE_ONLY:  # top-level keys: no mapping value can hold one
            message = f"{path[-1]} is read only from the file; {FILE_ONLY[path]}"
            found.append(Problem(str(origin), ".".join(path), message))
        problems += found
        if not found:
            kept.append((path, value, origin))
    return kept


def _declared_names(entries: list[Entry], tree: Tree, problems: list[Problem]) -> list[Entry]:
    """An env var or secret may not invent a database or session flavour by a typo: the path
    in its name must name a database the profile declares (or one this layer gives a url) and,
    under ``sessions``, a declared flavour."""
    known = as_mapping(tree.get("databases"))
    adds = {
        inner[1]
        for path, value, _ in entries
        for inner in (path, *key_paths(value, path))
        if len(inner) == 3 and inner[0] == "databases" and inner[2] == "url"
    }
    kept = []
    for path, value, origin in entries:
        if len(path) >= 3 and path[0] == "databases":
            if path[1] not in known and path[1] not in adds:
                problems.append(
                    Problem(
                        str(origin),
                        ".".join(path),
                        f"the profile declares no database "
                        f"{path[1]!r}{did_you_mean(path[1], known)}; set "
                        f"…__{path[1].upper()}__URL to add one",
                    )
                )
                continue
            sessions = as_mapping(as_mapping(known.get(path[1])).get("sessions"))
            if len(path) >= 5 and path[2] == "sessions" and path[3] not in {*sessions, "default"}:
                problems.append(
                    Problem(
                        str(origin),
                        ".".join(path),
                        f"database {path[1]!r} declares no "
                        f"session flavour {path[3]!r}{did_you_mean(path[3], sessions)}",
                    )
                )
                continue
        kept.append((path, value, origin))
    return kept


def _reserved_hint(name: str) -> str:
    """`` (did you mean 'DBCONF_PROFILE'?)`` for a DBCONF_ name close to a reserved one whose
    first key is not a profile key; else empty."""
    rest = name.upper().removeprefix(ENV_PREFIX)
    if rest.split("__")[0].lower() in PROFILE_KEYS:
        return ""
    suffixes = {reserved.removeprefix(ENV_PREFIX): reserved for reserved in RESERVED_ENV}
    match = closest(rest, sorted(suffixes))  # the closest of all, not the first close one
    return f" (did you mean {suffixes[match]!r}?)" if match is not None else ""


def _env_keyed_layer(
    items: list[EnvItem], tree: Tree, problems: list[Problem]
) -> tuple[Tree, Origins]:
    """Env vars or secrets files (name, raw value, origin) → one layer."""
    entries: list[Entry] = []
    for name, raw, origin in sorted(items, key=lambda item: (item[0], str(item[2]))):
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
        value = scalar(parts[-1], raw)
        if value is raw and parts[-1] not in STRING_KEYS and raw.lstrip().startswith(("{", "[")):
            problems.append(
                Problem(
                    str(origin),
                    ".".join(parts),
                    "cannot be read as a YAML mapping or list (not shown: it may hold a "
                    "secret); check its brackets and quoting, e.g. '{size: 5, timeout: 30s}'",
                )
            )
            continue
        entries.append((parts, value, origin))
    entries = _declared_names(_admissible(entries, problems), tree, problems)
    return build_layer(entries, problems)


def env_items(env: Mapping[str, str], problems: list[Problem]) -> list[EnvItem]:
    """The ``DBCONF_`` vars that name keys. A var named like a reserved one in other capitals,
    or close to one (``DBCONF_PROFIL``), is a problem: it would otherwise do nothing."""
    items = []
    for key, value in sorted(env.items()):
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        if upper in RESERVED_ENV:
            if key != upper:
                problems.append(
                    Problem(f"env {key}", "", f"dbconf reads only {upper}, in capitals: rename it")
                )
        elif hint := _reserved_hint(upper):
            problems.append(
                Problem(
                    f"env {key}",
                    "",
                    f"{key} is not a setting dbconf reads{hint}; it reads "
                    f"{', '.join(sorted(RESERVED_ENV))} and DBCONF_<KEY PATH> for the keys of "
                    f"a profile ({', '.join(PROFILE_KEYS)})",
                )
            )
        else:
            items.append((key, value, Origin("env", key)))
    return items


def env_layer(items: list[EnvItem], tree: Tree, problems: list[Problem]) -> tuple[Tree, Origins]:
    """``DBCONF_<PATH>`` env vars (from :func:`env_items`) → a layer."""
    return _env_keyed_layer(items, tree, problems)


def code_layer(overrides: Any, problems: list[Problem]) -> tuple[Tree, Origins]:
    """``overrides=``: nested mappings and dotted keys (``"databases.primary.pool.size"``)."""
    origin = Origin("code")
    if not isinstance(overrides, Mapping):
        problems.append(
            Problem(
                str(origin),
                "",
                "overrides= must be a mapping of keys (or dotted key paths) to values, "
                "e.g. {'databases.primary.pool.size': 5}",
            )
        )
        return {}, {}
    entries: list[Entry] = []

    def walk(value: Mapping[Any, Any], path: KeyPath) -> None:
        for key, item in value.items():
            here = (*path, *str(key).split("."))
            if not all(here):
                where = ".".join(path)
                problems.append(Problem(str(origin), where, f"empty key segment in {key!r}"))
            elif len(here) > 32 or not _plain_tree(item, 0, set()):
                problems.append(
                    Problem(
                        str(origin),
                        ".".join(here),
                        "not a plain tree of values: nested deeper than 32, "
                        "or a list or mapping used twice or inside itself",
                    )
                )
            elif isinstance(item, Mapping):
                walk(item, here)
            else:
                entries.append((here, copy.deepcopy(item), origin))

    walk(overrides, ())
    return build_layer(_admissible(entries, problems), problems)


def url_layer(
    env: Mapping[str, str], tree: Tree, upper: list[tuple[Tree, Origins]]
) -> tuple[Tree, Origins]:
    """DATABASE_URL → the default database's url; <NAME>_DATABASE_URL → database NAME's."""
    merged: Tree = copy.deepcopy(tree)
    for upper_layer, _ in upper:
        merge(merged, {}, copy.deepcopy(upper_layer), {})
    names = list(as_mapping(merged.get("databases"))) or ["primary"]
    default = merged.get("default_database") or names[0]
    entries: list[Entry] = []
    for name in names:
        for var in (f"{name.upper()}_DATABASE_URL", *(["DATABASE_URL"] if name == default else [])):
            if env.get(var):
                entries.append((("databases", name, "url"), env[var], Origin("env", var)))
                break
    return build_layer(entries, [])  # one path per database: nothing can conflict
