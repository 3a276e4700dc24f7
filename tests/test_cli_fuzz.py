"""Property: whatever the argv, config file and environment, ``dbconf`` exits 0, 1 or 2, never
prints a traceback or an internal error, and never prints the password.

Runs in process through ``main(argv, environ=...)`` with captured output. The configs are
generated from valid profiles (SQLite in a tmp dir; PostgreSQL and MariaDB URLs on
127.0.0.1:1, where nothing listens, so ``check`` fails fast with "connection refused"), with
a password in every place one can be written (URL, password key, password file, ``${VAR}``,
``DATABASE_URL``, ``DBCONF_…`` variables, a secrets directory), then damaged: wrong types,
unknown keys, bad ``${…}``, broken YAML, a wrong password-file path. The argv mixes real
subcommands and options with junk and missing values.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from dbconf.cli import main

# A distinctive prefix (so that no other text can contain the password by chance) and the
# characters that need percent-encoding in a URL.
PASSWORDS = st.text(
    alphabet=string.ascii_letters + string.digits + "@:%/#?&=+ !'\"\\$[]{}",
    min_size=4,
    max_size=12,
).map(lambda s: f"Pw7{s}")
SERVER_DRIVERS = ["postgresql+psycopg2", "postgresql", "postgres", "mariadb+pymysql", "mysql"]
NAMES = ["main", "other"]
RARELY = st.sampled_from([False, False, False, False, True])  # about one time in five
JUNK_VALUES: list[Any] = [
    None,
    -1,
    0,
    "x",
    "30 parsecs",
    [],
    {},
    True,
    "${FUZZ_UNSET}",
    "${FUZZ_UNSET:?set it}",
    "${",
    "sqlite://",
    "nope://u@127.0.0.1:1/db",
    "postgresql+psycopg2://u@127.0.0.1:notaport/db",
]


def _in_file(password: str) -> str:
    """The password as written in the YAML file (``$$`` is a literal ``$`` there)."""
    return password.replace("$", "$$")


def _url(driver: str, password: str, *, encode: bool = True, port: str = "1") -> str:
    secret = quote(password, safe="") if encode else password
    return f"{driver}://fuzz:{secret}@127.0.0.1:{port}/fuzzdb"


@st.composite
def databases(draw: st.DrawFn, tmp: Path, password: str) -> tuple[dict[str, Any], dict[str, str]]:
    """One database's YAML mapping, and the environment it needs."""
    env: dict[str, str] = {}
    kind = draw(
        st.sampled_from(
            [
                "sqlite",
                "url",
                "url-raw",
                "url-bad-port",
                "url-env",
                "parts",
                "parts-env",
                "password-file",
                "query",
                "connect-args",
            ]
        )
    )
    driver = draw(st.sampled_from(SERVER_DRIVERS))
    parts = {"driver": driver, "host": "127.0.0.1", "port": 1, "username": "fuzz"}
    db: dict[str, Any]
    if kind == "sqlite":
        db = {"url": f"sqlite:///{tmp / 'fuzz.db'}"}
    elif kind == "url":
        db = {"url": _in_file(_url(driver, password))}
    elif kind == "url-raw":  # a password not percent-encoded, as users write them
        db = {"url": _in_file(_url(driver, password, encode=False))}
    elif kind == "url-bad-port":
        db = {"url": _in_file(_url(driver, password, port="x1"))}
    elif kind == "url-env":
        db = {"url": "${FUZZ_URL}"}
        env["FUZZ_URL"] = _url(driver, password, encode=draw(st.booleans()))
    elif kind == "parts":
        db = {**parts, "password": _in_file(password), "database": "fuzzdb"}
    elif kind == "parts-env":
        db = {**parts, "password": "${FUZZ_PW}"}
        env["FUZZ_PW"] = password
    elif kind == "password-file":
        secret = tmp / "pw.txt"
        secret.write_text(password + "\n")
        db = {**parts, "password_file": draw(st.sampled_from([str(secret), "missing.txt"]))}
    elif kind == "query":
        db = {"url": _in_file(f"{driver}://fuzz@127.0.0.1:1/db?password={quote_plus(password)}")}
    else:
        db = {"url": f"{driver}://fuzz@127.0.0.1:1/db", "connect_args": {"password": password}}
    if draw(st.booleans()):
        db["timeouts"] = {"connect": draw(st.sampled_from(["2s", "1s", "2s", "-1s", "soon"]))}
    if draw(st.booleans()):
        db["pool"] = {draw(st.sampled_from(["size", "size", "sise"])): draw(st.integers(-1, 3))}
    if draw(RARELY):  # damage one key
        db[draw(st.sampled_from([*db, "bogus"]))] = draw(st.sampled_from(JUNK_VALUES))
    return db, env


@st.composite
def configs(draw: st.DrawFn, tmp: Path, password: str) -> tuple[str, list[str], dict[str, str]]:
    """The YAML text of a config file, its profile names and the environment it needs."""
    env: dict[str, str] = {}
    profiles: dict[str, Any] = {}
    names = st.sampled_from(["p", "q", "development"])
    for profile in draw(st.lists(names, unique=True, min_size=1)):
        dbs = {}
        for name in draw(st.lists(st.sampled_from(NAMES), unique=True, min_size=1, max_size=2)):
            dbs[name], db_env = draw(databases(tmp, password))
            env.update(db_env)
        profile_data: dict[str, Any] = {"databases": dbs}
        if draw(RARELY):
            profile_data["extends"] = draw(st.sampled_from(["p", "q", "missing"]))
        if draw(RARELY):
            profile_data["workers"] = draw(st.sampled_from([1, 4, 0, "many"]))
        profiles[profile] = profile_data
    text = yaml.safe_dump({"profiles": profiles}, sort_keys=False)
    damage = draw(st.sampled_from(["none"] * 5 + ["junk-line", "truncate", "replace"]))
    if damage == "junk-line":
        lines = text.splitlines()
        junk = draw(st.sampled_from(["  : x", "\tx: 1", "- [", "profiles: {}", "!!python/x y"]))
        lines.insert(draw(st.integers(0, len(lines))), junk)
        text = "\n".join(lines)
    elif damage == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "replace":
        text = draw(st.text(max_size=40))
    return text, list(profiles), env


@st.composite
def environments(
    draw: st.DrawFn, tmp: Path, password: str, config_env: dict[str, str]
) -> dict[str, str]:
    """The config's environment plus dbconf variables, some holding the password."""
    env = dict(config_env)
    extra = {
        "DATABASE_URL": _url("postgresql", password),
        "MAIN_DATABASE_URL": _url("mysql", password, encode=False),
        "DBCONF_DATABASES__MAIN__PASSWORD": password,
        "DBCONF_DATABASES__MAIN__URL": _url("postgresql+psycopg2", password),
        "DBCONF_DATABASES__MAIN__POOL__SIZE": draw(st.sampled_from(["5", "x", ""])),
        "DBCONF_DATABASES__MAIN__POOL__SIZ": "5",
        "DBCONF_PROFILE": draw(st.sampled_from(["p", "q", "development", "nope"])),
    }
    for key in draw(st.lists(st.sampled_from(sorted(extra)), unique=True, max_size=3)):
        env[key] = extra[key]
    if draw(RARELY):  # a mounted secret, as Docker and Kubernetes do it
        secrets = tmp / "secrets"
        secrets.mkdir(exist_ok=True)
        for old in secrets.iterdir():
            old.unlink()
        name = draw(st.sampled_from(["DBCONF_DATABASES__MAIN__PASSWORD", "DATABASE_URL"]))
        value = password if name.endswith("PASSWORD") else _url("postgresql", password)
        (secrets / name).write_text(value + "\n")
        env["DBCONF_SECRETS_DIR"] = str(secrets)
    return env


@st.composite
def argvs(draw: st.DrawFn, config: Path, profiles: list[str]) -> list[str]:
    """Mostly well-formed command lines for the profiles the file declares; sometimes junk."""
    command = draw(st.sampled_from(["show", "check"] * 3 + ["profiles", "schema", "--version"]))
    valid: list[list[str]] = [["-c", str(config)]]
    if command in ("show", "check") and not draw(RARELY):
        valid += [["-p", draw(st.sampled_from(profiles))]] * 4
    if command == "show":
        valid += [["--origin"], ["--format", "json"], ["--format", "text"]]
    if command == "check":
        valid += [["-d", "main"], ["-d", "other"]]
    odd = [
        ["-c", str(config.parent / "missing.yaml")],
        ["-c", str(config.parent)],
        ["-c"],
        ["-p"],
        ["--format", "yaml"],
        ["--nope"],
        ["-"],
        ["--"],
        ["x"],
        ["--help"],
        [""],
    ]
    options = draw(st.lists(st.sampled_from(valid), max_size=4, unique_by=lambda o: o[0]))
    if draw(RARELY):
        options.insert(draw(st.integers(0, len(options))), draw(st.sampled_from(odd)))
    top = ["--traceback"] if draw(RARELY) else []
    return [*top, command, *(arg for option in options for arg in option)]


def _forms(password: str) -> set[str]:
    return {password, quote(password, safe=""), quote(password), quote_plus(password)}


@given(data=st.data(), password=PASSWORDS)
def test_any_input_exits_0_1_or_2_without_traceback_or_password(
    data: st.DataObject, password: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "databases.yaml"
    text, profiles, config_env = data.draw(configs(tmp_path, password), label="config")
    config.write_text(text)
    environ = data.draw(environments(tmp_path, password, config_env), label="environ")
    environ.setdefault("DBCONF_CONFIG", str(config))  # never the repository's sample file
    argv = data.draw(argvs(config, profiles), label="argv")

    code = main(argv, environ=environ)
    out, err = capsys.readouterr()

    event(f"exit {code}: {err.splitlines()[0][:60] if err else argv[0]}")
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in out + err, err
    assert "internal error" not in err, err  # an unexpected exception: a bug
    for form in _forms(password):
        assert form not in out + err, "the password is in the output"
