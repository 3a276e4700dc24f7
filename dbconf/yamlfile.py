"""Read a YAML file safely and remember the line and column of every key.

Only ``yaml.SafeLoader`` constructs are accepted: a ``!!python/...`` tag is an error. Anchors and
merge keys (``<<: *base``) work. A key written twice in one mapping is an error (PyYAML would
silently keep the last one).
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

from dbconf.errors import ConfigError, Problem
from dbconf.origin import KeyPath, Origin

__all__ = ["read_yaml"]


class _LocatedDict(dict[Any, Any]):
    """A mapping that also knows where each of its keys was written."""

    marks: dict[Any, tuple[int, int]]


class _Loader(yaml.SafeLoader):
    """The pure-Python safe loader, recording key positions. Exact positions in errors."""

    def construct_located_map(self, node: MappingNode) -> Any:
        data = _LocatedDict()
        data.marks = {}
        yield data
        self._reject_duplicates(node)
        data.update(self.construct_mapping(node))  # flattens merge keys into node.value
        for key_node, _ in node.value:
            key = self.construct_object(key_node)
            mark = key_node.start_mark
            data.marks[key] = (mark.line + 1, mark.column + 1)

    def _reject_duplicates(self, node: MappingNode) -> None:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if isinstance(key, Hashable) and key in seen:
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}; remove one of them",
                    key_node.start_mark,
                )
            if isinstance(key, Hashable):
                seen.add(key)


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_located_map)

if hasattr(yaml, "CSafeLoader"):  # libyaml: the same loader with the C parser, ~7x faster

    class _FastLoader(yaml.CSafeLoader):
        construct_located_map = _Loader.construct_located_map
        _reject_duplicates = _Loader._reject_duplicates

    _FastLoader.add_constructor("tag:yaml.org,2002:map", _FastLoader.construct_located_map)
    _LOADERS: tuple[type[Any], ...] = (_FastLoader, _Loader)
else:  # pragma: no cover - PyYAML built without libyaml
    _LOADERS = (_Loader,)


def _parse(text: str, loader_class: type[Any]) -> Any:
    loader = loader_class(text)
    try:
        node: Node | None = loader.get_single_node()
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def read_yaml(path: Path) -> tuple[Any, dict[KeyPath, Origin]]:
    """Parse ``path``; return plain Python data and the origin of every mapping key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = "it is not UTF-8 text" if isinstance(e, UnicodeDecodeError) else e.strerror
        raise ConfigError(
            [
                Problem(
                    str(path),
                    "",
                    f"cannot read the configuration file ({why}); "
                    "pass path= or set DBCONF_CONFIG to the right file",
                )
            ]
        ) from e
    try:
        try:
            data = _parse(text, _LOADERS[0])
        except yaml.YAMLError:
            # libyaml's error positions differ slightly: parse again in Python to report
            # the exact line and column (errors are rare; the fast path is the common one).
            data = _parse(text, _Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = e.problem or "invalid YAML"
        if "could not determine a constructor" in what:
            what += " (only plain YAML is allowed: python/* and other custom tags are rejected)"
        raise ConfigError([Problem(where, "", what)]) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem(str(path), "", f"invalid YAML: {e}")]) from None
    origins: dict[KeyPath, Origin] = {}
    problems: list[Problem] = []
    plain = _unlocate(data, (), str(path), origins, problems)
    if problems:
        raise ConfigError(problems)
    return plain, origins


def _unlocate(
    value: Any, path: KeyPath, file: str, origins: dict[KeyPath, Origin], problems: list[Problem]
) -> Any:
    if isinstance(value, list):
        return [_unlocate(item, path, file, origins, problems) for item in value]
    if not isinstance(value, dict):
        return value
    marks = getattr(value, "marks", {})
    plain: dict[str, Any] = {}
    for key, item in value.items():
        line, column = marks.get(key, (None, None))
        if not isinstance(key, str):
            where = f"{file}:{line}:{column}" if line else file
            problems.append(
                Problem(where, ".".join(path), f"key {key!r} must be a string; quote it")
            )
            continue
        here = (*path, key)
        origins[here] = Origin("file", file, line, column)
        plain[key] = _unlocate(item, here, file, origins, problems)
    return plain
