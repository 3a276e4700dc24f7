"""Fixtures of the fault-injection suite, and the one-screen summary printed after the run.

Every test here injects a real fault into the real servers (terminated backends, a server
restart, a stalled or dropping TCP proxy, an exhausted pool, a fork, a short ``wait_timeout``,
a statement timeout) and records what the callers saw into :class:`FaultStats`. The summary
(scopes run, infrastructure faults injected, application exceptions raised on purpose,
caller-visible errors, rows lost) is printed by
``pytest_terminal_summary`` and written as JSON to ``var/faults-summary.json`` (or to the path in
``FAULTS_SUMMARY_PATH``; not ``DBCONF_*``, which is read as configuration).

They run only with CI=true or TEST_ALLOW_SERVER_ADMIN=1 (``server_admin`` in tests/conftest.py,
requested by the autouse :func:`fault_tests_change_servers`); otherwise every test here skips.

Every test uses its own ``application_name`` (``dbconf-faults-<hex>``) so that it terminates,
counts and inspects only its own backends; tables are created per test and dropped after.

PostgreSQL tests connect as the password-authenticated role of ``pg_secret_url``
(scram-sha-256 over TCP, see tests/conftest.py) through ``pg_app_url``; the trust superuser of
``pg_url`` is used only for admin actions (terminating and counting backends, creating and
reading tables). The autouse :func:`secret_watch` captures every log record at DEBUG
(``dbconf``, ``sqlalchemy``, root) and the exceptions the tests' callers saw, and fails the
test if the role's password appears in any of them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

import dbconf

SUMMARY_PATH = Path(
    os.environ.get(
        "FAULTS_SUMMARY_PATH", Path(__file__).resolve().parents[2] / "var" / "faults-summary.json"
    )
)
PG_READY_TIMEOUT = 60.0


@dataclass
class FaultRecord:
    """What one test did and what its callers saw."""

    test: str
    fault: str
    scopes: int = 0
    faults: int = 0  # infrastructure faults injected (kills, restarts, stalls, forks…)
    errors: int = 0
    rows_lost: int = 0
    app_exceptions: int = 0  # application exceptions raised inside scopes on purpose
    numbers: dict[str, Any] = field(default_factory=dict)


class FaultStats:
    """Session-wide collector; thread-safe."""

    def __init__(self) -> None:
        self.records: list[FaultRecord] = []
        self._lock = threading.Lock()

    def record(
        self,
        test: str,
        fault: str,
        *,
        scopes: int,
        faults: int,
        errors: int,
        rows_lost: int = 0,
        app_exceptions: int = 0,
        **numbers: Any,
    ) -> FaultRecord:
        rec = FaultRecord(
            test, fault, scopes, faults, errors, rows_lost, app_exceptions, dict(numbers)
        )
        with self._lock:
            self.records.append(rec)
        return rec

    def totals(self) -> dict[str, int]:
        return {
            "tests": len(self.records),
            "scopes": sum(r.scopes for r in self.records),
            "faults": sum(r.faults for r in self.records),
            "app_exceptions": sum(r.app_exceptions for r in self.records),
            "errors": sum(r.errors for r in self.records),
            "rows_lost": sum(r.rows_lost for r in self.records),
        }

    def lines(self) -> list[str]:
        # infra: infrastructure faults injected; app_ex: application exceptions raised on purpose
        out = [
            f"{'test':<34} {'scopes':>6} {'infra':>6} {'app_ex':>6} {'errors':>6} {'lost':>4}"
            "  numbers"
        ]
        for r in self.records:
            row = (
                f"{r.test[:34]:<34} {r.scopes:>6} {r.faults:>6} {r.app_exceptions:>6} "
                f"{r.errors:>6} {r.rows_lost:>4}"
            )
            nums = " ".join(f"{k}={_fmt(v)}" for k, v in r.numbers.items())
            if len(row) + 2 + len(nums) <= 100:
                out.append(f"{row}  {nums}".rstrip())
            else:  # keep the screen 100 columns wide
                pad = " " * 4
                out += [row, *textwrap.wrap(nums, 100, initial_indent=pad, subsequent_indent=pad)]
        t = self.totals()
        out.append(
            f"{'TOTAL (' + str(t['tests']) + ' tests)':<34} {t['scopes']:>6} {t['faults']:>6} "
            f"{t['app_exceptions']:>6} {t['errors']:>6} {t['rows_lost']:>4}"
        )
        out.append(
            f"infrastructure faults injected: {t['faults']}; application exceptions raised on "
            f"purpose: {t['app_exceptions']}"
        )
        return out

    def to_json(self) -> dict[str, Any]:
        return {"totals": self.totals(), "tests": [asdict(r) for r in self.records]}


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


STATS = FaultStats()


@pytest.fixture(scope="session", autouse=True)
def fault_tests_change_servers(server_admin: None) -> None:
    """Every fault test changes the servers (restarts, SET GLOBAL, a password role and a
    pg_hba.conf line): skip unless allowed. Autouse and session-scoped, so it runs before any
    server fixture."""


@pytest.fixture(scope="session")
def fault_stats() -> FaultStats:
    """The session-wide collector the summary is printed from."""
    return STATS


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not STATS.records:
        return
    terminalreporter.section("dbconf fault-injection summary")
    for line in STATS.lines():
        terminalreporter.write_line(line)
    try:
        SUMMARY_PATH.parent.mkdir(parents=True, exist_ok=True)
        SUMMARY_PATH.write_text(json.dumps(STATS.to_json(), indent=2) + "\n")
        terminalreporter.write_line(f"(written to {SUMMARY_PATH})")
    except OSError as e:  # a read-only checkout must not fail the run
        terminalreporter.write_line(f"(could not write {SUMMARY_PATH}: {e})")


# --- servers -------------------------------------------------------------------------------


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def pg_address(url: str) -> tuple[str | None, int]:
    """Host (None: libpq's default socket) and port of the server ``url`` names."""
    parsed = sa.make_url(url)
    host = parsed.host or parsed.query.get("host")
    return (host if isinstance(host, str) and host else None), parsed.port or 5432


def pg_isready(url: str, timeout: float = 1.0) -> bool:
    """``pg_isready`` against the host and port of ``url`` (False if the tool is missing)."""
    host, port = pg_address(url)
    cmd = ["pg_isready", "-q", "-p", str(port), "-t", str(max(1, int(timeout)))]
    if host is not None:
        cmd += ["-h", host]
    try:
        return subprocess.run(cmd, check=False, timeout=timeout + 10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def local_cluster(url: str) -> tuple[str, str] | None:
    """``(version, name)`` of the cluster of this machine serving ``url``'s port, per
    ``pg_lsclusters``; None when the server is not on this machine or no cluster matches."""
    host, port = pg_address(url)
    if host is not None and host not in LOCAL_HOSTS and not host.startswith("/"):
        return None
    try:
        listing = subprocess.run(
            ["pg_lsclusters", "--no-header"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    matches = [
        (parts[0], parts[1])
        for parts in (line.split() for line in listing.stdout.splitlines())
        if len(parts) >= 3 and parts[2] == str(port)
    ]
    return matches[0] if len(matches) == 1 else None


def pg_cluster(
    cluster: tuple[str, str], action: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``pg_ctlcluster <version> <name> <action>`` for a cluster from :func:`local_cluster`."""
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, action, *extra],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ensure_pg_up(url: str) -> None:
    """Start the local cluster serving ``url`` if it is down and wait until it accepts
    connections. A server that is not on this machine is left alone (no error)."""
    if pg_isready(url):
        return
    cluster = local_cluster(url)
    if cluster is None:
        return
    pg_cluster(cluster, "start")
    deadline = time.monotonic() + PG_READY_TIMEOUT
    while time.monotonic() < deadline:
        if pg_isready(url):
            return
        time.sleep(0.2)
    raise RuntimeError(f"PostgreSQL cluster {' '.join(cluster)} did not come back within 60 s")


# --- per-test helpers ----------------------------------------------------------------------


@pytest.fixture
def app_name(request: pytest.FixtureRequest) -> str:
    """A unique application_name for this test's backends."""
    return f"dbconf-faults-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def load_db(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], dbconf.Database]]:
    """Write ``{url: …, pool: …}`` as a YAML profile, load it with ``dbconf.load`` and return
    its one database (named ``main``). Every registry is disposed after the test."""
    registries: list[dbconf.Registry] = []

    def load(database: dict[str, Any]) -> dbconf.Database:
        path = tmp_path / f"faults-{len(registries)}.yaml"
        doc = {"profiles": {"faults": {"databases": {"main": database}}}}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        registry = dbconf.load("faults", path=path, environ={})
        registries.append(registry)
        return registry["main"]

    yield load
    for registry in registries:
        registry.dispose()


def terminate(admin: sa.Engine, app_name: str) -> list[int]:
    """Terminate every backend whose application_name is ``app_name``; return their PIDs."""
    # CASE fixes the evaluation order: a plain `WHERE application_name = :app AND
    # pg_terminate_backend(pid)` may call the function on every backend first.
    sql = (
        "SELECT pid FROM (SELECT pid, CASE WHEN application_name = :app "
        "AND pid <> pg_backend_pid() THEN pg_terminate_backend(pid) ELSE false END AS killed "
        "FROM pg_stat_activity) AS t WHERE killed"
    )
    with admin.connect() as conn:
        return [int(pid) for pid in conn.execute(sa.text(sql), {"app": app_name}).scalars()]


def backends(admin: sa.Engine, app_name: str, state: str | None = None) -> int:
    sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = :app"
    params: dict[str, Any] = {"app": app_name}
    if state is not None:
        sql += " AND state = :state"
        params["state"] = state
    with admin.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


@pytest.fixture
def pg_faults(pg_url: str, pg_admin: sa.Engine, app_name: str) -> Iterator[sa.Engine]:
    """The admin engine; after the test, PostgreSQL is up and this test's backends are gone."""
    yield pg_admin
    ensure_pg_up(pg_url)
    try:
        terminate(pg_admin, app_name)
    except sa.exc.DBAPIError:
        ensure_pg_up(pg_url)
        terminate(pg_admin, app_name)


@pytest.fixture(scope="session")
def pg_app_url(pg_url: str, request: pytest.FixtureRequest) -> str:
    """The URL the fault tests' databases use: the password-authenticated role of
    ``pg_secret_url`` when the server is on this machine. A remote server is used with the
    credentials of TEST_POSTGRES_URL (pg_secret_url cannot edit its pg_hba.conf)."""
    host, _ = pg_address(pg_url)
    if host not in ("127.0.0.1", "localhost"):  # where pg_secret_url works
        return pg_url
    return str(request.getfixturevalue("pg_secret_url"))


@pytest.fixture
def pg_table(pg_url: str, pg_app_url: str, pg_faults: sa.Engine) -> Iterator[str]:
    """A fresh ``(id bigint primary key, tag text)`` table the app role may read and insert
    into, dropped after the test (with its grant)."""
    name = f"faults_{uuid.uuid4().hex[:10]}"
    role = sa.make_url(pg_app_url).username
    with pg_faults.connect() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} (id bigint PRIMARY KEY, tag text)"))
        if role and role != sa.make_url(pg_url).username:
            conn.exec_driver_sql(f'GRANT SELECT, INSERT ON {name} TO "{role}"')
    yield name
    ensure_pg_up(pg_url)
    with pg_faults.connect() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))


def insert_row(session: Any, table: str, i: int) -> None:
    """Insert row ``i`` into a fault table (columns id, tag)."""
    session.execute(sa.text(f"INSERT INTO {table} (id, tag) VALUES (:i, 'x')"), {"i": i})


def backend_pid(session: Any) -> int:
    """The PostgreSQL backend PID serving ``session``."""
    return int(session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def table_ids(admin: sa.Engine, table: str) -> set[int]:
    with admin.connect() as conn:
        return {int(i) for i in conn.execute(sa.text(f"SELECT id FROM {table}")).scalars()}


# --- secrets -------------------------------------------------------------------------------


class SecretWatch(logging.Handler):
    """Every log record of the test, and the exceptions its callers saw (:meth:`saw`)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.errors: list[object] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def saw(self, error: object) -> Any:
        """Record an exception (or an error text) a caller saw; returns it."""
        self.errors.append(error)
        return error


WATCHED_LOGGERS = ("dbconf", "sqlalchemy", "")


@pytest.fixture(autouse=True)
def secret_watch(
    secret_password: str, assert_no_secret: Callable[[Iterable[object], str], None]
) -> Iterator[SecretWatch]:
    """Issue 4 item 9 for every fault test: the role's password is in no log record (DEBUG on
    ``dbconf``, ``sqlalchemy`` and root) and in no exception a caller saw."""
    watch = SecretWatch()
    loggers = [logging.getLogger(name) for name in WATCHED_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(watch)
    try:
        yield watch
    finally:
        logging.getLogger().removeHandler(watch)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    assert watch.records, "no log record captured: the secret check would be vacuous"
    assert_no_secret([*watch.records, *watch.errors], secret_password)
