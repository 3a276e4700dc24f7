"""The ``dbconf_schema`` ini key: how the test databases get their tables, and its fingerprint.

Each line is ``[database=]module:attribute.path``:

- a :class:`sqlalchemy.MetaData` (``myapp.models:Base.metadata``): ``create_all`` on that
  database (the profile's default database when no ``database=`` is written);
- a callable (``myapp.testing:setup_schema``): called once with the test profile's
  :class:`~dbconf.Registry` (run Alembic there, for example).

The fingerprint that ``--dbconf-reuse-db`` compares is, per test database, a hash of the
``CREATE`` statements of its metadata (compiled for its dialect) and of each callable's
import path, plus the callable's ``dbconf_fingerprint()`` result if it has one, plus the
Alembic heads of ``alembic.ini`` in the rootdir when Alembic is installed.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from dbconf.runtime.registry import Registry


@dataclass(frozen=True)
class SchemaEntry:
    spec: str  # as written in the ini
    database: str | None  # None: the default database (metadata) / all (callable)
    obj: Any


def _resolve(spec: str) -> Any:
    module_name, sep, path = spec.partition(":")
    if not sep or not module_name or not path:
        raise ValueError(
            f"dbconf_schema entry {spec!r}: write module:attribute "
            "(myapp.models:Base.metadata or myapp.testing:setup_schema)"
        )
    obj: Any = importlib.import_module(module_name)
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"dbconf_schema entry {spec!r}: no attribute {part!r}") from None
    return obj


def parse(lines: list[str]) -> list[SchemaEntry]:
    entries = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        database, sep, spec = line.partition("=")
        if not sep:
            database, spec = "", line
        obj = _resolve(spec.strip())
        if not isinstance(obj, sa.MetaData) and not callable(obj):
            raise ValueError(
                f"dbconf_schema entry {spec.strip()!r} is a {type(obj).__name__}: name a "
                "sqlalchemy MetaData or a callable taking the Registry"
            )
        entries.append(SchemaEntry(line, database.strip() or None, obj))
    return entries


def _metadata_ddl(metadata: sa.MetaData, dialect: sa.Dialect) -> str:
    parts = []
    for table in metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(dialect=dialect)))
        parts += [str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes]
    return "\n".join(parts)


def _alembic_heads(rootdir: Path) -> str:
    ini = rootdir / "alembic.ini"
    if not ini.is_file():
        return ""
    try:
        from alembic.config import Config  # type: ignore[import-not-found,unused-ignore]
        from alembic.script import ScriptDirectory  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return ""
    heads = ScriptDirectory.from_config(Config(str(ini))).get_heads()
    return "alembic heads " + ",".join(sorted(heads))


def fingerprint(
    entries: list[SchemaEntry],
    names: tuple[str, ...],
    default: str,
    dialect: sa.Dialect,
    rootdir: Path,
) -> str:
    """The fingerprint of what ``entries`` build in the test database used by ``names``."""
    parts: list[str] = []
    for entry in entries:
        if isinstance(entry.obj, sa.MetaData):
            if (entry.database or default) in names:
                parts.append(_metadata_ddl(entry.obj, dialect))
        else:
            fn: Callable[..., Any] = entry.obj
            parts.append(f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', fn)}")
            extra = getattr(fn, "dbconf_fingerprint", None)
            if callable(extra):
                parts.append(str(extra()))
            parts.append(_alembic_heads(rootdir))
    return hashlib.sha256("\n--\n".join(parts).encode()).hexdigest()[:32]


def build(entries: list[SchemaEntry], registry: Registry, names: set[str] | None) -> None:
    """Build the schema in the databases ``names`` (None: all) of ``registry``."""
    for entry in entries:
        if isinstance(entry.obj, sa.MetaData):
            name = entry.database or registry.config.default_name
            if names is None or name in names:
                entry.obj.create_all(registry[name].engine)
        elif names is None or names:
            entry.obj(registry)
