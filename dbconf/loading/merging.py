"""Deep-merging one configuration layer into another, keeping the origin of every key in step.

A tree is the nested mapping under a profile; its origins map every key path in it to where the
value came from (a list item's keys under its index: ``("databases", "primary", "replicas",
"0", "url")``). A list replaces the list below, except a database's ``replicas`` set by index
(``DBCONF_DATABASES__PRIMARY__REPLICAS__0__URL`` builds ``{"replicas": {"0": {"url": …}}}``):
index N merges into replica N below, or adds a replica when N is the number of replicas below
(N = 0 on a database without replicas); a larger N, a null or a non-index key is a problem
(a replica is never removed or left as a gap by one variable: set the whole list instead).

Merging is linear in the size of the layer and of the subtrees it replaces:
origins are found by walking the values themselves, never by scanning the whole origins map.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import make_url

from dbconf.config.credential_config import CREDENTIAL_KEYS
from dbconf.config.models import URL_PARTS
from dbconf.config.origin import KeyPath, Origin, dotted, find_origin
from dbconf.errors import Problem

__all__ = ["Origins", "Tree", "as_mapping", "forget", "key_paths", "merge"]

Tree = dict[str, Any]
Origins = dict[KeyPath, Origin]


def as_mapping(value: Any) -> dict[Any, Any]:
    """``value`` if it is a mapping, else an empty one: walkers of user data before validation
    use it so that a value of the wrong shape is left for validation to report, with its origin."""
    return value if isinstance(value, dict) else {}


def key_paths(value: Any, path: KeyPath) -> Iterator[KeyPath]:
    """Every key path inside ``value`` below ``path``, as the file's origins are keyed: a list
    item under its index (``"0"``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = (*path, key)
            yield here
            yield from key_paths(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            here = (*path, str(index))
            yield here
            yield from key_paths(item, here)


def forget(origins: Origins, path: KeyPath, value: Any) -> None:
    """Drop the origins of ``path`` and of every key inside its (removed) ``value``."""
    origins.pop(path, None)
    for key in key_paths(value, path):
        origins.pop(key, None)


def merge(
    tree: Tree,
    origins: Origins,
    layer: Tree,
    layer_origins: Origins,
    path: KeyPath = (),
    problems: list[Problem] | None = None,
) -> None:
    """Deep-merge ``layer`` into ``tree`` in place, keeping ``origins`` in step.

    ``null`` removes a key; a mapping merges into a mapping; replicas set by index merge into
    the list (see the module docstring; what cannot is appended to ``problems``); any other
    value replaces what was there (and the origins inside it).
    """
    if _is_location(path):
        _drop_replaced(tree, origins, layer, path)
    for key, value in layer.items():
        here = (*path, key)
        old = tree.get(key)
        if isinstance(value, dict) and _is_replicas(here) and not isinstance(old, dict):
            tree[key] = _merge_indexed(old, origins, value, layer_origins, here, problems)
            continue
        if isinstance(value, dict) and isinstance(old, dict):
            if here in layer_origins and here not in origins:
                origins[here] = layer_origins[here]
            merge(old, origins, value, layer_origins, here, problems)
            continue
        if key in tree:
            forget(origins, here, tree.pop(key))
        if value is None:
            continue
        tree[key] = value
        if here in layer_origins:
            origins[here] = layer_origins[here]
        for inner in key_paths(value, here):
            if inner in layer_origins:
                origins[inner] = layer_origins[inner]


def _is_location(path: KeyPath) -> bool:
    """``("databases", name)`` or ``("databases", name, "replicas", index)``."""
    return (len(path) == 2 or (len(path) == 4 and path[2] == "replicas")) and (
        path[0] == "databases"
    )


def _is_replicas(path: KeyPath) -> bool:
    return len(path) == 3 and path[0] == "databases" and path[2] == "replicas"


def _merge_indexed(
    old: Any,
    origins: Origins,
    layer: dict[Any, Any],
    layer_origins: Origins,
    path: KeyPath,
    problems: list[Problem] | None,
) -> Any:
    """The replicas list ``old`` with ``layer``'s entries (index → replica) merged in."""
    items: list[Any] = old if isinstance(old, list) else []
    found: list[Problem] = []

    def problem(index: str, message: str) -> None:
        origin = find_origin(layer_origins, (*path, index))
        found.append(Problem(str(origin or ""), dotted((*path, index)), message))

    def order(index: Any) -> tuple[int, str]:
        return (int(index), "") if str(index).isdigit() else (-1, str(index))

    for index in sorted(layer, key=order):
        value, here = layer[index], (*path, str(index))
        if not (isinstance(index, str) and index.isdigit() and str(int(index)) == index):
            problem(str(index), f"{index!r} is not a replica index: number replicas from 0")
        elif value is None:
            problem(
                index,
                "one replica cannot be removed (the others would change index); "
                "set the whole replicas list instead",
            )
        elif (
            int(index) < len(items)
            and isinstance(value, dict)
            and isinstance(items[int(index)], dict)
        ):
            merge(items[int(index)], origins, value, layer_origins, here, problems)
        elif int(index) <= len(items):
            if int(index) < len(items):
                forget(origins, here, items[int(index)])
                items[int(index)] = value
            else:
                items.append(value)
            for inner in (here, *key_paths(value, here)):
                if inner in layer_origins:
                    origins[inner] = layer_origins[inner]
        else:
            problem(
                index,
                f"there {'is' if len(items) == 1 else 'are'} {len(items)} "
                f"replica{'' if len(items) == 1 else 's'} below this setting, so replica "
                f"{index} would leave a gap; add replica {len(items)} first (an index may "
                "change a declared replica or add the next one)",
            )
    if problems is not None:
        problems += found
    if path not in origins and path in layer_origins:
        origins[path] = layer_origins[path]
    return items


def _drop_replaced(current: Tree, origins: Origins, layer: Tree, path: KeyPath) -> None:
    """A database's (or a replica's) url replaces lower URL parts; password, password_file,
    password_command and credentials replace each other (a url with a password replaces them
    all), so do host and hosts.

    ``current`` is the database's (replica's) mapping so far, at ``path``.
    """
    dropped: list[str] = []
    url = layer.get("url")
    if url is not None:
        keep = () if _has_password(url) else CREDENTIAL_KEYS
        dropped += [k for k in URL_PARTS if k not in layer and k not in keep]
    if any(layer.get(key) is not None for key in CREDENTIAL_KEYS):
        dropped += [k for k in CREDENTIAL_KEYS if k not in layer]
    if (
        "credentials" in dropped
        and "password_command" in dropped
        and "credentials_ttl" not in layer
    ):
        dropped.append("credentials_ttl")  # nothing left for it to cache
    if layer.get("host") is not None and "hosts" not in layer:
        dropped.append("hosts")
    if layer.get("hosts") is not None and "host" not in layer:
        dropped.append("host")
    for key in dropped:
        if key in current:
            forget(origins, (*path, key), current.pop(key))


def _has_password(url: Any) -> bool:
    """Whether a url visibly carries a password (a ``${…}`` template or a bad URL: no)."""
    if not isinstance(url, str) or "${" in url:
        return False
    try:
        return make_url(url).password is not None
    except Exception:
        return False
