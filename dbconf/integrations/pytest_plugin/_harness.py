"""The plugin's state for one pytest run: test databases, and the connection of each per test.

:class:`Harness` is the load hook and the binder of :mod:`dbconf.runtime.testhooks`: every registry
loaded from the test profile points at the test databases, and while a test runs with rollback
every dbconf session on them is bound to one connection per test database, in an outer
transaction rolled back after the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

import dbconf.integrations.pytest_plugin._databases as _databases
import dbconf.integrations.pytest_plugin._schema as _schema
import dbconf.integrations.pytest_plugin._truncate as _truncate
from dbconf.config import DatabaseConfig
from dbconf.errors import ConfigError
from dbconf.integrations.pytest_plugin._databases import LocationKey, Target
from dbconf.loading.loader import load_profile
from dbconf.runtime.registry import Registry
from dbconf.runtime.testhooks import Binding

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction

ASYNC_MESSAGE = (
    "test {test} opened an async dbconf session on database {name!r} outside the event loop "
    "of the `async_db_session` fixture: request `async_db_session` in this async test (the "
    "sync `db_session` only binds sync sessions)"
)
BLOCK_MESSAGE = (
    "test {test} opened a dbconf session on database {name!r} without the database fixture: "
    "add the `db_session` fixture (or `dbconf_session`, `async_db_session`), or mark it "
    "`@pytest.mark.dbconf` (rolled back after the test) or "
    "`@pytest.mark.dbconf(transaction=True)` (real commits)"
)


@dataclass(frozen=True)
class Options:
    profile: str
    config: Path | None
    reuse: bool
    create: bool
    schema: list[str]
    block: bool
    rootdir: Path


@dataclass
class _Test:
    """The test running now, and what it may do."""

    nodeid: str
    mode: str | None = None  # None (not allowed), "rollback", "transaction"
    connections: dict[LocationKey, tuple[sa.Connection, sa.Transaction]] = field(
        default_factory=dict
    )
    touched: dict[LocationKey, set[str]] = field(default_factory=dict)
    listener: Callable[..., None] | None = None
    async_connections: dict[LocationKey, tuple[AsyncConnection, AsyncTransaction]] = field(
        default_factory=dict
    )
    loop: asyncio.AbstractEventLoop | None = None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Harness:
    def __init__(self, options: Options, worker: str | None, tmp: Callable[[], Path]) -> None:
        self.options = options
        self.worker = worker
        self._tmp = tmp
        self._targets: list[Target] | None = None
        self._loaded: Any = None
        self._by_name: dict[str, Target] = {}
        self._keys: dict[LocationKey, str] = {}  # test location → a database name using it
        self._registry: Registry | None = None
        self._built: list[Target] = []  # created by this run (dropped at the end)
        self._wanted: dict[Target, str] = {}  # fingerprints to store once the schema is built
        self._planning = False
        self.test: _Test | None = None

    # --- the profile, redirected ---------------------------------------------------------

    def _original(self, overrides: Mapping[str, Any] | None = None) -> Any:
        return load_profile(self.options.profile, path=self.options.config, overrides=overrides)

    def targets(self) -> list[Target]:
        if self._targets is None:
            loaded = self._loaded = self._original()
            self._targets = _databases.plan(dict(loaded.config.databases), self.worker, self._tmp())
            self._by_name = {name: t for t in self._targets for name in t.names}
        return self._targets

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for target in self.targets():
            if target.test_database is not None:
                for name in target.names:
                    out[f"databases.{name}.database"] = target.test_database
        return out

    def load_hook(self, profile: str, path: Path) -> Mapping[str, Any] | None:
        if profile != self.options.profile or self._planning:
            return None
        mine = self._original_path()
        if mine is not None and path.resolve() != mine:
            return None
        self._planning = True  # loading the original profile inside must not recurse
        try:
            return self.overrides()
        finally:
            self._planning = False

    def _original_path(self) -> Path | None:
        from dbconf.loading.loader import DEFAULT_PATH, resolve_path

        try:
            return resolve_path(self.options.config, os.environ).resolve()
        except ConfigError:  # no file found upward: only a load of that very path matches
            return DEFAULT_PATH.resolve()

    # --- creating the test databases -----------------------------------------------------

    def registry(self) -> Registry:
        """The test profile's registry, pointed at the test databases, built on first use."""
        if self._registry is None:
            self._setup()
            import dbconf

            self._registry = dbconf.load(self.options.profile, path=self.options.config)
            fresh = {n for t in self._built for n in t.names}
            fresh |= {n for t in self.targets() if t.backend == "sqlite-memory" for n in t.names}
            if fresh:
                _schema.build(_schema.parse(self.options.schema), self._registry, fresh)
            # Only a database whose schema was built completely is marked reusable.
            loaded = self._original()
            for target, wanted in self._wanted.items():
                with self._admin(target, loaded) as conn:
                    _databases.store_fingerprint(conn, target, wanted)
            self._wanted = {}
        return self._registry

    def _setup(self) -> None:
        entries = _schema.parse(self.options.schema)
        loaded = self._original()
        default = loaded.config.default_name
        for target in self.targets():
            if target.backend == "sqlite":
                assert target.test_database is not None
                Path(target.test_database).unlink(missing_ok=True)
                self._built.append(target)
                continue
            if not target.is_server:
                continue
            with self._admin(target, loaded) as conn:
                wanted = _schema.fingerprint(
                    entries, target.names, default, conn.dialect, self.options.rootdir
                )
                if _databases.exists(conn, target):
                    keep = (
                        self.options.reuse
                        and not self.options.create
                        and _databases.fingerprint_of(conn, target) == wanted
                    )
                    if keep:
                        continue
                    _databases.drop(conn, target)
                _databases.create(conn, target)
                self._wanted[target] = wanted
                self._built.append(target)

    @contextlib.contextmanager
    def _admin(self, target: Target, loaded: Any) -> Iterator[sa.Connection]:
        """An AUTOCOMMIT connection to the target's server, built from the profile's own
        settings (credentials, connect_args, timeouts)."""
        name = target.names[0]
        first: sa.exc.OperationalError | None = None
        for fallback in (False, True):
            if fallback:
                url = _databases.admin_url(loaded.config.databases[name], True)
                over = {f"databases.{name}.url": url.render_as_string(hide_password=False)}
                fixed = self._original(over)
                registry = Registry(fixed.config, profile=fixed.name)
            else:
                registry = Registry(loaded.config, profile=loaded.name)
            engine = registry[name].engine.execution_options(isolation_level="AUTOCOMMIT")
            try:
                conn = engine.connect()
            except sa.exc.OperationalError as exc:
                registry.close()
                if first is not None:  # the server itself is unreachable: say so
                    raise first from None
                first = exc
                continue
            try:
                yield conn
            finally:
                conn.close()
                registry.close()
            return

    def teardown(self) -> None:
        """Close the registry; drop the databases this run created unless reusing them."""
        if self._registry is not None:
            self._registry.close()
            self._registry = None
        if self.options.reuse:
            return
        loaded = None
        for target in self._built:
            if target.backend == "sqlite":
                assert target.test_database is not None
                Path(target.test_database).unlink(missing_ok=True)
            elif target.is_server:
                loaded = loaded or self._original()
                with self._admin(target, loaded) as conn:
                    _databases.drop(conn, target)
        self._built = []

    # --- per test ------------------------------------------------------------------------

    def binder(self, name: str, config: DatabaseConfig) -> Binding | None:
        test = self.test
        if test is None:
            return None
        key = _databases.location_key(name, config)
        if not self._is_test_database(key):
            return None
        if test.mode == "rollback":
            return Binding(self._connection(test, key, name))
        if test.mode is None and self.options.block:
            import pytest

            pytest.fail(BLOCK_MESSAGE.format(test=test.nodeid, name=name), pytrace=False)
        return None

    def async_binder(self, name: str, config: DatabaseConfig) -> AsyncConnection | None:
        test = self.test
        if test is None:
            return None
        key = _databases.location_key(name, config)
        if not self._is_test_database(key):
            return None
        if test.mode == "rollback":
            held = test.async_connections.get(key)
            if held is None or test.loop is not _running_loop():
                import pytest

                pytest.fail(ASYNC_MESSAGE.format(test=test.nodeid, name=name), pytrace=False)
            return held[0]
        if test.mode is None and self.options.block:
            import pytest

            pytest.fail(BLOCK_MESSAGE.format(test=test.nodeid, name=name), pytrace=False)
        return None

    async def open_async(self) -> None:
        """Open an async connection in an outer transaction on every test database that has
        an async driver, in the running loop (async sessions cannot connect lazily)."""
        assert self.test is not None
        registry = self.registry()
        self.test.loop = asyncio.get_running_loop()
        for target in self.targets():
            if target.backend == "sqlite-memory":
                continue  # its async engine would be another, empty, in-memory database
            name = target.names[0]
            key = self._redirected_key(name)
            if key in self.test.async_connections or registry[name].config.async_url is None:
                continue
            conn = await registry[name].async_engine.connect()
            self.test.async_connections[key] = (conn, await conn.begin())

    async def close_async(self) -> None:
        """Roll back and close the async connections (in their loop)."""
        test = self.test
        if test is None:
            return
        held, test.async_connections = test.async_connections, {}
        test.loop = None
        for conn, trans in held.values():
            try:
                if trans.is_active:
                    await trans.rollback()
            finally:
                await conn.close()

    def _is_test_database(self, key: LocationKey) -> bool:
        if not self._keys:
            for target in self.targets():
                for name in target.names:
                    self._keys.setdefault(self._redirected_key(name), name)
        return key in self._keys

    def _redirected_key(self, name: str) -> LocationKey:
        target = self._by_name[name]
        config = self._loaded.config.databases[name]
        if target.test_database is None:
            return _databases.location_key(name, config)
        url = config.sqlalchemy_url
        backend = "mysql" if url.get_backend_name() == "mariadb" else url.get_backend_name()
        return (backend, url.host, url.port, target.test_database)

    def _connection(self, test: _Test, key: LocationKey, name: str) -> sa.Connection:
        held = test.connections.get(key)
        if held is None:
            conn = self.registry()[self._keys[key]].engine.connect()
            held = test.connections[key] = (conn, conn.begin())
        return held[0]

    def start(self, nodeid: str) -> None:
        self.test = _Test(nodeid)

    def allow(self, mode: str) -> None:
        assert self.test is not None
        if self.test.mode is not None and self.test.mode != mode:
            raise RuntimeError(
                f"test {self.test.nodeid} uses the rollback fixtures and "
                "@pytest.mark.dbconf(transaction=True) together: pick one"
            )
        if mode == "transaction" and self.test.listener is None:
            self.registry()
            self.test.listener = _truncate.start(self.test.touched)
        self.test.mode = mode

    def end(self) -> None:
        """Roll back and return the test's connections; the binder stops binding."""
        test, self.test = self.test, None
        if test is None:
            return
        if test.listener is not None:
            _truncate.stop(test.listener)
            for key, tables in test.touched.items():
                if self._is_test_database(key):
                    _truncate.truncate(self.registry()[self._keys[key]].engine, tables)
        errors = []
        for conn, trans in test.connections.values():
            try:
                if trans.is_active:
                    trans.rollback()
            except Exception as exc:  # a dead connection: invalidate, report after closing all
                errors.append(exc)
                conn.invalidate()
            finally:
                conn.close()
        if errors:
            raise errors[0]
