"""Replica URLs from the environment: ``<NAME>_REPLICA_<N>_DATABASE_URL``.

Beside ``<NAME>_DATABASE_URL`` (a database's url), ``PRIMARY_REPLICA_0_DATABASE_URL`` sets the
url of replica 0 of database ``primary``, at the same precedence (below the ``DBCONF_``
variables). As with ``DBCONF_DATABASES__PRIMARY__REPLICAS__0__URL`` (:mod:`dbconf.loading.merging`),
index N changes replica N or adds the next replica (N = the number of replicas below); a larger
N is an error naming the variable. It applies only to a database the profile declares; when the
profile also declares a database named ``<name>_replica_<n>``, the variable is that database's.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from dbconf.config.origin import KeyPath, Origin
from dbconf.loading.layers import Origins, Tree, build_layer, merge
from dbconf.loading.merging import as_mapping

__all__ = ["replica_url_layer"]


def replica_url_layer(
    env: Mapping[str, str], tree: Tree, upper: list[tuple[Tree, Origins]]
) -> tuple[Tree, Origins]:
    """Every non-empty ``<NAME>_REPLICA_<N>_DATABASE_URL`` of a declared database → a layer
    (``tree``: the profile so far; ``upper``: the layers above, which may declare databases)."""
    merged: Tree = copy.deepcopy(tree)
    for upper_layer, _ in upper:
        merge(merged, {}, copy.deepcopy(upper_layer), {})
    declared = set(as_mapping(merged.get("databases")))
    entries: list[tuple[KeyPath, Any, Origin]] = []
    for name in sorted(declared):
        pattern = re.compile(rf"{re.escape(name.upper())}_REPLICA_([0-9]+)_DATABASE_URL")
        for var, value in sorted(env.items()):
            match = pattern.fullmatch(var)
            if match is None or not value or var[: -len("_DATABASE_URL")].lower() in declared:
                continue
            path = ("databases", name, "replicas", str(int(match[1])), "url")
            entries.append((path, value, Origin("env", var)))
    return build_layer(entries, [])  # one path per replica: nothing can conflict
