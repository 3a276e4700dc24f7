"""The password of a real password-authenticated role never shows: not in exceptions (str, repr,
causes), not in log records (dbconf and sqlalchemy at DEBUG), not in reprs, not in CLI output.

The role comes from ``pg_secret_url`` (conftest): scram-sha-256 over TCP on 127.0.0.1, a
password with ``@ : % /`` so that raw and percent-encoded forms differ.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import dbconf.runtime.registry
from dbconf.cli import main
from dbconf.runtime.builder import describe_pool
from dbconf.runtime.registry import Database, Registry

PASSWORD = "p@ss:w%rd/1"
WRONG = "wr0ng@pw:50%/x"
NoSecret = Callable[[Iterable[object], str], None]

# The two ways a password reaches dbconf: inside the URL (percent-encoded) or on its own.
CONFIGS = {
    "url": """
        profiles:
          p:
            databases:
              main: {url: "${APP_URL}", application_name: dbconf_secrets}
        """,
    "password_key": """
        profiles:
          p:
            databases:
              main:
                driver: postgresql+psycopg2
                host: 127.0.0.1
                port: ${APP_PORT}
                database: ${APP_DB}
                username: ${APP_USER}
                password: ${APP_PASSWORD}
                application_name: dbconf_secrets
        """,
}


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    caplog.set_level(logging.DEBUG, logger="dbconf")
    return caplog


def _environ(secret_url: str, password: str) -> dict[str, str]:
    url = sa.make_url(secret_url)
    return {
        "APP_URL": url.set(password=password).render_as_string(hide_password=False),
        "APP_PASSWORD": password,
        "APP_USER": str(url.username),
        "APP_PORT": str(url.port or 5432),
        "APP_DB": str(url.database),
    }


def _cli(capsys: pytest.CaptureFixture[str], *argv: str, environ: dict[str, str]) -> list[str]:
    code = main(list(argv), environ=environ)
    out, err = capsys.readouterr()
    return [f"exit {code}", out, err]


def test_fixture_role_really_needs_the_password(pg_secret_url: str) -> None:
    assert sa.make_url(pg_secret_url).password == PASSWORD
    engine = sa.create_engine(pg_secret_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar_one().startswith("dbconf_")
    finally:
        engine.dispose()


@pytest.mark.parametrize("form", list(CONFIGS))
def test_wrong_password_is_never_shown(
    form: str,
    pg_secret_url: str,
    write_config: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
    assert_no_secret: NoSecret,
) -> None:
    path = write_config(CONFIGS[form])
    env = _environ(pg_secret_url, WRONG)
    sources: list[Any] = []
    with dbconf.runtime.registry.load("p", path=path, environ=env) as registry:
        db = registry["main"]
        with (
            pytest.raises(Exception, match="password authentication failed") as info,
            db.session() as session,
        ):
            session.execute(sa.text("SELECT 1"))
        assert "password authentication failed" in str(info.value)  # really the auth failing
        report = db.check()
        assert not report.ok
        assert "password authentication failed" in str(report.error)
        sources += [info.value, report, report.render(), registry, db, db.config, db.engine]
    cli = _cli(capsys, "check", "-p", "p", "-c", str(path), environ=env)
    assert cli[0] == "exit 1"
    assert "UNREACHABLE: OperationalError: " in cli[1]
    sources += [*cli, *_cli(capsys, "show", "-p", "p", "-c", str(path), "--origin", environ=env)]
    sources += debug_logs.records
    assert debug_logs.records, "no log record captured: the log check would be vacuous"
    assert_no_secret(sources, WRONG)
    assert_no_secret(sources, PASSWORD)


@pytest.mark.parametrize("form", list(CONFIGS))
def test_right_password_is_never_shown(
    form: str,
    pg_secret_url: str,
    write_config: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
    assert_no_secret: NoSecret,
) -> None:
    path = write_config(CONFIGS[form])
    env = _environ(pg_secret_url, PASSWORD)
    sources: list[Any] = []
    with dbconf.runtime.registry.load("p", path=path, environ=env) as registry:
        db = registry["main"]
        with db.session() as session:
            user = session.execute(sa.text("SELECT current_user")).scalar_one()
            sources += [session, session.get_bind()]
        assert user == sa.make_url(pg_secret_url).username
        report = db.check()
        assert report.ok, report.render()
        engine = db.engine
        sources += [registry, db, db.config, registry.config, report, report.render()]
        sources += [engine, engine.url, engine.pool, describe_pool(engine.pool)]
        sources += [db.config.model_dump(), db.config.model_dump_json()]
    for argv in (
        ["check", "-p", "p"],
        ["show", "-p", "p", "--origin"],
        ["show", "-p", "p", "--origin", "--format", "json"],
    ):
        cli = _cli(capsys, *argv, "-c", str(path), environ=env)
        assert cli[0] == "exit 0", cli
        sources += cli
    assert any("checked out" in r.getMessage() for r in debug_logs.records)  # pool DEBUG on
    sources += debug_logs.records
    assert_no_secret(sources, PASSWORD)


def _scope_killed_midway(db: Database, pg_admin: sa.Engine, app: str) -> None:
    with db.session() as session:
        session.execute(sa.text("SELECT 1"))
        with pg_admin.connect() as admin:
            admin.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :a"
                ),
                {"a": app},
            )
        session.execute(sa.text("SELECT 1"))


def test_connection_killed_mid_transaction_shows_no_password(
    pg_secret_url: str,
    pg_admin: sa.Engine,
    debug_logs: pytest.LogCaptureFixture,
    assert_no_secret: NoSecret,
) -> None:
    """A fault on an authenticated connection: the disconnect error and the recovery logs."""
    from dbconf.config import ProfileConfig

    app = f"dbconf_secrets_kill_{uuid.uuid4().hex[:10]}"  # terminate only this run's backend
    config = ProfileConfig.model_validate(
        {"databases": {"main": {"url": pg_secret_url, "application_name": app}}}
    )
    with Registry(config) as registry:
        db = registry["main"]
        with pytest.raises(sa.exc.DBAPIError, match=r"terminat|closed") as info:
            _scope_killed_midway(db, pg_admin, app)
        with db.session() as session:  # recovers on a fresh connection
            assert session.execute(sa.text("SELECT 1")).scalar_one() == 1
    assert_no_secret([info.value, *debug_logs.records], PASSWORD)


def test_assert_no_secret_catches_every_form(assert_no_secret: NoSecret) -> None:
    encoded = sa.URL.create("postgresql", "u", PASSWORD, "h").render_as_string(False)
    for leaked in (
        f"password={PASSWORD}",
        encoded,
        RuntimeError("wrapper", ValueError(f"inner {PASSWORD}")),
    ):
        with pytest.raises(AssertionError, match="contains the password"):
            assert_no_secret([leaked], PASSWORD)
    chained = RuntimeError("outer")
    chained.__cause__ = ValueError(encoded)
    with pytest.raises(AssertionError, match="percent-encoded"):
        assert_no_secret([chained], PASSWORD)
    assert_no_secret(["postgresql://u:***@h"], PASSWORD)
    with pytest.raises(AssertionError, match="nothing to check"):
        assert_no_secret([], PASSWORD)


@pytest.mark.parametrize(
    ("environ", "allowed"),
    [
        ({}, False),
        ({"CI": "false"}, False),
        ({"TEST_ALLOW_SERVER_ADMIN": "0"}, False),
        ({"TEST_ALLOW_SERVER_ADMIN": "yes"}, False),
        ({"DBCONF_ALLOW_SERVER_ADMIN": "1"}, False),
        ({"CI": "true"}, True),
        ({"CI": "TRUE"}, True),
        ({"TEST_ALLOW_SERVER_ADMIN": "1"}, True),
    ],
)
def test_server_changes_need_ci_or_the_opt_in(environ: dict[str, str], allowed: bool) -> None:
    """The role, pg_hba.conf and fault tests run only under CI=true or the explicit opt-in."""
    from conftest import server_admin_allowed

    assert server_admin_allowed(environ) is allowed
