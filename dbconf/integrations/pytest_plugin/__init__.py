"""dbconf's pytest plugin: test databases from the test profile, a rolled-back transaction per test.

Registered through the ``pytest11`` entry point ``dbconf``; disable it with ``-p no:dbconf``.
Importing it imports only pytest; it does nothing in a run that neither configures it (a
``--dbconf-*`` option or a ``dbconf_*`` ini key) nor uses its fixtures or marker.

Fixtures: ``dbconf_registry`` (session: the test profile's Registry, pointed at the test
databases), ``db_session`` (a Session on the default database), ``dbconf_session`` (factory:
``dbconf_session("analytics", flavour="default")``), ``async_db_session``. Marker:
``@pytest.mark.dbconf`` (rollback, no session needed) and
``@pytest.mark.dbconf(transaction=True)`` (real commits; written tables emptied after).
See the README section "Testing your app".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from dbconf.integrations.pytest_plugin._harness import Harness
    from dbconf.runtime.registry import Registry

__all__ = ["HARNESS"]

HARNESS = pytest.StashKey["Harness"]()
_RESTORE = pytest.StashKey[Callable[[], None]]()
_ASYNCIO_MARK = "_force_asyncio_fixture"
_FIXTURES = frozenset({"dbconf_registry", "db_session", "dbconf_session", "async_db_session"})
_INI = ("dbconf_profile", "dbconf_config", "dbconf_schema", "dbconf_block")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dbconf", "dbconf test databases")
    group.addoption(
        "--dbconf-profile",
        default=None,
        help="profile of the test databases (ini dbconf_profile; default: test)",
    )
    group.addoption(
        "--dbconf-config",
        default=None,
        help="dbconf config file (ini dbconf_config; default: $DBCONF_CONFIG, else "
        "config/databases.yaml found from the working directory upward)",
    )
    group.addoption(
        "--dbconf-reuse-db",
        action="store_true",
        default=False,
        help="keep the test databases after the run and reuse them while their schema "
        "fingerprint is unchanged",
    )
    group.addoption(
        "--dbconf-create-db",
        action="store_true",
        default=False,
        help="re-create the test databases even with --dbconf-reuse-db",
    )
    parser.addini("dbconf_profile", "profile of the test databases (default: test)", default="")
    parser.addini("dbconf_config", "dbconf config file", default="")
    parser.addini(
        "dbconf_schema",
        "how to build the test schema: [database=]module:Base.metadata, or "
        "module:setup_schema (called with the Registry); one per line",
        type="linelist",
        default=[],
    )
    parser.addini(
        "dbconf_block",
        "fail a test that opens a dbconf session without the dbconf fixtures or marker",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "dbconf(transaction=False): use the dbconf test databases; rolled back after the "
        "test, or with transaction=True real commits and the written tables emptied after",
    )
    configured = any(config.getini(key) for key in _INI) or any(
        config.getoption(opt)
        for opt in ("dbconf_profile", "dbconf_config", "dbconf_reuse_db", "dbconf_create_db")
    )
    if configured:
        _activate(config, set_profile=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the test databases here, not at unconfigure: an xdist worker reports itself
    finished right after this hook, and may be shut down before it unconfigures."""
    harness = session.config.stash.get(HARNESS, None)
    if harness is not None:
        harness.teardown()


def pytest_unconfigure(config: pytest.Config) -> None:
    restore = config.stash.get(_RESTORE, None)
    if restore is not None:
        restore()
        del config.stash[_RESTORE]


def _activate(config: pytest.Config, set_profile: bool = False) -> Harness:
    """Create the harness and install its hooks (once per run). ``set_profile`` (the plugin is
    configured, so this runs before collection): ``DBCONF_PROFILE`` (and ``DBCONF_CONFIG``)
    name the test profile for the run; a first use in a fixture of an unconfigured run does
    not change the environment of the tests that follow."""
    harness = config.stash.get(HARNESS, None)
    if harness is not None:
        return harness
    from dbconf.integrations.pytest_plugin._harness import Harness, Options
    from dbconf.runtime import testhooks

    profile = config.getoption("dbconf_profile") or config.getini("dbconf_profile") or "test"
    path = config.getoption("dbconf_config") or config.getini("dbconf_config") or None
    options = Options(
        profile=profile,
        config=Path(config.rootpath, path) if path else None,
        reuse=bool(config.getoption("dbconf_reuse_db")),
        create=bool(config.getoption("dbconf_create_db")),
        schema=list(config.getini("dbconf_schema")),
        block=bool(config.getini("dbconf_block")),
        rootdir=config.rootpath,
    )

    def tmp() -> Path:
        factory = getattr(config, "_tmp_path_factory", None)
        if factory is not None:
            base: Path = factory.getbasetemp()
            return base
        import tempfile

        return Path(tempfile.mkdtemp(prefix="dbconf-test-"))

    # xdist's worker id from the config (not PYTEST_XDIST_WORKER: an in-process pytest run
    # inside a worker, pytester's, inherits that variable without being a worker)
    worker = getattr(config, "workerinput", {}).get("workerid")
    harness = Harness(options, worker, tmp)
    # The app's own dbconf.load() (no profile named) gets the test profile for this run.
    patch = pytest.MonkeyPatch()
    if set_profile:
        patch.setenv("DBCONF_PROFILE", profile)
        if options.config is not None:
            patch.setenv("DBCONF_CONFIG", str(options.config))
    previous = testhooks.set_hooks(harness.load_hook, harness.binder, harness.async_binder)

    def restore() -> None:
        try:
            harness.teardown()
        finally:
            testhooks.set_hooks(*previous)
            patch.undo()
            del config.stash[HARNESS]

    config.stash[HARNESS] = harness
    config.stash[_RESTORE] = restore
    return harness


@pytest.fixture(autouse=True)
def _dbconf_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Per test: tell the harness a test runs (for the blocker), apply the marker, and roll
    back / empty tables afterwards. Does nothing when the plugin is not in use."""
    marker = request.node.get_closest_marker("dbconf")
    harness = request.config.stash.get(HARNESS, None)
    if harness is None and marker is None and not _FIXTURES.intersection(request.fixturenames):
        yield
        return
    if harness is None:
        harness = _activate(request.config)
    harness.start(request.node.nodeid)
    try:
        if marker is not None:
            request.getfixturevalue("dbconf_registry")
            transaction = bool(marker.kwargs.get("transaction", False))
            harness.allow("transaction" if transaction else "rollback")
        yield
    finally:
        harness.end()


@pytest.fixture(scope="session")
def dbconf_registry(request: pytest.FixtureRequest) -> Registry:
    """The test profile's :class:`~dbconf.Registry`, pointed at the test databases (created
    and given their schema on first use; dropped at the end unless ``--dbconf-reuse-db``)."""
    return _activate(request.config).registry()


def _harness_for_test(request: pytest.FixtureRequest) -> Harness:
    harness = _activate(request.config)
    if harness.test is None:  # the autouse fixture was overridden or disabled
        raise RuntimeError("dbconf: the _dbconf_test fixture did not run for this test")
    harness.allow("rollback")
    return harness


@pytest.fixture
def dbconf_session(
    request: pytest.FixtureRequest, dbconf_registry: Registry
) -> Iterator[Callable[..., Session]]:
    """A factory: ``dbconf_session("analytics", flavour="default")`` → a Session on that
    database, in the test's transaction (rolled back after the test)."""
    _harness_for_test(request)
    opened: list[Session] = []

    def make(name: str | None = None, flavour: str = "default") -> Session:
        db = dbconf_registry[name] if name else dbconf_registry.default
        session = db.sessionmaker(flavour)()
        opened.append(session)
        return session

    yield make
    for session in opened:
        session.close()


@pytest.fixture
def db_session(dbconf_session: Callable[..., Session]) -> Session:
    """A Session on the test profile's default database, in the test's transaction: what it
    and the application's dbconf sessions write is rolled back after the test."""
    return dbconf_session()


@pytest.fixture
async def async_db_session(
    request: pytest.FixtureRequest, dbconf_registry: Registry
) -> AsyncIterator[AsyncSession]:
    """An AsyncSession on the default database for an async test (pytest-asyncio or anyio):
    every async dbconf session the app opens in this test's event loop joins one outer
    transaction per test database, rolled back after the test."""
    harness = _harness_for_test(request)
    await harness.open_async()
    try:
        session = dbconf_registry.default.async_sessionmaker()()
        try:
            yield session
        finally:
            await session.close()
    finally:
        await harness.close_async()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    """``async_db_session`` runs in the test's loop under anyio (its plugin runs plain async
    fixtures of anyio tests) and under pytest-asyncio in strict mode too, which only runs
    fixtures it marks: for a test that is not an anyio one, mark it the way
    ``@pytest_asyncio.fixture`` does, for this setup only."""
    if (
        fixturedef.argname != "async_db_session"
        or "anyio_backend" in request.fixturenames
        or not request.config.pluginmanager.has_plugin("asyncio")
    ):
        return (yield)
    func = fixturedef.func
    setattr(func, _ASYNCIO_MARK, True)  # what @pytest_asyncio.fixture sets
    try:
        return (yield)
    finally:
        delattr(func, _ASYNCIO_MARK)
