"""Database URLs: parsing, combining with the parts written beside them, checking, masking.

A URL's query may carry connection parts (libpq takes ``?user=``, ``?password=``,
``?dbname=``; PyMySQL ``?user=``, ``?password=``, ``?database=``). The drivers give those query
values precedence over the URL's own fields, and SQLAlchemy masks only the URL's own password.
:func:`combine` therefore lifts them into the URL's fields (same meaning for the driver, now
masked), then applies the parts written beside the URL, which beat everything in the URL (an
explicit ``host``/``port`` also drops a ``?host=``/``?port=``). A percent-encoded host
(libpq's ``postgresql://%2Fvar%2Frun%2Fpostgresql/db`` socket form) is decoded.

:func:`url_issues` finds what would only fail at connect: a SQLite URL with a host, port or
credentials, a port outside 1-65535, a query parameter the driver does not take;
:func:`connect_arg_issues` likewise for ``connect_args`` keys; :func:`driver_issues` both, for
the other side (sync/async) of a database than the one its URL names.

The per-driver facts (which query parameters and connect_args a driver takes, which of them
are connection parts) are tables of the modules of :mod:`dbconf.dialects`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from pydantic_core import PydanticCustomError
from sqlalchemy.engine import URL, make_url

from dbconf.config.origin import SECRET_KEY
from dbconf.dialects import DIALECTS, dialect_for
from dbconf.errors import did_you_mean

__all__ = [
    "BOTH_SIDES",
    "CONNECT_ARGS",
    "DEFAULT_DRIVERS",
    "QUERY_KEYS",
    "combine",
    "connect_arg_issues",
    "driver_issues",
    "mask_url",
    "parse_url",
    "query_issues",
    "split_async",
]


# A URL without a driver gets the driver dbconf ships and tests (the dialects' tables).
DEFAULT_DRIVERS = {k: v for d in DIALECTS for k, v in d.default_drivers.items()}

# Per driver, from its dialect: the URL query parameters it takes, the connect_args it takes
# (a driver not listed is not checked), and the query parameters that name a URL part.
QUERY_KEYS = {k: v for d in DIALECTS for k, v in d.query_keys.items()}
CONNECT_ARGS = {k: v for d in DIALECTS for k, v in d.connect_args.items()}
QUERY_PARTS = {k: v for d in DIALECTS for k, v in d.query_parts.items()}
# Parts moved from the query into the URL's fields; host and port stay in the query (SQLAlchemy
# reads libpq's multi-host ?host=a:1&host=b:2 from there) unless an explicit part replaces them.
_LIFTED = ("username", "password", "database")
FIELDS = ("username", "password", "host", "port", "database")
Issue = tuple[str, str]  # (key path within the database, message)
# Said when a key suits one side of a database but not the other.
BOTH_SIDES = (
    "; connect_args and the URL query go to both the sync ({sync}) and the async ({async_}) "
    "driver of a database: keep only what both take, or name just the driver you use"
)


def driver_name(url: URL) -> str:
    """The DBAPI driver's name, without importing it ("" when the URL names none we know)."""
    driver = url.drivername.partition("+")[2]
    return driver or ("pysqlite" if url.get_backend_name() == "sqlite" else "")


def mask_url(url: URL) -> str:
    """Render ``url`` with its password and any secret-looking query value (``?password=``,
    ``sslpassword``, ``token``) replaced by ``***``."""
    hidden = {k: "***" for k in url.query if SECRET_KEY.search(k)}
    if hidden:
        url = url.update_query_dict(hidden)
    text = url.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")
    # failover hosts (?host=a:5432&host=b:5433) read better with their colons
    return text.replace("%3A", ":") if "host" in url.query else text


def parse_url(value: str) -> URL:
    """``make_url``, with an error that never echoes the URL (it may hold a password)."""
    try:
        url = make_url(value)
    except Exception:  # a port that is not a number, or no driver:// at all
        url = None
    if url is None or "@" in (url.host or ""):
        # A raw '@' in a password splits it into a bogus host.
        raise PydanticCustomError(
            "url",
            "is not a valid database URL; expected driver://user:password@host:port/"
            "database with a port of 1-65535 (percent-encode @ : / % in the password, or set "
            "password separately)",
        )
    return url


def combine(
    base: URL | None,
    driver: str | None,
    parts: Mapping[str, Any],
    query: Mapping[str, str] | None,
) -> tuple[URL, list[Issue]]:
    """The URL to connect to: ``base`` (a parsed ``url``) with its driver defaulted, its query
    connection parts lifted into its fields, then ``driver``, ``parts`` and ``query`` written
    beside it applied over it. Returns the URL and the problems found on the way."""
    name = driver or (base.drivername if base else "")
    url = base if base is not None else URL.create(name)
    if url.host and "%" in url.host:
        url = url.set(host=unquote(url.host))
    url = url.set(drivername=DEFAULT_DRIVERS.get(name, name))
    merged = {**url.query, **(query or {})}
    where = {k: "query" if query and k in query else "url" for k in merged}
    # A raw '&' in a secret query value splits it: the fragments then look like keys.
    hide_keys = any(SECRET_KEY.search(k) for k in merged)
    issues: list[Issue] = []
    fields: dict[str, Any] = {}
    source: dict[str, str] = {}
    for key, field in QUERY_PARTS.get(driver_name(url), {}).items():
        value = merged.get(key)
        if value is None or field not in _LIFTED:
            continue
        del merged[key]
        if not isinstance(value, str):
            issues.append(
                (where[key], f"the URL query gives ?{key} {len(value)} times; give it once")
            )
        elif field in source:
            issues.append(
                (where[key], f"the URL query gives both ?{source[field]} and ?{key}; give one")
            )
        else:
            fields[field], source[field] = value, key
    explicit = {k: v for k, v in parts.items() if v is not None}
    for key, field in QUERY_PARTS.get(driver_name(url), {}).items():
        if field in explicit and field in ("host", "port"):
            merged.pop(key, None)
    url = url.set(**{**fields, **explicit}, query=merged)
    return url, issues + url_issues(url, explicit, where, hide_keys)


def split_async(url: URL, async_driver: str | None) -> tuple[URL, URL | None, list[Issue]]:
    """The sync and the async URL of one database location. A URL written with an async
    driver (``postgresql+asyncpg://``) sets the async driver, and the sync URL gets the
    dialect's default sync driver; otherwise the async URL uses ``async_driver`` or the
    dialect's default async driver (None: dbconf knows none for this backend). Twin drivers of
    one package pair up instead of the defaults: ``postgresql+psycopg`` ↔ ``psycopg_async``."""
    backend = url.get_backend_name()
    dialect = dialect_for(backend)
    if dialect is None:
        return url, url.set(drivername=f"{backend}+{async_driver}") if async_driver else None, []
    issues: list[Issue] = []
    driver = url.drivername.partition("+")[2]
    if driver and dialect.is_async(driver):
        if async_driver is not None and async_driver != driver:
            issues.append(
                (
                    "async_driver",
                    f"the URL names the async driver {driver} and async_driver says "
                    f"{async_driver}; give it in one place",
                )
            )
        async_driver = driver
        url = url.set(drivername=dialect.sync_drivername(backend, driver))
    elif async_driver is not None and not dialect.is_async(async_driver):
        known = sorted(dialect.async_drivers)
        issues.append(
            (
                "async_driver",
                f"{async_driver!r} is not an async driver of {dialect.name}"
                f"{did_you_mean(async_driver, known)}; use one of {', '.join(known)}",
            )
        )
        async_driver = None
    chosen = async_driver or dialect.async_driver_for(url.drivername.partition("+")[2])
    return url, url.set(drivername=f"{backend}+{chosen}") if chosen else None, issues


def connect_arg_issues(url: URL, keys: Iterable[str], note: str = "") -> list[Issue]:
    """``connect_args`` keys the driver's ``connect()`` does not take (a TypeError, or libpq's
    "invalid connection option", at the first connect)."""
    driver = driver_name(url)
    known = CONNECT_ARGS.get(driver)
    if known is None:
        return []
    return [
        (
            f"connect_args.{key}" if "." not in key else "connect_args",
            f"{key!r} is not an argument of the {driver} driver{did_you_mean(key, known)}; "
            f"remove it (it would fail at connect){note}",
        )
        for key in keys
        if key not in known
    ]


def url_issues(
    url: URL, explicit: Mapping[str, Any], where: Mapping[str, str], hide_keys: bool
) -> list[Issue]:
    """What in the combined URL a driver would reject at connect (never echoing a secret;
    ``hide_keys``: the query held a secret, so an unknown key may be a piece of it)."""
    issues: list[Issue] = []
    if url.get_backend_name() == "sqlite":
        given = [f for f in FIELDS if f != "database" and getattr(url, f) is not None]
        at = next((f for f in given if f in explicit), "url")
        if given:
            hint = "sqlite:///path/to/file.db"
            if url.host and not (url.username or url.password or url.port):
                hint = f"sqlite:///{url.host}{'/' + url.database if url.database else ''}"
            issues.append(
                (
                    at,
                    f"a SQLite URL names a file, not a server, but this one has a "
                    f"{'/'.join(given)}; write it as {hint} (three slashes before a relative "
                    "path, four before an absolute one, sqlite:// for in-memory)",
                )
            )
    if url.port is not None and not 1 <= url.port <= 65535:
        issues.append(("url", "the URL's port must be 1-65535"))  # a port: key is bounded
    return issues + query_issues(url, where, hide_keys)


def query_issues(
    url: URL, where: Mapping[str, str], hide_keys: bool, note: str = ""
) -> list[Issue]:
    """URL query parameters ``url``'s driver does not take (``where``: key → "url"/"query")."""
    issues: list[Issue] = []
    driver = driver_name(url)
    known = QUERY_KEYS.get(driver)
    if known is not None:
        for key in url.query:
            if key not in known:
                plain = re.fullmatch(r"[A-Za-z][\w.-]{0,39}", key) and not hide_keys
                shown = repr(key) if plain else "(not shown: it may be part of a password)"
                issues.append(
                    (
                        where.get(key, "url"),
                        f"the URL query parameter {shown} is not taken by the {driver} "
                        f"driver{did_you_mean(key, known)}; remove it (it would fail at "
                        f"connect){note}",
                    )
                )
    return issues


def driver_issues(
    url: URL, connect_args: Iterable[str], query: Iterable[str], note: str = ""
) -> list[Issue]:
    """What ``url``'s driver would reject at connect among the URL query parameters and
    ``connect_args`` keys (``query``: the keys written in ``query:`` rather than the URL), for
    the side of a database the URL was not written for (the sync driver of an async URL, the
    async driver of a sync one): a query is shared by both sides and must suit both."""
    written = set(query)
    where = {k: "query" if k in written else "url" for k in url.query}
    hide_keys = any(SECRET_KEY.search(k) for k in url.query)
    return query_issues(url, where, hide_keys, note) + connect_arg_issues(url, connect_args, note)
