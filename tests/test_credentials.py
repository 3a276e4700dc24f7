"""Rotating credentials against a real PostgreSQL role (``pg_secret_url``, scram-sha-256).

The role's password is changed on the server (ALTER ROLE) and in the file / the command's
output / the callable's return: the next NEW connection succeeds while a connection already
checked out keeps working. A refused password drops the cached credentials and retries the
connect once (the fetches are counted). Sync engines, and async engines (asyncpg, psycopg).
The role gets its fixture password back after each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import dbconf
from dbconf.cli import main
from dbconf.errors import ConfigError, ConnectError, CredentialsError
from dbconf.runtime.registry import Registry

NoSecret = Callable[[Iterable[object], str], None]
OLD = "p@ss:w%rd/1"  # the fixture's password (conftest SECRET_PASSWORD)
NEW = "n3w:p@ss%/2"
SOURCES = ["password_file", "password_command", "credentials"]

CALLABLES = """
import asyncio

STATE = {"password": "", "calls": 0, "targets": []}


def password(target):
    STATE["calls"] += 1
    STATE["targets"].append(target)
    return STATE["password"]


async def async_password(target):
    await asyncio.sleep(0)
    return password(target)
"""

COMMAND = """
import pathlib, sys
state = pathlib.Path(sys.argv[1])
with open(state / "calls", "a") as calls:
    calls.write("x")
sys.stdout.write((state / "secret").read_text() + "\\n")
"""


@dataclass
class Rotating:
    """The role of ``pg_secret_url``, and the three places a password is fetched from."""

    url: str  # the role's URL without a password
    admin: sa.Engine
    role: str
    tmp: Path
    module: Any  # the callables' module (its STATE)
    alter: str  # the statement changing the role's password (%(pw)s)
    async_driver: str = "asyncpg"

    def config(self, source: str, *, ttl: str | None = None, callable_: str = "password") -> Path:
        value = {
            "password_file": "secret",
            "password_command": f"[{sys.executable}, {self.tmp / 'command.py'}, {self.tmp}]",
            "credentials": f"{self.module.__name__}:{callable_}",
        }[source]
        lines = [
            "profiles:",
            "  p:",
            "    databases:",
            "      main:",
            f"        url: '{self.url}'",
            f"        async_driver: {self.async_driver}",
            f"        {source}: '{value}'" if source != "password_command" else "",
            f"        {source}: {value}" if source == "password_command" else "",
            f"        credentials_ttl: {ttl}" if ttl else "",
        ]
        path = self.tmp / "databases.yaml"
        path.write_text("\n".join(line for line in lines if line) + "\n")
        return path

    def give(self, password: str) -> None:
        """What the file, the command and the callable give from now on."""
        (self.tmp / "secret").write_text(password + "\n")
        self.module.STATE["password"] = password

    def server(self, password: str) -> None:
        """Change the role's password on the server."""
        with self.admin.connect() as conn:
            conn.exec_driver_sql(self.alter, {"pw": password})

    def fetches(self, source: str) -> int:
        """How many times the command ran / the callable was called."""
        if source == "password_command":
            calls = self.tmp / "calls"
            return len(calls.read_text()) if calls.exists() else 0
        return int(self.module.STATE["calls"])


@pytest.fixture
def rotating(
    server_admin: None,
    pg_secret_url: str,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Rotating]:
    url = sa.make_url(pg_secret_url)
    alter = f'ALTER ROLE "{url.username}" PASSWORD %(pw)s'
    with _rotating(url, pg_url, alter, tmp_path, monkeypatch) as state:
        try:
            yield state
        finally:
            state.server(OLD)  # the session's other tests use the fixture's password


@contextlib.contextmanager
def _rotating(
    url: sa.URL, admin_url: str, alter: str, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rotating]:
    name = f"creds_{uuid.uuid4().hex[:10]}"
    (tmp / f"{name}.py").write_text(CALLABLES)
    (tmp / "command.py").write_text(COMMAND)
    monkeypatch.syspath_prepend(str(tmp))
    module = __import__(name)
    admin = sa.create_engine(
        admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool, hide_parameters=True
    )
    without = url._replace(password=None).render_as_string(hide_password=False)
    state = Rotating(without, admin, str(url.username), tmp, module, alter)
    state.give(OLD)
    (tmp / "secret").chmod(0o600)
    try:
        yield state
    finally:
        admin.dispose()
        sys.modules.pop(name, None)


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    caplog.set_level(logging.DEBUG, logger="dbconf")
    return caplog


def _user(conn: sa.Connection) -> str:
    return str(conn.execute(sa.text("SELECT current_user")).scalar_one())


@pytest.mark.parametrize("source", SOURCES)
def test_a_rotated_password_reaches_the_next_new_connection(
    rotating: Rotating,
    source: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    assert_no_secret: NoSecret,
) -> None:
    path = rotating.config(source)
    with dbconf.load("p", path=path, environ={}) as registry:
        db = registry["main"]
        held = db.engine.connect()  # checked out across the rotation
        assert _user(held) == rotating.role
        rotating.server(NEW)
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            db.engine.connect()  # the source still gives the old password: refused
        rotating.give(NEW)
        with db.engine.connect() as fresh:  # a new physical connection (held is out)
            assert _user(fresh) == rotating.role
        assert _user(held) == rotating.role  # the existing connection keeps working
        held.close()
        assert db.check().ok
        assert main(["check", "-p", "p", "-c", str(path)], environ={}) == 0
        sources: list[object] = [registry, db, db.config, db.engine, repr(db.config)]
    out, err = capsys.readouterr()
    for password in (OLD, NEW):
        assert_no_secret([*sources, *caplog.records, out, err], password)


@pytest.mark.parametrize("source", ["password_command", "credentials"])
def test_a_refused_password_is_fetched_again_once(
    rotating: Rotating, source: str, caplog: pytest.LogCaptureFixture, assert_no_secret: NoSecret
) -> None:
    path = rotating.config(source, ttl="1h")  # cached: only a refusal fetches it again
    with dbconf.load("p", path=path, environ={}) as registry:
        engine = registry["main"].engine
        held = engine.connect()
        assert rotating.fetches(source) == 1
        rotating.server(NEW)
        rotating.give(NEW)
        with engine.connect() as fresh:  # cached OLD refused → fetched again → NEW
            assert _user(fresh) == rotating.role
        assert rotating.fetches(source) == 2
        with engine.connect() as again:  # NEW is cached now
            assert _user(again) == rotating.role
        assert rotating.fetches(source) == 2
        assert _user(held) == rotating.role
        held.close()

        rotating.server(OLD)  # and the source keeps giving NEW: refused twice, then raised
        engine.pool.dispose()
        with pytest.raises(ConnectError, match="password authentication failed") as info:
            engine.connect()
        assert rotating.fetches(source) == 3  # cached one refused, fetched again ONCE, refused
    retries = [r for r in caplog.records if "retrying once" in r.getMessage()]
    assert len(retries) == 2
    for password in (OLD, NEW):
        assert_no_secret([info.value, *caplog.records], password)


def test_callable_gets_the_target(rotating: Rotating) -> None:
    path = rotating.config("credentials")
    with dbconf.load("p", path=path, environ={}) as registry, registry["main"].engine.connect():
        pass
    [target] = rotating.module.STATE["targets"]
    url = sa.make_url(rotating.url)
    assert target == dbconf.CredentialTarget(
        name="main",
        backend="postgresql",
        driver="psycopg2",
        host=url.host,
        port=url.port,
        username=rotating.role,
        database=url.database,
        is_async=False,
    )


def test_a_sync_engine_refuses_an_async_callable(rotating: Rotating) -> None:
    path = rotating.config("credentials", callable_="async_password")
    registry = dbconf.load("p", path=path, environ={})
    with registry, pytest.raises(ConfigError, match="is async: a sync engine cannot await it"):
        registry["main"].engine  # noqa: B018 (building it raises)


# -- async engines --------------------------------------------------------------------------


async def _async_rotation(registry: Registry, rotating: Rotating, source: str) -> None:
    engine = registry["main"].async_engine
    held = await engine.connect()
    user = "SELECT current_user"
    assert (await held.exec_driver_sql(user)).scalar_one() == rotating.role
    rotating.server(NEW)
    rotating.give(NEW)
    async with engine.connect() as fresh:
        assert (await fresh.exec_driver_sql(user)).scalar_one() == rotating.role
    assert (await held.exec_driver_sql(user)).scalar_one() == rotating.role
    await held.close()
    if source != "password_file":  # cached OLD refused once, fetched again
        assert rotating.fetches(source) == 2
    rotating.server(OLD)
    await engine.dispose()
    if source != "password_file":
        with pytest.raises(ConnectError, match="authentication failed"):
            await engine.connect()
        assert rotating.fetches(source) == 3  # cached one refused, fetched ONCE more
    await engine.dispose()


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg_async"])
@pytest.mark.parametrize(
    ("source", "callable_"),
    [
        ("password_file", ""),
        ("password_command", ""),
        ("credentials", "async_password"),
        ("credentials", "password"),  # a sync callable serves async engines too
    ],
)
def test_async_engines_rotate_and_retry_once(
    rotating: Rotating,
    driver: str,
    source: str,
    callable_: str,
    caplog: pytest.LogCaptureFixture,
    assert_no_secret: NoSecret,
) -> None:
    ttl = None if source == "password_file" else "1h"
    path = rotating.config(source, ttl=ttl, callable_=callable_ or "password")
    path.write_text(path.read_text().replace("async_driver: asyncpg", f"async_driver: {driver}"))
    with dbconf.load("p", path=path, environ={}) as registry:
        asyncio.run(_async_rotation(registry, rotating, source))
    if source == "credentials":
        assert {t.is_async for t in rotating.module.STATE["targets"]} == {True}
    for password in (OLD, NEW):
        assert_no_secret([*caplog.records], password)


# -- failures to fetch: never the secret ----------------------------------------------------


FAILING = """
import os, sys, time
mode = sys.argv[1]
if mode == "status":
    print("partial-s3cret-out")
    print("vault: permission denied for partial-s3cret-out", file=sys.stderr)
    sys.exit(3)
if mode == "empty":
    sys.exit(0)
if mode == "sleep":
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(60)
"""


@pytest.fixture
def failing(pg_url: str, tmp_path: Path) -> Iterator[Callable[[str], dbconf.Database]]:
    """A database on the trust-auth server whose password_command is FAILING in a mode (the
    server would take any password: every failure here is the command's)."""
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    registries: list[Registry] = []

    def make(mode: str) -> dbconf.Database:
        argv = [sys.executable, str(script), mode, str(tmp_path / "pid")]
        path = tmp_path / f"{mode}.yaml"
        path.write_text(
            f"profiles:\n  p:\n    databases:\n      main:\n        url: '{pg_url}'\n"
            f"        password_command: [{', '.join(argv)}]\n"
        )
        registries.append(dbconf.load("p", path=path, environ={}))
        return registries[-1]["main"]

    yield make
    for registry in registries:
        registry.close()


def test_a_failing_command_says_its_status_and_stderr_but_not_its_output(
    failing: Callable[[str], dbconf.Database],
    caplog: pytest.LogCaptureFixture,
    assert_no_secret: NoSecret,
) -> None:
    db = failing("status")
    with pytest.raises(CredentialsError) as info:
        db.engine.connect()
    assert str(info.value) == (
        f"database 'main': password_command {sys.executable!r} exited with status 3 "
        "(stderr: vault: permission denied for ***)"
    )
    assert not db.check().ok
    assert_no_secret([info.value, db.check().render(), *caplog.records], "partial-s3cret-out")


def test_a_command_that_prints_nothing(failing: Callable[[str], dbconf.Database]) -> None:
    with pytest.raises(CredentialsError, match="printed nothing on stdout"):
        failing("empty").engine.connect()


def test_a_command_that_hangs_is_killed(
    failing: Callable[[str], dbconf.Database], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dbconf.runtime.credentials.COMMAND_TIMEOUT", 1.0)
    with pytest.raises(CredentialsError, match=r"did not finish within 1 s and was killed"):
        failing("sleep").engine.connect()
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)


def test_a_command_that_cannot_run(pg_url: str, tmp_path: Path) -> None:
    path = tmp_path / "databases.yaml"
    path.write_text(
        f"profiles:\n  p:\n    databases:\n      main:\n        url: '{pg_url}'\n"
        "        password_command: [/nonexistent/vault, read]\n"
    )
    registry = dbconf.load("p", path=path, environ={})
    with registry, pytest.raises(CredentialsError) as info:
        registry["main"].engine.connect()
    assert str(info.value) == (
        "database 'main': password_command '/nonexistent/vault' could not be run (No such file "
        "or directory); give an absolute path or a program on PATH"
    )


def test_an_unreadable_password_file_at_connect(rotating: Rotating) -> None:
    path = rotating.config("password_file")
    with dbconf.load("p", path=path, environ={}) as registry:
        (rotating.tmp / "secret").unlink()  # the secret was unmounted after load
        with pytest.raises(CredentialsError, match=r"cannot read password file .*secret"):
            registry["main"].engine.connect()
        (rotating.tmp / "secret").write_text("\n")
        with pytest.raises(CredentialsError, match=r"password file .*secret is empty"):
            registry["main"].engine.connect()


@pytest.mark.parametrize(
    ("returned", "message"),
    [(None, "returned a NoneType"), ("", "returned an empty string"), (42, "returned a int")],
)
def test_a_callable_that_returns_no_password(
    rotating: Rotating, returned: Any, message: str
) -> None:
    rotating.module.STATE["password"] = returned
    registry = dbconf.load("p", path=rotating.config("credentials"), environ={})
    with registry, pytest.raises(CredentialsError, match=message):
        registry["main"].engine.connect()


# -- MariaDB --------------------------------------------------------------------------------


@pytest.fixture
def maria_rotating(
    server_admin: None, maria_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rotating]:
    """A MariaDB user with password OLD (created for the test, dropped after)."""
    user = f"dbconf_rot_{os.getpid()}"
    admin = sa.create_engine(maria_url, isolation_level="AUTOCOMMIT", hide_parameters=True)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
        conn.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %(pw)s", {"pw": OLD})
        conn.exec_driver_sql(f"GRANT SELECT ON test.* TO '{user}'@'%%'")
    url = sa.make_url(maria_url).set(host="127.0.0.1", username=user, password=OLD)
    alter = f"ALTER USER '{user}'@'%%' IDENTIFIED BY %(pw)s"  # %% (pyformat params)
    try:
        with _rotating(url, maria_url, alter, tmp_path, monkeypatch) as state:
            state.async_driver = "aiomysql"
            yield state
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
        admin.dispose()


def test_mariadb_rotation_and_one_retry(maria_rotating: Rotating) -> None:
    rotating = maria_rotating
    who = "SELECT CURRENT_USER()"
    path = rotating.config("credentials", ttl="1h")
    with dbconf.load("p", path=path, environ={}) as registry:
        engine = registry["main"].engine
        held = engine.connect()
        rotating.server(NEW)
        rotating.give(NEW)
        with engine.connect() as fresh:  # cached OLD refused (1045) → fetched again → NEW
            assert str(fresh.exec_driver_sql(who).scalar_one()).startswith(rotating.role)
        assert rotating.fetches("credentials") == 2
        assert str(held.exec_driver_sql(who).scalar_one()).startswith(rotating.role)
        held.close()

        async def main() -> None:  # aiomysql: a fresh engine, NEW cached by its own source
            engine = registry["main"].async_engine
            held = await engine.connect()
            rotating.server(OLD)
            rotating.give(OLD)
            async with engine.connect() as fresh:
                assert str((await fresh.exec_driver_sql(who)).scalar_one()).startswith(
                    rotating.role
                )
            assert str((await held.exec_driver_sql(who)).scalar_one()).startswith(rotating.role)
            await held.close()
            await engine.dispose()

        asyncio.run(main())
    assert rotating.fetches("credentials") == 4  # async engine: NEW, then OLD after a refusal
