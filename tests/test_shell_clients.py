"""What ``dbconf shell`` gives each client (dbconf/cli/shell_clients.py); runs:
test_cli_shell.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dbconf.cli.shell_clients import Invocation, invocation
from dbconf.config import DatabaseConfig
from dbconf.loading.loader import load_profile

PASSWORD = 'p@ss:w\\o"rd #1'  # : and \ need escaping in a pgpass line, " and \ in a my.cnf


def database(write_config: Callable[[str], Path], body: str) -> DatabaseConfig:
    path = write_config("profiles:\n  p:\n    databases:\n      db:\n" + body)
    return load_profile("p", path=path, environ={}).config.databases["db"]


def build(write_config: Callable[[str], Path], tmp_path: Path, body: str) -> Invocation:
    return invocation(database(write_config, body), tmp_path)


def everything(how: Invocation) -> str:
    return " ".join([*how.args, *how.env.values(), *how.notes])


def test_postgresql_parts_go_to_libpq_variables(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    how = build(
        write_config,
        tmp_path,
        f"""
        url: "postgresql://app@db.internal:6432/billing?sslmode=verify-full&sslrootcert=/ca.pem"
        password: '{PASSWORD}'
        application_name: billing-shell
        timeouts: {{connect: 2.5s, statement: 15s}}
        connect_args: {{target_session_attrs: read-write}}
""",
    )
    assert how.args == []
    passfile = tmp_path / "pgpass"
    assert how.env == {
        "PGHOST": "db.internal",
        "PGPORT": "6432",
        "PGDATABASE": "billing",
        "PGUSER": "app",
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": "/ca.pem",
        "PGAPPNAME": "billing-shell",
        "PGCONNECT_TIMEOUT": "3",  # rounded up, as the driver gets it
        "PGTARGETSESSIONATTRS": "read-write",
        "PGPASSFILE": str(passfile),
    }
    assert how.files == {passfile: 'db.internal:6432:*:app:p@ss\\:w\\\\o"rd #1\n'}
    assert {"PGPASSWORD", "PGSERVICE", "PGHOST"} <= set(how.unset)
    assert PASSWORD not in everything(how)


def test_postgresql_multi_host_url_passes_every_host(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    how = build(
        write_config,
        tmp_path,
        """
        url: "postgresql://app:pw@/app?host=a.internal:5432&host=b.internal:5433&host=c.internal"
        port: 5434
""",
    )
    assert how.env["PGHOST"] == "a.internal,b.internal,c.internal"
    assert how.env["PGPORT"] == "5432,5433,5434"
    assert how.files[tmp_path / "pgpass"].splitlines() == [
        "a.internal:5432:*:app:pw",
        "b.internal:5433:*:app:pw",
        "c.internal:5434:*:app:pw",
    ]


def test_postgresql_without_password_leaves_pgpass_alone(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    how = build(
        write_config,
        tmp_path,
        """
        url: "postgresql+psycopg:///app?host=/var/run/postgresql&hostaddr=10.0.0.5"
        connect_args: {sslpassword: keypass}
""",
    )
    assert how.files == {}
    assert "PGPASSFILE" not in how.env
    assert how.env == {
        "PGHOST": "/var/run/postgresql",
        "PGHOSTADDR": "10.0.0.5",
        "PGDATABASE": "app",
    }
    assert how.notes == ["sslpassword is not passed to psql (libpq has no variable for it)"]
    assert "keypass" not in everything(how)


def test_mariadb_password_goes_to_an_option_file_only(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    how = build(
        write_config,
        tmp_path,
        f"""
        url: "mariadb+pymysql://app@db:3307/shop?charset=utf8mb4"
        password: '{PASSWORD}'
        timeouts: {{connect: 3s}}
        connect_args: {{ssl: {{ca: /ca.pem, check_hostname: true}}}}
""",
    )
    option_file = tmp_path / "my.cnf"
    assert how.args == [
        f"--defaults-extra-file={option_file}",
        "--connect-timeout=3",
        "--default-character-set=utf8mb4",
        "--ssl-ca=/ca.pem",
        "--ssl-verify-server-cert",
        "--host=db",
        "--port=3307",
        "--user=app",
        "--database=shop",
    ]
    assert how.files == {option_file: '[client]\npassword="p@ss:w\\\\o\\"rd #1"\n'}
    assert "MYSQL_PWD" in how.unset
    assert PASSWORD not in everything(how)


def test_mysql_without_password_writes_no_file(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    how = build(write_config, tmp_path, "        url: mysql+pymysql://root@127.0.0.1/test\n")
    assert how.files == {}
    assert how.args == ["--host=127.0.0.1", "--user=root", "--database=test"]


def test_sqlite_file_uri_and_memory(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    how = build(
        write_config,
        tmp_path,
        "        url: sqlite:///-odd.db\n        sqlite: {foreign_keys: true}\n",
    )
    assert how.args == ["-cmd", "PRAGMA foreign_keys = ON", "./-odd.db"]
    how = build(write_config, tmp_path, '        url: "sqlite:///app.db?mode=ro&uri=true"\n')
    assert how.args == ["file:app.db?mode=ro"]
    how = build(write_config, tmp_path, "        url: 'sqlite://'\n")
    assert how.args == []
    assert how.notes == ["an in-memory SQLite database: the shell gets its own, empty one"]
