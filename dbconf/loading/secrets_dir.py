"""The secrets directory layer: ``DBCONF_SECRETS_DIR``, one file per key.

Each file named like a ``DBCONF_<KEY PATH>`` env var (any case) sets that key to its content,
trailing newline stripped, read safely (:mod:`dbconf.loading.files`: a regular file only,
size-capped) and warned about when every user can read it. The files make the same layer as
env vars would (:func:`dbconf.loading.layers.env_layer`): same parsing, same rules, and their
origin is the file's path. The layer sits between the env vars and ``overrides=``.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Mapping
from pathlib import Path

from dbconf.config.origin import Origin
from dbconf.errors import Problem
from dbconf.loading.files import (
    SECRET_LIMIT_VAR,
    UnreadableFileError,
    read_text,
    shown,
    size_limits,
)
from dbconf.loading.layers import ENV_PREFIX, RESERVED_ENV, env_layer
from dbconf.loading.merging import Origins, Tree

__all__ = ["read_secret", "secrets_layer"]

log = logging.getLogger("dbconf.loader")


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
    return env_layer(items, tree, problems)


def read_secret(path: Path, limit: int) -> str:
    """A secret file's text, trailing newline stripped; warns when others can read it.

    Raises :class:`~dbconf.loading.files.UnreadableFileError` (not a regular file, over ``limit``
    bytes, …).
    """
    text, mode = read_text(path, limit, SECRET_LIMIT_VAR)
    if mode & stat.S_IROTH:
        log.warning("secret file %s is readable by every user; chmod o-r it", shown(path))
    return text.rstrip("\r\n")
