"""``dbconf shell`` (dbconf/cli/shell.py): a recording fake client on PATH shows what the child
gets (argv, environment, the password file and its mode); psql, mariadb and sqlite3 run a
scripted stdin against the real servers, one psql run as a role that needs its password."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from conftest import secret_forms

from dbconf.cli import EXIT_CONFIG, main
from dbconf.cli.shell import EXIT_NO_CLIENT

PASSWORD = 'Sh3ll:p@ss"w#rd\\x'
ENCODED = quote(PASSWORD, safe="")

FAKE_CLIENT = """#!{python}
import json, os, stat, sys
paths = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--defaults-extra-file=")]
paths += [os.environ["PGPASSFILE"]] if "PGPASSFILE" in os.environ else []
files = {{
    p: {{
        "mode": stat.S_IMODE(os.stat(p).st_mode),
        "dir_mode": stat.S_IMODE(os.stat(os.path.dirname(p)).st_mode),
        "text": open(p).read(),
    }}
    for p in paths
}}
with open("/proc/self/cmdline") as f:
    cmdline = f.read()
with open(os.environ["FAKE_CLIENT_LOG"], "w") as log:
    record = {{"argv": sys.argv, "cmdline": cmdline, "env": dict(os.environ), "files": files}}
    json.dump(record, log)
if os.environ.get("FAKE_CLIENT_SLEEP"):
    import time
    time.sleep(float(os.environ["FAKE_CLIENT_SLEEP"]))
if os.environ.get("FAKE_CLIENT_SIGNAL"):
    os.kill(os.getpid(), int(os.environ["FAKE_CLIENT_SIGNAL"]))
sys.exit(int(os.environ.get("FAKE_CLIENT_EXIT", "0")))
"""

CONFIG = f"""
    profiles:
      production:
        databases:
          primary:
            url: "postgresql://app:{ENCODED}@db1.internal/billing"
            query: {{sslmode: require}}
          shop:
            url: "mariadb+pymysql://shop:{ENCODED}@maria.internal:3307/shop"
          local:
            url: sqlite:///local.db
"""


@pytest.fixture
def fake_clients(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A PATH holding only recording fakes of psql, mariadb and sqlite3; the environ for
    main(), with inherited password variables that dbconf must drop."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("psql", "mariadb", "sqlite3"):
        script = bin_dir / name
        script.write_text(FAKE_CLIENT.format(python=sys.executable))
        script.chmod(0o755)
    log = tmp_path / "client.json"
    environ = {
        "PATH": str(bin_dir),
        "FAKE_CLIENT_LOG": str(log),
        "PGPASSWORD": "inherited",
        "PGSERVICE": "inherited",
        "MYSQL_PWD": "inherited",
    }
    return log, environ


def recorded(log: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(log.read_text())
    return data


def test_psql_gets_the_password_in_a_0600_file_never_in_argv(
    write_config: Callable[[str], Path],
    fake_clients: tuple[Path, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    log, environ = fake_clients
    config = write_config(CONFIG)
    code = main(["shell", "-p", "production", "-c", str(config)], environ=environ)
    out, err = capsys.readouterr()
    assert code == 0, err
    child = recorded(log)
    assert child["argv"][1:] == []
    env = child["env"]
    assert {k: v for k, v in env.items() if k.startswith("PG")} == {
        "PGHOST": "db1.internal",
        "PGUSER": "app",
        "PGDATABASE": "billing",
        "PGSSLMODE": "require",
        "PGPASSFILE": env["PGPASSFILE"],
    }  # the inherited PGPASSWORD (it beats the file) and PGSERVICE are gone
    [(path, file)] = child["files"].items()
    assert path == env["PGPASSFILE"]
    assert (file["mode"], file["dir_mode"]) == (0o600, 0o700)
    assert file["text"] == 'db1.internal:*:*:app:Sh3ll\\:p@ss"w#rd\\\\x\n'
    assert not Path(path).exists(), "the password file outlives the client"
    assert not Path(path).parent.exists()
    for form in secret_forms(PASSWORD):
        assert form not in child["cmdline"] + " ".join(child["argv"])
        assert form not in out + err
        assert all(form not in value for value in env.values())


def test_mariadb_gets_the_password_in_a_0600_option_file(
    write_config: Callable[[str], Path],
    fake_clients: tuple[Path, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    log, environ = fake_clients
    config = write_config(CONFIG)
    argv = ["shell", "-p", "production", "-c", str(config), "-d", "shop", "--", "--batch"]
    assert main(argv, environ=environ) == 0
    child = recorded(log)
    [(path, file)] = child["files"].items()
    assert child["argv"][1:] == [
        f"--defaults-extra-file={path}",
        "--host=maria.internal",
        "--port=3307",
        "--user=shop",
        "--database=shop",
        "--batch",
    ]
    assert (file["mode"], file["dir_mode"]) == (0o600, 0o700)
    assert file["text"] == '[client]\npassword="Sh3ll:p@ss\\"w#rd\\\\x"\n'
    assert "MYSQL_PWD" not in child["env"]
    assert not Path(path).exists()
    out, err = capsys.readouterr()
    for form in secret_forms(PASSWORD):
        assert form not in child["cmdline"] + out + err


def test_multi_host_url_gives_psql_every_host(
    write_config: Callable[[str], Path], fake_clients: tuple[Path, dict[str, str]]
) -> None:
    log, environ = fake_clients
    config = write_config(
        CONFIG.replace(
            "db1.internal/billing",
            "/billing?host=db1.internal:5432&host=db2.internal:5433",
        )
    )
    assert main(["shell", "-p", "production", "-c", str(config)], environ=environ) == 0
    child = recorded(log)
    assert (child["env"]["PGHOST"], child["env"]["PGPORT"]) == (
        "db1.internal,db2.internal",
        "5432,5433",
    )
    [file] = child["files"].values()
    assert [line.split(":")[:2] for line in file["text"].splitlines()] == [
        ["db1.internal", "5432"],
        ["db2.internal", "5433"],
    ]


def test_exit_code_is_the_clients_and_files_go_even_when_a_signal_ends_it(
    write_config: Callable[[str], Path], fake_clients: tuple[Path, dict[str, str]]
) -> None:
    log, environ = fake_clients
    config = write_config(CONFIG)
    argv = ["shell", "-p", "production", "-c", str(config)]
    assert main(argv, environ={**environ, "FAKE_CLIENT_EXIT": "7"}) == 7
    signalled = {**environ, "FAKE_CLIENT_SIGNAL": str(int(signal.SIGTERM))}
    assert main([*argv, "-d", "shop"], environ=signalled) == 128 + signal.SIGTERM
    [path] = recorded(log)["files"]
    assert not Path(path).exists()


def test_sigterm_reaches_the_client_and_the_files_go_ctrl_c_does_not_end_dbconf(
    write_config: Callable[[str], Path], fake_clients: tuple[Path, dict[str, str]]
) -> None:
    """SIGINT to dbconf alone is ignored (in a terminal the client gets it too and decides);
    SIGTERM is passed on, the client ends and dbconf removes the password file."""
    log, environ = fake_clients
    config = write_config(CONFIG)
    argv = [sys.executable, "-m", "dbconf", "shell", "-p", "production", "-c", str(config)]
    env = {**environ, "PATH": f"{environ['PATH']}:{os.environ['PATH']}", "FAKE_CLIENT_SLEEP": "60"}
    dbconf = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not log.exists() or not log.read_text().endswith("}"):
            assert dbconf.poll() is None, dbconf.communicate()[1]
            assert time.monotonic() < deadline, "the fake client did not start"
            time.sleep(0.05)
        dbconf.send_signal(signal.SIGINT)
        dbconf.send_signal(signal.SIGTERM)
        _, err = dbconf.communicate(timeout=30)
    finally:
        if dbconf.poll() is None:
            dbconf.kill()
            dbconf.wait()
    assert dbconf.returncode == 128 + signal.SIGTERM, err
    assert "interrupted" not in err
    [path] = recorded(log)["files"]
    assert not Path(path).exists()


def test_sqlite3_gets_the_file_and_the_client_arguments(
    write_config: Callable[[str], Path], fake_clients: tuple[Path, dict[str, str]]
) -> None:
    log, environ = fake_clients
    config = write_config(CONFIG)
    argv = ["shell", "-p", "production", "-c", str(config), "-d", "local", "--", "-readonly"]
    assert main(argv, environ=environ) == 0
    assert recorded(log)["argv"][1:] == ["local.db", "-readonly"]


def test_unknown_database_or_profile_suggests_a_name(
    write_config: Callable[[str], Path],
    fake_clients: tuple[Path, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    log, environ = fake_clients
    config = write_config(CONFIG)
    code = main(["shell", "-p", "production", "-c", str(config), "-d", "shp"], environ=environ)
    assert code == EXIT_CONFIG
    assert "declares no database 'shp' (did you mean 'shop'?)" in capsys.readouterr().err
    code = main(["shell", "-p", "prod", "-c", str(config)], environ=environ)
    assert code == EXIT_CONFIG
    assert "no profile 'prod' (did you mean 'production'?)" in capsys.readouterr().err
    assert not log.exists(), "a client was started"


@pytest.mark.parametrize(
    ("database", "program", "package"),
    [("primary", "psql", "postgresql-client"), ("shop", "mariadb or mysql", "mariadb-client")],
)
def test_missing_client_names_the_debian_package(
    write_config: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    database: str,
    program: str,
    package: str,
) -> None:
    config = write_config(CONFIG)
    argv = ["shell", "-p", "production", "-c", str(config), "-d", database]
    assert main(argv, environ={"PATH": str(tmp_path)}) == EXIT_NO_CLIENT
    err = capsys.readouterr().err
    assert f"dbconf: {program} not found on PATH" in err
    assert f"apt-get install {package}" in err


# --- the real clients against the real servers ----------------------------------------------


def run_dbconf(
    config: Path, stdin: str, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m dbconf shell`` as a user runs it, stdin scripted."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DBCONF_")}
    return subprocess.run(
        [sys.executable, "-m", "dbconf", "shell", "-p", "test", "-c", str(config), *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env={**environ, **(env or {})},
        timeout=60,
        check=False,
    )


def profile(write_config: Callable[[str], Path], url: str) -> Path:
    return write_config(f"profiles:\n  test:\n    databases:\n      main:\n        url: '{url}'\n")


def test_psql_runs_a_scripted_stdin(write_config: Callable[[str], Path], pg_url: str) -> None:
    config = profile(write_config, pg_url)
    result = run_dbconf(config, "SELECT 1 AS one, current_database();\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[2].split() == ["1", "|", "test"]
    # the exit code is psql's: 3 for a failed script under ON_ERROR_STOP
    failed = run_dbconf(config, "SELECT no_such_column;\n", "--", "-v", "ON_ERROR_STOP=1")
    assert failed.returncode == 3
    assert 'column "no_such_column" does not exist' in failed.stderr


def test_mariadb_runs_a_scripted_stdin(write_config: Callable[[str], Path], maria_url: str) -> None:
    config = profile(write_config, maria_url)
    result = run_dbconf(config, "SELECT 1 AS one, database();\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["one\tdatabase()", "1\ttest"]
    failed = run_dbconf(config, "SELECT no_such_column;\n")
    assert failed.returncode == 1
    assert "Unknown column 'no_such_column'" in failed.stderr


def test_sqlite3_runs_a_scripted_stdin(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (v INTEGER)")
        conn.execute("INSERT INTO t VALUES (42)")
    conn.close()
    config = profile(write_config, f"sqlite:///{db}")
    result = run_dbconf(config, "SELECT 1;\nSELECT v FROM t;\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1", "42"]


def test_psql_as_a_password_role_keeps_the_password_off_its_argv(
    server_admin: None,
    write_config: Callable[[str], Path],
    pg_secret_url: str,
    secret_password: str,
) -> None:
    """The role needs its password (scram-sha-256); psql shows its own argv and environment
    through ``\\!`` (its child's parent is psql); a wrong inherited PGPASSWORD is dropped."""
    config = profile(write_config, pg_secret_url)
    script = (
        "SELECT current_user;\n"
        "\\! tr '\\0' '\\n' < /proc/$PPID/cmdline; echo; tr '\\0' '\\n' < /proc/$PPID/environ\n"
    )
    result = run_dbconf(config, script, env={"PGPASSWORD": "wrong"})
    assert result.returncode == 0, result.stderr
    role = sa.make_url(pg_secret_url).username
    assert f" {role}\n" in result.stdout
    lines = result.stdout.splitlines()
    passfile = next(line for line in lines if line.startswith("PGPASSFILE="))
    assert not any(line.startswith("PGPASSWORD=") for line in lines)
    assert any(line.endswith("psql") for line in lines)  # psql's argv was read
    for form in secret_forms(secret_password):
        assert form not in result.stdout + result.stderr
    assert not Path(passfile.split("=", 1)[1]).exists()


@pytest.fixture
def maria_secret_url(server_admin: None, maria_url: str) -> Iterator[str]:
    """A MariaDB user with a password full of option-file syntax (``"``, ``#``, ``\\``)."""
    user = f"dbconf_shell_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(maria_url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    hosts = ("127.0.0.1", "localhost")
    with admin.connect() as conn:
        for host in hosts:
            conn.exec_driver_sql(
                f"CREATE USER '{user}'@'{host}' IDENTIFIED BY %(pw)s", {"pw": PASSWORD}
            )
            conn.exec_driver_sql(f"GRANT SELECT ON test.* TO '{user}'@'{host}'")
    try:
        url = sa.make_url(maria_url).set(username=user, password=PASSWORD)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            for host in hosts:
                conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'{host}'")
        admin.dispose()


def test_mariadb_as_a_password_user(
    write_config: Callable[[str], Path], maria_secret_url: str
) -> None:
    config = profile(write_config, maria_secret_url)
    result = run_dbconf(config, "SELECT current_user() LIKE 'dbconf_shell_%' AS ok;\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["ok", "1"]
    for form in secret_forms(PASSWORD):
        assert form not in result.stdout + result.stderr
