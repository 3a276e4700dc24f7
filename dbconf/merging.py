"""Deep-merging one configuration layer into another, keeping the origin of every key in step.

A tree is the nested mapping under a profile; its origins map every key path in it to where the
value came from. Merging is linear in the size of the layer and of the subtrees it replaces:
origins are found by walking the values themselves, never by scanning the whole origins map.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import make_url

from dbconf.config import URL_PARTS
from dbconf.credential_config import CREDENTIAL_KEYS
from dbconf.origin import KeyPath, Origin

__all__ = ["Origins", "Tree", "as_mapping", "forget", "key_paths", "merge"]

Tree = dict[str, Any]
Origins = dict[KeyPath, Origin]


def as_mapping(value: Any) -> dict[Any, Any]:
    """``value`` if it is a mapping, else an empty one: walkers of user data before validation
    use it so that a value of the wrong shape is left for validation to report, with its origin."""
    return value if isinstance(value, dict) else {}


def key_paths(value: Any, path: KeyPath) -> Iterator[KeyPath]:
    """Every key path inside ``value`` below ``path``, as the file's origins are keyed: the keys
    of mappings inside a list are recorded under the list's own path."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = (*path, key)
            yield here
            yield from key_paths(item, here)
    elif isinstance(value, list):
        for item in value:
            yield from key_paths(item, path)


def forget(origins: Origins, path: KeyPath, value: Any) -> None:
    """Drop the origins of ``path`` and of every key inside its (removed) ``value``."""
    origins.pop(path, None)
    for key in key_paths(value, path):
        origins.pop(key, None)


def merge(
    tree: Tree, origins: Origins, layer: Tree, layer_origins: Origins, path: KeyPath = ()
) -> None:
    """Deep-merge ``layer`` into ``tree`` in place, keeping ``origins`` in step.

    ``null`` removes a key; a mapping merges into a mapping; any other value replaces what was
    there (and the origins inside it).
    """
    if len(path) == 2 and path[0] == "databases":
        _drop_replaced(tree, origins, layer, path)
    for key, value in layer.items():
        here = (*path, key)
        old = tree.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if here in layer_origins and here not in origins:
                origins[here] = layer_origins[here]
            merge(old, origins, value, layer_origins, here)
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


def _drop_replaced(current: Tree, origins: Origins, layer: Tree, path: KeyPath) -> None:
    """A database's url replaces lower URL parts; password, password_file, password_command
    and credentials replace each other (a url with a password replaces them all).

    ``current`` is the database's mapping so far, at ``path`` (``("databases", name)``).
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
