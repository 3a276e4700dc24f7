"""Shared fixtures: real PostgreSQL and MariaDB servers, and tmp config files.

Server tests need the servers named by TEST_POSTGRES_URL and TEST_MARIADB_URL (defaults: the
loopback servers of the dev machine; not DBCONF_*, a prefix that dbconf reads as configuration).
The replica tests also need a PostgreSQL standby (TEST_POSTGRES_STANDBY_URL, .ci/pg-standby)
and a MariaDB replication pair (TEST_MARIADB_PRIMARY_URL / TEST_MARIADB_REPLICA_URL,
.ci/mariadb-replica).
Without a server they skip with a message saying how to point them at one; under CI=true they
fail instead, so a green CI means they ran.

Tests that change a server beyond their own tables (a login role with a password and a
pg_hba.conf line, the fault tests' restarts and ``SET GLOBAL``) run only with CI=true or
TEST_ALLOW_SERVER_ADMIN=1 (fixture ``server_admin``); otherwise they skip saying so.
"""

from __future__ import annotations

import logging
import os
import subprocess
import textwrap
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

# Property tests (fuzzing the loader and the CLI) run a bounded number of examples, no
# per-example deadline (the machines are noisy); HYPOTHESIS_PROFILE=thorough runs many more.
settings.register_profile(
    "default",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("TEST_MARIADB_URL", "mariadb+pymysql://root@127.0.0.1:3306/test")
# A streaming standby of POSTGRES_URL's server (made by .ci/pg-standby: pg_basebackup -R).
STANDBY_URL = os.environ.get(
    "TEST_POSTGRES_STANDBY_URL", "postgresql+psycopg2://postgres@127.0.0.1:5433/test"
)
# A private MariaDB replication pair (made by .ci/mariadb-replica; the server on 3306 is not
# part of it): a primary with a binary log and a GTID replica of it.
MARIADB_PRIMARY_URL = os.environ.get(
    "TEST_MARIADB_PRIMARY_URL", "mariadb+pymysql://root@127.0.0.1:3307/test"
)
MARIADB_REPLICA_URL = os.environ.get(
    "TEST_MARIADB_REPLICA_URL", "mariadb+pymysql://root@127.0.0.1:3308/test"
)
_MARIADB_PAIR_HOW = " (or run .ci/mariadb-replica to make the pair on 3307/3308)"
# PgBouncer in transaction mode in front of POSTGRES_URL's server (made by .ci/pgbouncer).
PGBOUNCER_URL = os.environ.get(
    "TEST_PGBOUNCER_URL", "postgresql+psycopg2://postgres@127.0.0.1:6432/test"
)
_reachable: dict[str, str | None] = {}


def _probe(url: str) -> str | None:
    """None if the server answers, else a one-line reason."""
    if url not in _reachable:
        engine = sa.create_engine(url, poolclass=sa.NullPool, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
            _reachable[url] = None
        except Exception as e:  # any failure means "not usable here"
            _reachable[url] = str(e).splitlines()[0]
        finally:
            engine.dispose()
    return _reachable[url]


def _probe_uncached(url: str) -> str | None:
    """:func:`_probe` asked again (a server that was up may be down now)."""
    _reachable.pop(url, None)
    try:
        return _probe(url)
    finally:
        _reachable.pop(url, None)


def _require(url: str, env_var: str, how: str = "") -> str:
    reason = _probe(url)
    if reason is None:
        return url
    masked = sa.make_url(url).render_as_string(hide_password=True)
    message = f"server {masked} unreachable ({reason}); set {env_var} to a reachable server{how}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


SERVER_ADMIN_OPT_IN = "TEST_ALLOW_SERVER_ADMIN"  # not DBCONF_*: dbconf reads those as config


def server_admin_allowed(environ: Mapping[str, str]) -> bool:
    """May the tests change the servers beyond their own tables? Only under CI=true or
    TEST_ALLOW_SERVER_ADMIN=1."""
    return environ.get("CI", "").lower() == "true" or environ.get(SERVER_ADMIN_OPT_IN) == "1"


@pytest.fixture(scope="session")
def server_admin() -> None:
    """Skip the test unless :func:`server_admin_allowed`: request it first, before any server
    fixture, in every fixture or test that creates roles, edits pg_hba.conf, restarts a
    server or sets a global server variable."""
    if not server_admin_allowed(os.environ):
        pytest.skip(
            "changes the test servers (a password role and a pg_hba.conf line, restarts, "
            f"SET GLOBAL): set {SERVER_ADMIN_OPT_IN}=1 to allow it (CI=true implies it)"
        )


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the test PostgreSQL server (superuser, trust auth)."""
    return _require(POSTGRES_URL, "TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def maria_url() -> str:
    """URL of the test MariaDB server (root)."""
    return _require(MARIADB_URL, "TEST_MARIADB_URL")


@pytest.fixture(scope="session")
def standby_url(pg_url: str) -> str:
    """URL of a streaming standby (hot standby, replaying) of the ``pg_url`` server."""
    url = _require(
        STANDBY_URL, "TEST_POSTGRES_STANDBY_URL", " (or run .ci/pg-standby to make one on 5433)"
    )
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            in_recovery = conn.execute(sa.text("select pg_is_in_recovery()")).scalar_one()
    finally:
        engine.dispose()
    if not in_recovery:
        pytest.fail(f"TEST_POSTGRES_STANDBY_URL {url} is not a standby (not in recovery)")
    return url


@pytest.fixture(scope="session")
def maria_primary_url() -> str:
    """URL of the primary of the MariaDB replication pair (root; binary log, GTID)."""
    return _require(MARIADB_PRIMARY_URL, "TEST_MARIADB_PRIMARY_URL", _MARIADB_PAIR_HOW)


@pytest.fixture(scope="session")
def maria_replica_url(maria_primary_url: str) -> str:
    """URL of the replica of ``maria_primary_url`` (root; read_only=1, MASTER_USE_GTID), with
    both replication threads running."""
    url = _require(MARIADB_REPLICA_URL, "TEST_MARIADB_REPLICA_URL", _MARIADB_PAIR_HOW)
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SHOW SLAVE STATUS")).mappings().first()
    finally:
        engine.dispose()
    if row is None:
        pytest.fail(f"TEST_MARIADB_REPLICA_URL {url} is not a replica (SHOW SLAVE STATUS empty)")
    running = (row["Slave_IO_Running"], row["Slave_SQL_Running"])
    if running != ("Yes", "Yes"):
        pytest.fail(
            f"TEST_MARIADB_REPLICA_URL {url} does not replicate (Slave_IO_Running, "
            f"Slave_SQL_Running = {running}; {row['Last_IO_Error'] or row['Last_SQL_Error']}): "
            "run .ci/mariadb-replica, which restarts stopped replication threads"
        )
    return url


@pytest.fixture
def maria_replica_admin(server_admin: None, maria_replica_url: str) -> Iterator[sa.Engine]:
    """An AUTOCOMMIT engine on the MariaDB replica, for ``STOP SLAVE``; teardown starts both
    replication threads again and waits (30 s at most) until they run."""
    admin = sa.create_engine(maria_replica_url, isolation_level="AUTOCOMMIT")
    try:
        yield admin
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("START SLAVE"))
            deadline = time.monotonic() + 30
            while True:
                row = conn.execute(sa.text("SHOW SLAVE STATUS")).mappings().one()
                if row["Slave_IO_Running"] == row["Slave_SQL_Running"] == "Yes":
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"the MariaDB replica did not restart replicating: {dict(row)}")
                time.sleep(0.05)
        admin.dispose()


class MariaReplicaServer:
    """The MariaDB pair's replica server, shut down and started again by a test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.down = False

    def stop(self) -> None:
        """``SHUTDOWN`` the replica and wait until it refuses connections."""
        self.down = True
        engine = sa.create_engine(self.url, poolclass=sa.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SHUTDOWN"))
        except sa.exc.OperationalError:
            pass  # the shutdown kills the connection that asked for it
        finally:
            engine.dispose()
        deadline = time.monotonic() + 30
        while _probe_uncached(self.url) is None:
            if time.monotonic() > deadline:
                pytest.fail("the MariaDB replica did not shut down within 30 s")
            time.sleep(0.1)

    def start(self) -> None:
        """Start it again with .ci/mariadb-replica (which waits until it has caught up)."""
        script = Path(__file__).resolve().parent.parent / ".ci" / "mariadb-replica"
        done = subprocess.run([str(script)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"{script} could not start the replica: {done.stderr or done.stdout}")
        self.down = False


@pytest.fixture
def maria_replica_server(
    server_admin: None, maria_replica_url: str
) -> Iterator[MariaReplicaServer]:
    """The MariaDB pair's replica, to shut down (``stop()``) and start again (``start()``);
    started again after the test if it is still down."""
    server = MariaReplicaServer(maria_replica_url)
    yield server
    if server.down:
        server.start()


@pytest.fixture
def paused_replay(server_admin: None, standby_url: str) -> Iterator[Callable[[], None]]:
    """A function pausing WAL replay on the standby; replay is always resumed afterwards.
    Pauses only TEST_POSTGRES_STANDBY_URL: point it at a standby of your own."""
    from replica_support import on_standby

    yield lambda: on_standby(standby_url, "select pg_wal_replay_pause()")
    on_standby(standby_url, "select pg_wal_replay_resume()")


@pytest.fixture
def stopped_standby(server_admin: None, standby_url: str) -> Iterator[Callable[[], None]]:
    """A function stopping the standby's cluster; it is always started again afterwards (and
    waited for until it accepts connections in recovery)."""
    from replica_support import pg_ctlcluster, start_standby

    stopped = []

    def stop() -> None:
        stopped.append(True)
        pg_ctlcluster(standby_url, "stop")

    yield stop
    if stopped:
        start_standby(standby_url)


@pytest.fixture(scope="session")
def pgbouncer_url(pg_url: str) -> str:
    """URL of PgBouncer (transaction mode, trust, admin console for this user) in front of
    the ``pg_url`` server."""
    return _require(
        PGBOUNCER_URL, "TEST_PGBOUNCER_URL", " (or run .ci/pgbouncer to start one on 6432)"
    )


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a YAML config (dedented) into a tmp dir and return its path."""

    def write(text: str, name: str = "databases.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write


@pytest.fixture
def pg_admin(pg_url: str) -> Iterator[sa.Engine]:
    """An AUTOCOMMIT engine on the test server, for inspecting pg_stat_activity and cleanup."""
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    yield engine
    engine.dispose()


# --- secrets: a password-authenticated role, and the no-secret check -------------------------

SECRET_PASSWORD = "p@ss:w%rd/1"  # @ : % / all need percent-encoding in a URL
_HBA_MARK = "# dbconf-tests pg_secret_url pid="
_HBA_LOCK = 0x0DBC0F5EC  # advisory lock serialising pg_hba.conf edits across test sessions


def secret_forms(password: str) -> set[str]:
    """The password raw and in every percent-encoded form a URL or a log could carry."""
    return {password, quote(password, safe=""), quote(password), quote_plus(password)}


def _texts(source: object) -> list[str]:
    """str and repr of ``source``; for an exception, of its args and whole cause chain too."""
    texts: list[str] = []
    seen: set[int] = set()
    todo = [source]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        texts += [str(item), repr(item)]
        if isinstance(item, BaseException):
            texts += ["".join(traceback.format_exception(item))]
            todo += [a for a in item.args if not isinstance(a, str | int | float)]
            todo += [c for c in (item.__cause__, item.__context__) if c is not None]
            todo += [o for o in (getattr(item, "orig", None),) if o is not None]
    return texts


def assert_no_secret(text_sources: Iterable[object], password: str) -> None:
    """Fail if the password (raw or percent-encoded) is in any source.

    A source is a string, a log record, an exception (its str, repr, traceback, args and
    cause chain are searched) or any object (str and repr). The failure names the source,
    never prints the secret.
    """
    forms = secret_forms(password)
    checked = 0
    for index, source in enumerate(text_sources):
        if isinstance(source, logging.LogRecord):
            texts = [source.getMessage(), logging.Formatter().format(source)]
        else:
            texts = _texts(source)
        for text in texts:
            checked += 1
            for form in forms:
                assert form not in text, (
                    f"source #{index} ({type(source).__name__}) contains the password "
                    f"({'raw' if form == password else 'percent-encoded'})"
                )
    assert checked, "assert_no_secret was given nothing to check"


@pytest.fixture(name="assert_no_secret")
def assert_no_secret_fixture() -> Callable[[Iterable[object], str], None]:
    """:func:`assert_no_secret` as a fixture, for tests that do not import conftest."""
    return assert_no_secret


@pytest.fixture(scope="session")
def secret_password() -> str:
    """:data:`SECRET_PASSWORD`, the password of the ``pg_secret_url`` role."""
    return SECRET_PASSWORD


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _edit_hba(conn: sa.Connection, edit: Callable[[list[str]], list[str]]) -> None:
    """Rewrite pg_hba.conf through the server (as its OS user) and reload the config."""
    path = conn.execute(sa.text("SHOW hba_file")).scalar_one()
    text = conn.execute(sa.text("SELECT pg_read_file(:p)"), {"p": path}).scalar_one()
    new = "".join(edit(text.splitlines(keepends=True)))
    if new != text:
        oid = conn.execute(
            sa.text("SELECT lo_from_bytea(0, convert_to(:t, 'UTF8'))"), {"t": new}
        ).scalar_one()
        try:
            conn.execute(sa.text("SELECT lo_export(:o, :p)"), {"o": oid, "p": path})
        finally:
            conn.execute(sa.text("SELECT lo_unlink(:o)"), {"o": oid})
    errors = conn.execute(
        sa.text("SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL")
    ).scalar_one()
    assert errors == 0, f"pg_hba.conf has {errors} invalid line(s) after the edit"
    conn.execute(sa.text("SELECT pg_reload_conf()"))


_ROLE_PREFIX = "dbconf_secret_"


def _drop_stale_roles(conn: sa.Connection) -> None:
    """Drop the ``dbconf_secret_<pid>`` roles of earlier test sessions whose pid is dead."""
    roles = conn.execute(
        sa.text("SELECT rolname FROM pg_roles WHERE rolname ~ :pattern"),
        {"pattern": f"^{_ROLE_PREFIX}[0-9]+$"},
    ).scalars()
    for stale in [r for r in roles if not _pid_alive(int(r[len(_ROLE_PREFIX) :]))]:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
            {"r": stale},
        )
        try:
            conn.exec_driver_sql(f'DROP OWNED BY "{stale}"')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{stale}"')
        except sa.exc.DBAPIError:  # still exiting, or owns objects elsewhere: next session
            pass


def _drop_stale_lines(lines: list[str]) -> list[str]:
    """Lines of earlier test sessions that died without cleaning up."""
    keep = []
    for line in lines:
        if _HBA_MARK in line:
            pid = line.rsplit(_HBA_MARK, 1)[1].strip()
            if not pid.isdigit() or not _pid_alive(int(pid)):
                continue
        keep.append(line)
    return keep


@pytest.fixture(scope="session")
def pg_secret_url(server_admin: None, pg_url: str) -> Iterator[str]:
    """URL (password percent-encoded) of a login role with password :data:`SECRET_PASSWORD`.

    The default pg_hba.conf trusts 127.0.0.1, so a line asking this role for scram-sha-256
    over TCP is put at the top for the session (through the server: ``lo_export`` as its OS
    user), then removed; the role is dropped. Each session has its own role and line, so
    concurrent test runs do not undo each other; lines and roles of dead sessions are removed.
    Only with CI=true or TEST_ALLOW_SERVER_ADMIN=1 (``server_admin``).
    """
    url = sa.make_url(pg_url)
    if url.host not in ("127.0.0.1", "localhost"):
        pytest.skip("pg_secret_url needs the PostgreSQL server on this machine (127.0.0.1)")
    role = f"dbconf_secret_{os.getpid()}"
    line = f"host all {role} 127.0.0.1/32 scram-sha-256 {_HBA_MARK}{os.getpid()}\n"
    admin = sa.create_engine(
        pg_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool, hide_parameters=True
    )
    secret_url = url.set(host="127.0.0.1", username=role, password=SECRET_PASSWORD)
    with admin.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _HBA_LOCK})
        try:
            _drop_stale_roles(conn)
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
            conn.exec_driver_sql(
                f'CREATE ROLE "{role}" LOGIN PASSWORD %(pw)s', {"pw": SECRET_PASSWORD}
            )
            _edit_hba(conn, lambda lines: [line, *_drop_stale_lines(lines)])
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _HBA_LOCK})
    try:
        _wait_for_password_auth(secret_url.set(password="not-the-password"))
        yield secret_url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"
                ),
                {"r": role},
            )
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _HBA_LOCK})
            try:
                _edit_hba(conn, lambda lines: [x for x in lines if x != line])
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _HBA_LOCK})
            for _ in range(50):  # a terminated backend may still be exiting
                try:
                    conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
                    break
                except sa.exc.DBAPIError:
                    time.sleep(0.1)
        admin.dispose()


def _wait_for_password_auth(wrong: sa.URL) -> None:
    """The reload is asynchronous: wait until a wrong password is refused."""
    engine = sa.create_engine(wrong, poolclass=sa.NullPool, hide_parameters=True)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                with engine.connect():
                    pass
            except sa.exc.OperationalError as e:
                if "password authentication failed" in str(e):
                    return
                raise
            if time.monotonic() > deadline:
                pytest.fail("pg_hba.conf reload did not enable password auth within 10 s")
            time.sleep(0.05)
    finally:
        engine.dispose()
