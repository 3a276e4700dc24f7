"""Failover URLs: ``hosts: [a:5432, b:5433]`` and ``target_session_attrs`` (PostgreSQL).

libpq (psycopg2, psycopg 3) tries the hosts in order and keeps the first whose session has the
asked attributes (``read-write``, ``primary``, ``prefer-standby``, …); asyncpg does the same with
its ``target_session_attrs`` argument. SQLAlchemy (2.0.18 and later, so the 2.0.24 floor and
2.1) reads the hosts from the URL query as ``?host=a:5432&host=b:5433`` for all three drivers
(``_split_multihost_from_url``): psycopg2/psycopg pass ``host=a,b port=5432,5433`` to libpq,
asyncpg gets lists of hosts and ports and needs a port on every host. So :func:`failover_url`
writes every host with a port (the entry's own, else the database's ``port``, else 5432) and
puts ``target_session_attrs`` in the query, where both libpq and asyncpg read it. One host is
written as the URL's own host and port. Masked URLs (``dbconf show``) list every host.

``hosts`` replaces the URL's host and port (and a ``?host=``/``?port=`` in its query), as a
``host`` written beside ``url`` does; ``hosts`` and ``host`` in one place is an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import URL

from dbconf.dialects import dialect_for

__all__ = [
    "TARGET_SESSION_ATTRS",
    "Hosts",
    "SessionAttrs",
    "failover_issues",
    "failover_url",
    "parse_host",
]

SessionAttrs = Literal["any", "read-write", "read-only", "primary", "standby", "prefer-standby"]
TARGET_SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
Issue = tuple[str, str]

# a host name or IPv4 address, or a Unix socket directory; then an optional :port
_HOST = re.compile(r"^(?P<host>[A-Za-z0-9][A-Za-z0-9._-]*|/[^:,@?&=#\s]*)(?::(?P<port>\d{1,5}))?$")


def split_hosts(value: Any) -> Any:
    """``a:5432,b:5433`` (one string, as an env var gives it) → a list of hosts."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    return value


def parse_host(entry: str) -> tuple[str, int | None]:
    """``host[:port]`` → (host, port or None); a PydanticCustomError saying the form if not."""
    match = _HOST.match(entry)
    port = int(match["port"]) if match and match["port"] else None
    if match is None or (port is not None and not 1 <= port <= 65535):
        raise PydanticCustomError(
            "host",
            "a hosts entry is host or host:port (a name or an IPv4 address, a port of "
            "1-65535, e.g. db-1.internal:5432); SQLAlchemy's multi-host URL cannot carry an "
            "IPv6 address: use a host name",
        )
    return match["host"], port


def check_host(entry: str) -> str:
    """A field validator for one ``hosts`` entry."""
    parse_host(entry)
    return entry


Hosts = Annotated[
    list[Annotated[str, AfterValidator(check_host)]],
    BeforeValidator(split_hosts),
    Field(min_length=1),
]


def failover_issues(
    hosts: Sequence[str] | None, host: str | None, attrs: str | None, drivers: Sequence[str]
) -> list[Issue]:
    """``hosts`` beside ``host``, or a driver the user named (``drivers``) that cannot fail over."""
    if not hosts and attrs is None:
        return []
    if hosts and host is not None:
        return [
            (
                "hosts",
                "hosts and host are both set; keep one (hosts lists every host, each "
                "host or host:port)",
            )
        ]
    key = "hosts" if hosts else "target_session_attrs"
    for driver in drivers:
        backend, _, name = driver.partition("+")
        dialect = dialect_for(backend)
        if (
            dialect is not None
            and dialect.multi_host_drivers
            and name not in dialect.multi_host_drivers
        ):
            able = "/".join(sorted(dialect.multi_host_drivers))
            return [
                (
                    key,
                    f"the {name} driver cannot take {key}; use one that can ({able}), "
                    "e.g. postgresql+psycopg2:// or postgresql+asyncpg://",
                )
            ]
    return []


def failover_url(
    url: URL, hosts: Sequence[str] | None, port: int | None, attrs: str | None
) -> tuple[URL, list[Issue]]:
    """``url`` with ``hosts`` (each written with a port: its own, else ``port``, else the
    dialect's default) and ``target_session_attrs`` in its query; or the problems."""
    if not hosts and attrs is None:
        return url, []
    key = "hosts" if hosts else "target_session_attrs"
    dialect = dialect_for(url.get_backend_name())
    if dialect is None or not dialect.multi_host_drivers:
        return url, [
            (
                key,
                f"{key} is for PostgreSQL (libpq's and asyncpg's failover among hosts), not "
                f"{url.get_backend_name()}; remove it (use a proxy or a DNS name for failover)",
            )
        ]
    query = dict(url.query)
    if attrs is not None:
        if "target_session_attrs" in query:
            return url, [
                (
                    "target_session_attrs",
                    "target_session_attrs is also given in the URL query or query:; keep one",
                )
            ]
        query["target_session_attrs"] = attrs
    if not hosts:
        return url.set(query=query), []
    default = port or dialect.default_port or 5432
    pairs = [(host, own or default) for host, own in map(parse_host, hosts)]
    query.pop("host", None)
    query.pop("port", None)
    if len(pairs) == 1:
        return url.set(host=pairs[0][0], port=pairs[0][1], query=query), []
    query["host"] = tuple(f"{host}:{number}" for host, number in pairs)
    return url.set(query=query)._replace(host=None, port=None), []  # set() skips None
