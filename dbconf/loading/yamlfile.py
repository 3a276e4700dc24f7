"""Read a YAML file safely and remember the line and column of every key.

Only ``yaml.SafeLoader`` constructs are accepted: a ``!!python/...`` tag is an error. Anchors and
merge keys (``<<: *base``) work. A key written twice in one mapping is an error (PyYAML would
silently keep the last one).

Every way a file can go wrong is a :class:`ConfigError` at file:line:col, never a Python
exception: a value a YAML tag cannot construct (``2024-02-30``, ``!!int abc``, a 5000-digit
integer), an alias that refers to a node containing it, nesting deeper than
:data:`MAX_DEPTH` levels, and a document that expands to more than :data:`MAX_NODES` values
(more in proportion to a raised size cap: :func:`value_cap`) once aliases are expanded
(the "billion laughs" alias bomb). The last three are checked
while the document is composed, before anything is constructed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node
from yaml.resolver import Resolver

from dbconf.config.origin import KeyPath, Origin
from dbconf.errors import ConfigError, Problem
from dbconf.loading.files import (
    CONFIG_LIMIT_VAR,
    DEFAULT_LIMITS,
    UnreadableFileError,
    read_text,
    shown,
)
from dbconf.loading.yamlerrors import explain

__all__ = ["MAX_DEPTH", "MAX_NODES", "read_yaml", "value_cap"]

MAX_DEPTH = 64  # nesting levels, aliases expanded; a real configuration needs about ten
MAX_NODES = 100_000  # values (scalars and collections), aliases expanded, at the default size cap
# What a constructor of a YAML tag raises on a value it cannot read (!!timestamp junk raises
# AttributeError inside PyYAML, !!bool maybe a KeyError, a 5000-digit int a ValueError).
_CONSTRUCTOR_ERRORS = (ValueError, TypeError, ArithmeticError, LookupError, AttributeError)
_TAG_NAMES = {
    "tag:yaml.org,2002:timestamp": "a date or timestamp (does that day exist?)",
    "tag:yaml.org,2002:int": "an integer (digits only, at most 4300 of them)",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean (true or false)",
}


class _Rejected(yaml.MarkedYAMLError):
    """A document dbconf refuses (see the module doc), found the same way by both parsers."""


class _LocatedDict(dict[Any, Any]):
    """A mapping that also knows where each of its keys was written."""

    marks: dict[Any, tuple[int, int]]


class _Checks(Composer, SafeConstructor):
    """Composer and constructor checks shared by the fast (libyaml) and the exact loader.

    The composer is PyYAML's pure-Python one in both: it bounds nesting and alias expansion
    before any object is built. ``_frames`` holds ``[expanded size, height]`` of each node
    being composed; ``_shapes`` the same of each finished anchored node.
    """

    peek_event: Callable[[], Any]  # from the parser it is mixed with

    def _start_checks(self, max_values: int) -> None:
        self._max_values = max_values
        self._frames: list[list[int]] = []
        self._open: set[str] = set()
        self._shapes: dict[str, tuple[int, int]] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Any:
        event: Any = self.peek_event()
        anchor: str | None = event.anchor
        mark: Any = event.start_mark
        node: Any
        if isinstance(event, AliasEvent):
            if anchor in self._open:
                raise _Rejected(
                    None,
                    None,
                    "this alias refers to a node that contains it (a recursive structure); "
                    "an alias may only repeat a value written before it, outside it",
                    mark,
                )
            node = super().compose_node(parent, index)
            size, height = self._shapes[str(anchor)]
        else:
            if len(self._frames) >= MAX_DEPTH:
                raise self._too_deep(mark)
            self._frames.append([1, 0])
            if anchor is not None:
                self._open.add(anchor)
            node = super().compose_node(parent, index)
            if anchor is not None:
                self._open.discard(anchor)
            size, height = self._frames.pop()
            height += 1
            if anchor is not None:
                self._shapes[anchor] = (size, height)
        if len(self._frames) + height > MAX_DEPTH:  # an alias can carry nesting deeper
            raise self._too_deep(mark)
        if self._frames:
            frame = self._frames[-1]
            frame[0] += size
            frame[1] = max(frame[1], height)
            size = frame[0]
        if size > self._max_values:
            raise _Rejected(
                None,
                None,
                f"the document holds more than {self._max_values} values once aliases are "
                "expanded (an alias bomb?); repeat less through aliases, or raise "
                f"{CONFIG_LIMIT_VAR} (the value cap grows with it)",
                mark,
            )
        return node

    @staticmethod
    def _too_deep(mark: Any) -> _Rejected:
        return _Rejected(
            None,
            None,
            f"nested deeper than {MAX_DEPTH} levels (aliases expanded); a configuration "
            "never needs that: look for stray or unclosed '[' or '{'",
            mark,
        )

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except _CONSTRUCTOR_ERRORS as e:
            raise _unconstructable(node, e) from None

    def construct_located_map(self, node: MappingNode) -> Any:
        if not isinstance(node, MappingNode):  # e.g. "!!map x"
            raise _Rejected(None, None, "!!map needs a mapping here", node.start_mark)
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
                raise _Rejected(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}; remove one of them",
                    key_node.start_mark,
                )
            if isinstance(key, Hashable):
                seen.add(key)


_Checks.yaml_constructors = {
    **SafeConstructor.yaml_constructors,
    "tag:yaml.org,2002:map": _Checks.construct_located_map,
}


def _unconstructable(node: Node, e: Exception) -> _Rejected:
    what = _TAG_NAMES.get(node.tag, f"the tag {node.tag}")
    return _Rejected(
        None,
        None,
        f"this value cannot be read as {what} ({type(e).__name__}); "
        "fix it, or quote it to keep it as text",
        node.start_mark,
    )


class _Loader(_Checks, yaml.SafeLoader):
    """The pure-Python safe loader: exact positions in errors."""

    def __init__(self, text: str, max_values: int = MAX_NODES) -> None:
        super().__init__(text)
        self._start_checks(max_values)


try:
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _LOADERS: tuple[type[Any], ...] = (_Loader,)
else:  # libyaml's parser makes the events, ~3x faster overall

    class _FastLoader(_Checks, CParser, Resolver):
        def __init__(self, text: str, max_values: int = MAX_NODES) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._start_checks(max_values)

    _LOADERS = (_FastLoader, _Loader)


def value_cap(max_bytes: int) -> int:
    """How many values a document may expand to: :data:`MAX_NODES` at the default size cap,
    more in proportion to a raised ``DBCONF_MAX_CONFIG_BYTES`` (never fewer)."""
    return max(MAX_NODES, MAX_NODES * max_bytes // DEFAULT_LIMITS[CONFIG_LIMIT_VAR])


def _parse(text: str, loader_class: type[Any], max_values: int) -> Any:
    loader = loader_class(text, max_values)
    try:
        node: Node | None = loader.get_single_node()
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def read_yaml(
    path: Path, max_bytes: int = DEFAULT_LIMITS[CONFIG_LIMIT_VAR]
) -> tuple[Any, dict[KeyPath, Origin]]:
    """Parse ``path``; return plain Python data and the origin of every mapping key."""
    try:
        text, _ = read_text(path, max_bytes, CONFIG_LIMIT_VAR)
    except UnreadableFileError as e:
        raise ConfigError(
            [
                Problem(
                    shown(path),
                    "",
                    f"cannot read the configuration file ({e}); name the right file with "
                    "--config on the command line, path= in code, or env DBCONF_CONFIG",
                )
            ]
        ) from None
    max_values = value_cap(max_bytes)
    try:
        try:
            data = _parse(text, _LOADERS[0], max_values)
        except _Rejected:
            raise
        except yaml.YAMLError:
            # libyaml's error positions differ slightly: parse again in Python to report
            # the exact line and column (errors are rare; the fast path is the common one).
            data = _parse(text, _Loader, max_values)
    except yaml.YAMLError as e:
        where, what = explain(e, text)
    else:
        return _plain(data, path)
    # Raised here, not in the except block: PyYAML's error (and the ValueError under it)
    # quotes the offending line, which may hold a password; it must not ride along.
    raise ConfigError([Problem(f"{shown(path)}:{where}" if where else shown(path), "", what)])


def _plain(data: Any, path: Path) -> tuple[Any, dict[KeyPath, Origin]]:
    origins: dict[KeyPath, Origin] = {}
    problems: list[Problem] = []
    plain = _unlocate(data, (), str(path), origins, problems)
    if problems:
        raise ConfigError(problems)
    return plain, origins


def _unlocate(
    value: Any, path: KeyPath, file: str, origins: dict[KeyPath, Origin], problems: list[Problem]
) -> Any:
    if isinstance(value, list):  # items under their index; a mapping item at its first key
        items = []
        for index, item in enumerate(value):
            here = (*path, str(index))
            items.append(_unlocate(item, here, file, origins, problems))
            first = next(iter(getattr(item, "marks", {}).values()), None)
            if first is not None:
                origins[here] = Origin("file", file, *first)
        return items
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
