"""How ``dbconf shell`` starts each database's command-line client, credentials kept off argv.

A process's argv is readable by every user of the machine (``ps``, ``/proc/<pid>/cmdline``), so
no password ever goes there:

- PostgreSQL (``psql``): the connection parts go in libpq's environment variables (``PGHOST``,
  ``PGPORT``, ``PGUSER``, ``PGDATABASE``, ``PGSSLMODE``…; a multi-host URL gives them all,
  comma-separated), and the password in a 0600 temporary password file named by
  ``PGPASSFILE`` rather than ``PGPASSWORD``: a process's environment is readable only by its
  own user and root (``/proc/<pid>/environ`` is mode 0400), but it is inherited by everything
  the client starts (``\\!`` commands, a pager) while the file is deleted when the client exits.
  Inherited libpq variables are removed first: ``PGPASSWORD`` would beat the file,
  ``PGSERVICE``'s settings would beat the variables, and the others are the profile's to say.
- MariaDB / MySQL (``mariadb``, else ``mysql``): the password in a 0600 temporary option file
  passed by ``--defaults-extra-file`` (deleted when the client exits); host, port, user,
  database and TLS files on the command line, where they beat any option file. An inherited
  ``MYSQL_PWD`` is removed. MySQL's documented order reads the user's ``~/.my.cnf`` after the
  extra file, so a ``password=`` there wins over the profile's.
- SQLite (``sqlite3``): the file path (``file:`` URI when the URL says ``uri=true``).

Each builder returns an :class:`Invocation`; the files it names are written by the caller in a
private temporary directory (:mod:`dbconf.cli.shell`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.engine import URL

from dbconf.config import DatabaseConfig
from dbconf.config.secret_values import reveal
from dbconf.dialects.base import whole_seconds

__all__ = ["CLIENTS", "Client", "Invocation", "invocation"]


@dataclass(frozen=True)
class Client:
    """A command-line client: the programs to look for, in order, and the Debian package."""

    programs: tuple[str, ...]
    package: str


CLIENTS = {
    "postgresql": Client(("psql",), "postgresql-client"),
    "mariadb": Client(("mariadb", "mysql"), "mariadb-client"),
    "mysql": Client(("mysql", "mariadb"), "default-mysql-client (or mariadb-client)"),
    "sqlite": Client(("sqlite3",), "sqlite3"),
}


@dataclass
class Invocation:
    """What to run: ``args`` after the program name, environment variables to set and to
    remove, files to write (0600) in the private directory, notes for stderr."""

    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    files: dict[Path, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# libpq connection parameters → environment variables (libpq docs, "Environment Variables").
# sslpassword has none: it is not passed (psql asks for the key's passphrase itself).
LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "sslmode": "PGSSLMODE",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "requiressl": "PGREQUIRESSL",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "channel_binding": "PGCHANNELBINDING",
    "require_auth": "PGREQUIREAUTH",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}
# Inherited variables that would override or redirect what the profile says.
PG_UNSET = ("PGPASSWORD", "PGSERVICE", "PGSERVICEFILE", "PGPASSFILE", *LIBPQ_ENV.values())


def _values(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _pg_hosts(url: URL) -> tuple[list[str], list[str]]:
    """The hosts and ports: the URL's own, or libpq's multi-host ``?host=a:1&host=b:2``."""
    if "host" not in url.query:
        return [url.host or ""], [str(url.port) if url.port else ""]
    hosts, ports = [], []
    for item in _values(url.query["host"]):
        host, sep, port = item.rpartition(":") if not item.startswith("/") else ("", "", "")
        if not sep or not port.isdigit():
            host, port = item, ""
        hosts.append(host)
        ports.append(port)
    if "port" in url.query:  # ?port= applies to the hosts that name none
        given = _values(url.query["port"])
        ports = [p or (given[i] if i < len(given) else given[-1]) for i, p in enumerate(ports)]
    elif url.port:
        ports = [p or str(url.port) for p in ports]
    return hosts, ports


def postgresql(cfg: DatabaseConfig, url: URL, tmp: Path) -> Invocation:
    hosts, ports = _pg_hosts(url)
    params: dict[str, str] = {}
    connect_args = reveal(cfg.connect_args or {})
    if cfg.timeouts.connect is not None:
        params["connect_timeout"] = str(whole_seconds(cfg.timeouts.connect) or 1)
    if cfg.application_name is not None:
        params["application_name"] = cfg.application_name
    for source in (dict(url.query), connect_args):
        for key, value in source.items():
            if key in LIBPQ_ENV and key not in ("host", "port", "dbname", "user"):
                params[key] = ",".join(_values(value))
    if any(hosts):
        params["host"] = ",".join(hosts)
    if any(ports):
        params["port"] = ",".join(ports)
    if url.database:
        params["dbname"] = url.database
    if url.username:
        params["user"] = url.username
    out = Invocation(env={LIBPQ_ENV[k]: v for k, v in params.items()}, unset=PG_UNSET)
    if "sslpassword" in connect_args or "sslpassword" in url.query:
        out.notes.append("sslpassword is not passed to psql (libpq has no variable for it)")
    if url.password is not None:
        passfile = tmp / "pgpass"
        user, secret = _pgpass_field(url.username or "*"), _pgpass_field(url.password)
        lines = [
            f"{_pgpass_field(host) if host else '*'}:{port or '*'}:*:{user}:{secret}\n"
            for host, port in zip(hosts, ports, strict=True)
        ]
        out.files[passfile] = "".join(dict.fromkeys(lines))
        out.env["PGPASSFILE"] = str(passfile)
    return out


def _option_value(value: str) -> str:
    """A value for a MySQL option file: quoted, with the escapes the client reads."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


# pymysql URL query / connect_args → client options (the non-secret ones)
MYSQL_OPTIONS = {
    "unix_socket": "socket",
    "ssl_ca": "ssl-ca",
    "ssl_cert": "ssl-cert",
    "ssl_key": "ssl-key",
    "charset": "default-character-set",
    "connect_timeout": "connect-timeout",
}


def mysql(cfg: DatabaseConfig, url: URL, tmp: Path) -> Invocation:
    args: list[str] = []
    options: dict[str, str] = {}
    if cfg.timeouts.connect is not None:
        options["connect-timeout"] = str(whole_seconds(cfg.timeouts.connect) or 1)
    connect_args = reveal(cfg.connect_args or {})
    ssl = connect_args.get("ssl")
    for source in (dict(url.query), connect_args, ssl if isinstance(ssl, Mapping) else {}):
        for key, value in source.items():
            name = MYSQL_OPTIONS.get(key) or MYSQL_OPTIONS.get(f"ssl_{key}")
            if name is not None and not isinstance(value, Mapping):
                options[name] = _values(value)[-1]
            if key in ("ssl_verify_cert", "check_hostname", "ssl_check_hostname") and str(
                value
            ).lower() in (
                "true",
                "1",
            ):
                options["ssl-verify-server-cert"] = ""
    if url.host:
        options["host"] = url.host
    if url.port:
        options["port"] = str(url.port)
    if url.username:
        options["user"] = url.username
    out = Invocation(unset=("MYSQL_PWD", "MYSQL_HOST"))
    if url.password is not None:
        option_file = tmp / "my.cnf"
        out.files[option_file] = f"[client]\npassword={_option_value(url.password)}\n"
        args.append(f"--defaults-extra-file={option_file}")  # must come first
    args += [f"--{k}={v}" if v else f"--{k}" for k, v in options.items()]
    if url.database:
        args.append(f"--database={url.database}")
    out.args = args
    return out


def sqlite(cfg: DatabaseConfig, url: URL, tmp: Path) -> Invocation:
    out = Invocation()
    if cfg.sqlite is not None and cfg.sqlite.foreign_keys is not None:
        out.args += ["-cmd", f"PRAGMA foreign_keys = {'ON' if cfg.sqlite.foreign_keys else 'OFF'}"]
    if cfg.is_sqlite_memory:
        out.notes.append("an in-memory SQLite database: the shell gets its own, empty one")
        return out
    path = url.database or ""
    query = {k: v for k, v in url.query.items() if k not in ("uri", "check_same_thread")}
    if str(url.query.get("uri", "")).lower() == "true" or path.startswith("file:"):
        path = path if path.startswith("file:") else f"file:{path}"
        if query:
            path += ("&" if "?" in path else "?") + urlencode(query, doseq=True)
    elif path.startswith("-"):
        path = f"./{path}"
    out.args.append(path)
    return out


BUILDERS = {"postgresql": postgresql, "mariadb": mysql, "mysql": mysql, "sqlite": sqlite}


def invocation(cfg: DatabaseConfig, tmp: Path) -> Invocation:
    """The client invocation for ``cfg`` (``tmp``: the private directory for its files).
    The caller checks the backend is in :data:`CLIENTS` first."""
    url = cfg.sqlalchemy_url
    return BUILDERS[cfg.backend](cfg, url, tmp)
