"""dbconf.dialects: one module per backend, asked by the layers above it; no import circle, and
no module imports a higher layer than its own."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from dbconf.dialects import DIALECTS, dialect_for, mysql, postgresql
from dbconf.dialects.base import TIMEOUT_KEYS
from dbconf.dialects.postgresql import pg_option_names

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "dbconf"


# --- the registry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "name"),
    [("postgresql", "postgresql"), ("mysql", "mysql"), ("mariadb", "mysql"), ("sqlite", "sqlite")],
)
def test_dialect_for_every_backend(backend: str, name: str) -> None:
    dialect = dialect_for(backend)
    assert dialect is not None
    assert dialect.name == name
    assert backend in dialect.backends


@given(st.text(max_size=12).filter(lambda s: s not in ("postgresql", "mysql", "mariadb", "sqlite")))
def test_dialect_for_an_unknown_backend_is_none(backend: str) -> None:
    assert dialect_for(backend) is None


def test_each_backend_belongs_to_one_dialect() -> None:
    backends = [b for d in DIALECTS for b in d.backends]
    assert len(backends) == len(set(backends))
    assert all(dialect_for(b) is d for d in DIALECTS for b in d.backends)


def test_every_extra_a_dialect_names_exists_in_pyproject() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = set(re.findall(r"^([\w-]+) = ", section, re.MULTILINE))
    named = {extra for d in DIALECTS for extra in d.drivers.values() if extra is not None}
    assert named
    assert named <= extras


def test_every_known_driver_is_a_sqlalchemy_dialect_and_translated() -> None:
    for dialect in DIALECTS:
        assert set(dialect.drivers) <= dialect.translated_drivers
        for name in dialect.known_drivers:
            assert make_url(f"{name}://").get_dialect().name in dialect.backends


def test_default_drivers_name_a_known_driver_of_the_dialect() -> None:
    for dialect in DIALECTS:
        for drivername in dialect.default_drivers.values():
            backend, _, driver = drivername.partition("+")
            assert backend in dialect.backends
            assert driver in dialect.drivers


def test_per_driver_tables_are_about_translated_drivers() -> None:
    for d in DIALECTS:
        tables = (d.query_keys, d.connect_args, d.query_parts)
        assert {driver for table in tables for driver in table} <= d.translated_drivers | set(
            d.async_driver_args
        )
        for driver, parts in d.query_parts.items():
            assert set(parts) <= d.query_keys[driver]


# --- the tables of one dialect agree with each other ------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    connect: float | None = None
    statement: float | None = None
    lock: float | None = None
    idle_in_transaction: float | None = None


@dataclass(frozen=True)
class Settings:
    timeouts: Timeouts
    application_name: str | None = None
    sqlite: None = None
    disconnect_sqlstates: None = None
    pool: None = None
    is_sqlite_memory: bool = False


durations = st.none() | st.floats(min_value=0.001, max_value=1e5, allow_nan=False)
timeouts = st.builds(Timeouts, durations, durations, durations, durations)


@given(timeouts)
def test_postgresql_options_set_exactly_the_gucs_the_conflict_check_looks_for(
    t: Timeouts,
) -> None:
    options = postgresql.driver_args(Settings(t)).get("options", "")
    expected = [guc for key, guc in postgresql.GUCS.items() if getattr(t, key) is not None]
    assert pg_option_names(options) == expected


@given(timeouts, st.sampled_from(["10.11.6-MariaDB", "8.0.36"]))
def test_mysql_session_sets_only_variables_the_conflict_check_looks_for(
    t: Timeouts, version: str
) -> None:
    sql = mysql.session_sql(version, t) or ""
    for key in TIMEOUT_KEYS:
        names = mysql.VARIABLES.get(key, ())
        assert any(f"{n} =" in sql for n in names) == (
            key != "connect" and getattr(t, key) is not None
        )


# --- layering: no import circle ------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Without the package's __init__ (the public facade on top of everything, which every
# ``from dbconf import x`` runs first anyway).
MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path) -> set[str]:
    """The dbconf modules a module imports at run time (anywhere, lazily too), without the
    ``if TYPE_CHECKING:`` blocks."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name in MODULES}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _reaches(start: str, goal: str) -> bool:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            if nxt == goal:
                return True
            seen.add(nxt)
            todo.append(nxt)
    return False


def test_the_graph_sees_the_modules() -> None:
    assert {"dbconf.config", "dbconf.runtime.builder", "dbconf.dialects.postgresql"} <= set(GRAPH)
    assert "dbconf.dialects.base" in GRAPH["dbconf.dialects.mysql"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_itself_back(module: str) -> None:
    assert not _reaches(module, module)


def test_dialects_import_no_higher_layer() -> None:
    allowed = {"dbconf.errors"}  # dbconf.config imports the dialects: nothing of it here
    for module, imports in GRAPH.items():
        if module.startswith("dbconf.dialects"):
            outside = {m for m in imports if not m.startswith("dbconf.dialects")}
            assert outside <= allowed, module


def test_config_imports_neither_builder_nor_rules() -> None:
    for higher in (
        "dbconf.runtime.builder",
        "dbconf.runtime.rules",
        "dbconf.runtime.registry",
        "dbconf.loading.loader",
    ):
        assert not _reaches("dbconf.config", higher)


# The packages by layer, lowest first; a module imports only its own layer and lower ones.
RANK = {
    "errors": 0,
    "dialects": 1,
    "config": 2,
    "loading": 3,
    "sessions": 4,
    "pooling": 4,
    "runtime": 5,
    "replicas": 5,  # a database owns its router; the router builds its replicas' engines
    "integrations": 6,
    "cli": 7,
}
UPWARD_BY_DESIGN = {("dbconf.loading.loader", "dbconf.runtime.rules")}  # build problems at load


def _rank(module: str) -> int:
    """The layer of a module; the facade (``dbconf``, ``dbconf.__main__``) is above them all."""
    return RANK.get(module.split(".")[1], len(RANK)) if module.count(".") else len(RANK)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.count(".")))
def test_module_imports_no_higher_layer(module: str) -> None:
    upward = {
        target
        for target in GRAPH[module]
        if _rank(target) > _rank(module) and (module, target) not in UPWARD_BY_DESIGN
    }
    assert not upward, f"{module} imports a higher layer: {sorted(upward)}"


def test_server_dialects_pre_ping_by_default_and_sqlite_does_not() -> None:
    for dialect in DIALECTS:
        defaults = dialect.pool_defaults(Settings(Timeouts()))
        assert defaults.get("pool_pre_ping", False) is (dialect.server_limit is not None)
