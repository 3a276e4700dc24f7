"""dbconf migrate and dbconf migrations status|init|revision, with real Alembic against
PostgreSQL, MariaDB and SQLite (scratch databases, dropped after each test)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import SECRET_PASSWORD, assert_no_secret
from migrate_support import BACKENDS, scratch_databases, tables, versions, write_scripts

import dbconf
from dbconf.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, main
from dbconf.errors import StatementTimeoutError

NOTES = [
    ("n1", 'op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True))'),
    ("n2", 'op.add_column("notes", sa.Column("body", sa.String(50)))'),
]
INVOICES = [("i1", 'op.create_table("invoices", sa.Column("id", sa.Integer, primary_key=True))')]


@pytest.fixture(params=BACKENDS)
def make_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    backend = request.param
    server = {"sqlite": "", "postgresql": "pg_url", "mariadb": "maria_url"}[backend]
    url = request.getfixturevalue(server) if server else ""
    with scratch_databases(backend, url, tmp_path) as make:
        yield make


def run(capsys: pytest.CaptureFixture[str], *argv: str, **env: str) -> tuple[int, str, str]:
    code = main(list(argv), environ=env)
    out, err = capsys.readouterr()
    return code, out, err


def two_databases(write_config: Callable[[str], Path], tmp_path: Path, app: str, bill: str) -> str:
    write_scripts(tmp_path / "m" / "primary", "primary", NOTES)
    write_scripts(tmp_path / "m" / "billing", "billing", INVOICES)
    return str(
        write_config(
            f"""
            profiles:
              test:
                databases:
                  primary:
                    url: {app}
                    migrations: {{path: {tmp_path}/m/primary}}
                  billing:
                    url: {bill}
                    migrations: {{path: {tmp_path}/m/billing, version_table: billing_version}}
                  analytics:
                    url: {app}
                    migrations: {{managed: false}}
            """
        )
    )


def test_all_migrates_each_database_with_its_own_version_table(
    make_database: Callable[[], str],
    write_config: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app, bill = make_database(), make_database()
    config = two_databases(write_config, tmp_path, app, bill)
    code, out, err = run(capsys, "migrations", "status", "-p", "test", "-c", config)
    assert code == EXIT_FAILED, err
    assert "primary: behind: at base (nothing applied), head n2, 2 to apply" in out
    assert "billing: behind: at base (nothing applied), head i1, 1 to apply" in out
    assert "analytics" not in out  # managed: false

    code, out, err = run(capsys, "migrate", "--all", "-p", "test", "-c", config)
    assert code == EXIT_OK, err
    assert "primary: upgraded base (nothing applied) -> n2" in out
    assert "billing: upgraded base (nothing applied) -> i1" in out
    assert "version table billing_version" in out
    assert "analytics" not in out
    assert tables(app) == {"notes", "alembic_version"}
    assert tables(bill) == {"invoices", "billing_version"}
    assert versions(app, "alembic_version") == ["n2"]
    assert versions(bill, "billing_version") == ["i1"]

    code, out, err = run(capsys, "migrations", "status", "-p", "test", "-c", config)
    assert code == EXIT_OK, err
    assert "primary: up to date at n2" in out
    assert "billing: up to date at i1" in out
    code, out, err = run(capsys, "migrate", "--all", "-p", "test", "-c", config)
    assert code == EXIT_OK, err
    assert "primary: already at n2" in out


def test_to_a_revision_then_status_counts_what_is_left(
    make_database: Callable[[], str],
    write_config: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = two_databases(write_config, tmp_path, make_database(), make_database())
    code, out, err = run(capsys, "migrate", "-p", "test", "-c", config, "--to", "n1")
    assert code == EXIT_OK, err
    assert out.startswith("primary: upgraded base (nothing applied) -> n1")  # the default db
    code, out, _ = run(capsys, "migrations", "status", "-p", "test", "-c", config, "-d", "primary")
    assert code == EXIT_FAILED
    assert out.startswith("primary: behind: at n1, head n2, 1 to apply")
    code, out, err = run(capsys, "migrate", "-p", "test", "-c", config, "--to", "n9")
    assert code == EXIT_CONFIG
    assert "database 'primary'" in err
    assert "n9" in err


def test_a_migration_longer_than_the_request_statement_timeout_succeeds(
    pg_url: str,
    write_config: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slow = [
        (
            "s1",
            'op.execute("select pg_sleep(2)")\nop.create_table("t", sa.Column("id", sa.Integer))',
        )
    ]
    with scratch_databases("postgresql", pg_url, tmp_path) as make:
        url, other = make(), make()
        write_scripts(tmp_path / "slow", "primary", slow)
        config = write_config(
            f"""
            profiles:
              test:
                databases:
                  primary:
                    url: {url}
                    timeouts: {{statement: 1s}}
                    migrations: {{path: {tmp_path}/slow}}
                  strict:
                    url: {other}
                    timeouts: {{statement: 1s}}
                    migrations: {{path: {tmp_path}/slow, timeouts: {{statement: 1s}}}}
            """
        )
        # the request engine really has the 1 s statement timeout
        with (
            dbconf.load("test", path=config, environ={}) as dbs,
            pytest.raises(StatementTimeoutError),
            dbs["primary"].session() as s,
        ):
            s.execute(sa.text("select pg_sleep(2)"))
        code, out, err = run(capsys, "migrate", "-p", "test", "-c", str(config))
        assert code == EXIT_OK, err
        assert "primary: upgraded base (nothing applied) -> s1" in out
        assert versions(url, "alembic_version") == ["s1"]
        # the same migration under a 1 s migrations.timeouts.statement is cancelled
        code, out, err = run(capsys, "migrate", "-p", "test", "-c", str(config), "-d", "strict")
        assert code == EXIT_FAILED
        assert out == ""
        assert err.startswith("dbconf: database 'strict': migration failed: ")
        assert "statement" in err
        assert "Traceback" not in err
        assert tables(other) == set()  # PostgreSQL's DDL is transactional: nothing applied


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_offline_sql_has_no_password(
    backend: str,
    write_config: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    driver = {"postgresql": "postgresql+psycopg2", "mariadb": "mariadb+pymysql"}[backend]
    encoded = sa.URL.create(driver, "app", SECRET_PASSWORD, "db.internal").render_as_string(
        hide_password=False
    )
    write_scripts(tmp_path / "m" / "primary", "primary", NOTES)
    write_scripts(tmp_path / "m" / "billing", "billing", INVOICES)
    config = write_config(
        f"""
        profiles:
          production:
            databases:
              primary:
                url: {encoded}/app
                migrations: {{path: {tmp_path}/m/primary}}
              billing:
                url: {driver}://bill@pooler/billing
                migrations:
                  path: {tmp_path}/m/billing
                  version_table: billing_version
                  url: ${{BILLING_DIRECT_URL}}
        """
    )
    env = {"BILLING_DIRECT_URL": f"{encoded}/billing"}
    code, out, err = run(
        capsys, "migrate", "--sql", "--all", "-p", "production", "-c", str(config), **env
    )
    assert code == EXIT_OK, err
    assert f"-- dbconf: database primary ({driver}://app:***@db.internal/app, " in out
    assert f"-- dbconf: database billing ({driver}://app:***@db.internal/billing, " in out
    assert "CREATE TABLE notes" in out
    assert "ALTER TABLE notes ADD" in out
    assert "CREATE TABLE billing_version" in out
    assert "CREATE TABLE invoices" in out
    assert_no_secret([out, err], SECRET_PASSWORD)


def test_online_output_masks_the_password(
    pg_secret_url: str,
    pg_admin: sa.Engine,
    write_config: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    role = sa.make_url(pg_secret_url).username
    name = f"dbconf_mig_secret_{tmp_path.name[-8:].replace('-', '_')}"
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE {name} OWNER "{role}"')
    try:
        write_scripts(tmp_path / "m", "primary", NOTES)
        url = sa.make_url(pg_secret_url).set(database=name).render_as_string(hide_password=False)
        config = str(
            write_config(
                f"""
                profiles:
                  test:
                    databases:
                      primary:
                        url: ${{APP_URL}}
                        migrations: {{path: {tmp_path}/m}}
                """
            )
        )
        seen = []
        for argv in (["migrate"], ["migrations", "status"], ["migrate", "--sql"]):
            code, out, err = run(capsys, *argv, "-p", "test", "-c", config, APP_URL=url)
            assert code == EXIT_OK, err
            assert f"{role}:***@127.0.0.1" in out
            seen += [out, err]
        assert_no_secret(seen, SECRET_PASSWORD)
    finally:
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_status_and_migrate_exit_codes(
    write_config: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_scripts(tmp_path / "m", "primary", NOTES)
    db = tmp_path / "app.db"
    config = str(
        write_config(
            f"""
            profiles:
              test:
                databases:
                  primary:
                    url: sqlite:///{db}
                    migrations: {{path: {tmp_path}/m}}
                  down:
                    url: postgresql+psycopg2://postgres@127.0.0.1:1/x
                    timeouts: {{connect: 2s}}
                    migrations: {{path: {tmp_path}/m}}
                  nodir:
                    url: sqlite:///{tmp_path}/nodir.db
                  frozen:
                    url: sqlite:///{tmp_path}/frozen.db
                    migrations: {{managed: false}}
            """
        )
    )
    base = ("-p", "test", "-c", config)
    code, out, err = run(capsys, "migrations", "status", *base, "-d", "down")
    assert code == EXIT_FAILED
    assert out.startswith("down: cannot read its version table: ")
    assert "postgresql+psycopg2://postgres@127.0.0.1:1/x" in out
    code, _, err = run(capsys, "migrate", *base, "-d", "down")
    assert code == EXIT_FAILED
    assert err.startswith("dbconf: database 'down': migration failed: ")
    code, _, err = run(capsys, "migrations", "status", *base, "-d", "primery")
    assert code == EXIT_CONFIG
    assert "no database 'primery' (did you mean 'primary'?)" in err
    code, _, err = run(capsys, "migrate", "-p", "tset", "-c", config)
    assert code == EXIT_CONFIG
    assert "no profile 'tset'" in err
    assert "(did you mean 'test'?)" in err
    code, _, err = run(capsys, "migrate", *base, "-d", "nodir")
    assert code == EXIT_CONFIG
    assert "database 'nodir': no migration directory at migrations/nodir" in err
    assert "dbconf migrations init nodir" in err
    code, _, err = run(capsys, "migrate", *base, "-d", "frozen")
    assert code == EXIT_CONFIG
    assert "database 'frozen' sets migrations.managed: false" in err
    code, _, err = run(capsys, "migrate", *base, "--all")  # nodir has no directory
    assert code == EXIT_CONFIG
    assert "'nodir'" in err
    code, _, err = run(capsys, "migrate", *base, "-d", "primary", "--all")
    assert code == EXIT_CONFIG
    assert "not allowed with argument" in err

    assert run(capsys, "migrate", *base, "-d", "primary")[0] == EXIT_OK
    assert run(capsys, "migrations", "status", *base, "-d", "primary")[0] == EXIT_OK
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql("update alembic_version set version_num = 'zz'")
    engine.dispose()
    code, out, _ = run(capsys, "migrations", "status", *base, "-d", "primary")
    assert code == EXIT_FAILED
    assert out.startswith("primary: at zz, which its scripts")


def test_failed_migration_is_one_line_unless_traceback(
    write_config: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_scripts(tmp_path / "m", "primary", [("b1", 'raise RuntimeError("hunter2")')])
    config = str(
        write_config(
            f"""
            profiles:
              test:
                databases:
                  primary:
                    url: sqlite:///{tmp_path}/app.db
                    migrations: {{path: {tmp_path}/m}}
            """
        )
    )
    code, out, err = run(capsys, "migrate", "-p", "test", "-c", config)
    assert code == EXIT_FAILED
    assert out == ""
    assert err == (
        "dbconf: database 'primary': migration failed: RuntimeError raised in a migration "
        "(dbconf --traceback … shows where)\n"
    )
    code, _out, err = run(capsys, "--traceback", "migrate", "-p", "test", "-c", config)
    assert code == EXIT_FAILED
    assert "Traceback" in err
    assert "b1.py" in err


def test_init_revision_migrate_in_the_default_layout(
    write_config: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    config = str(
        write_config(
            """
            profiles:
              development:
                databases:
                  primary: {url: sqlite:///app.db}
            """
        )
    )
    code, out, err = run(capsys, "migrations", "init", "primary", "-c", config)
    assert code == EXIT_OK, err
    assert out.startswith("wrote migrations/primary: env.py, script.py.mako, versions/")
    assert sorted(p.name for p in (tmp_path / "migrations" / "primary").iterdir()) == [
        "env.py",
        "script.py.mako",
        "versions",
    ]
    assert not list(tmp_path.glob("**/alembic.ini"))
    code, _, err = run(capsys, "migrations", "init", "primary", "-c", config)
    assert code == EXIT_CONFIG
    assert "already exists" in err
    code, _, err = run(capsys, "migrations", "init", "primay", "-c", config)
    assert code == EXIT_CONFIG
    assert "(did you mean 'primary'?)" in err

    code, out, err = run(capsys, "migrations", "revision", "-m", "create notes", "-c", config)
    assert code == EXIT_OK, err
    assert "Generating" in out
    assert "create_notes.py" in out
    (script,) = (tmp_path / "migrations" / "primary" / "versions").glob("*create_notes.py")
    text = script.read_text().replace(
        "def upgrade() -> None:\n    pass",
        'def upgrade() -> None:\n    op.create_table("notes", sa.Column("id", sa.Integer))',
    )
    script.write_text(text)
    code, out, err = run(capsys, "migrate", "-c", config)
    assert code == EXIT_OK, err
    assert "primary: upgraded base (nothing applied) -> " in out
    assert "notes" in tables(f"sqlite:///{tmp_path}/app.db")


def test_without_alembic_the_commands_say_what_to_install(
    write_config: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = str(
        write_config("profiles: {development: {databases: {primary: {url: 'sqlite://'}}}}")
    )
    monkeypatch.setitem(sys.modules, "alembic", None)
    for argv in (["migrate"], ["migrations", "status"]):
        code, _, err = run(capsys, *argv, "-c", config)
        assert code == EXIT_CONFIG
        assert err == (
            "dbconf: the migrations commands need Alembic: pip install 'dbconf[alembic]'\n"
        )
