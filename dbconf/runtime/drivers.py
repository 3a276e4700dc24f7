"""Is a database's driver known and installed? (:func:`driver_problem`, :func:`require_driver`)

A database has a sync and an async side (``sqlalchemy_url`` and ``async_url``). The side the
user names — the driver written in ``url``/``driver``, and ``async_driver`` — is checked at
load (:func:`dbconf.runtime.rules.build_problems`); the side only implied (the dialect's default
sync driver of an async URL, the default async driver of a sync URL) is checked when its engine is
built: :func:`require_driver`, called by :func:`dbconf.runtime.builder.build_engine` and
:func:`~dbconf.runtime.builder.build_async_engine`, so an app that never uses that side never needs
its driver, and one that does gets a :class:`ConfigError` naming the extra to install, never a
bare ImportError or greenlet error.

An async driver where a sync one is needed: a URL written with an async driver
(``postgresql+asyncpg://``) is used sync through the dialect's default sync driver
(``postgresql+psycopg2``); it is not an error unless that driver is missing when the sync side
is used (then the error names its extra). ``async_driver`` naming a sync driver is an error at
load (:func:`dbconf.config.urls.split_async`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL
from sqlalchemy.exc import NoSuchModuleError

from dbconf.dialects import DIALECTS, dialect_for
from dbconf.errors import ConfigError, Problem, did_you_mean

if TYPE_CHECKING:
    from dbconf.config import DatabaseConfig

__all__ = [
    "KNOWN_DRIVERS",
    "SUPPORTED",
    "driver_problem",
    "install_hint",
    "require_driver",
]

# Every backend[+driver] spelling of the drivers the dialects know (for "did you mean").
KNOWN_DRIVERS = tuple(name for dialect in DIALECTS for name in dialect.known_drivers)
# The drivers dbconf supports, for messages: "postgresql+psycopg2, postgresql+psycopg, …"
SUPPORTED = ", ".join(
    f"{backend}+{driver}"
    for dialect in DIALECTS
    for backend in dialect.backends
    for driver in (*dialect.drivers, *dialect.async_drivers)
)


def install_hint(drivername: str) -> str:
    """What to install for ``backend+driver``: a real extra of dbconf's pyproject.toml when
    one installs it, else the driver itself."""
    backend, _, driver = drivername.partition("+")
    dialect = dialect_for(backend)
    extra = dialect.extra_for(driver) if dialect is not None else None
    if extra is not None:
        return f"pip install 'dbconf[{extra}]'"
    return f"dbconf ships no extra for it: install the {driver or backend} driver itself"


def _greenlet_missing() -> bool:
    try:
        importlib.import_module("greenlet")
    except ImportError:
        return True
    return False


def driver_problem(url: URL, use_async: bool) -> str | None:
    """Why an engine on ``url`` cannot be created (unknown driver, driver or greenlet not
    installed), or None. Imports the driver; connects to nothing."""
    name = url.drivername
    try:
        dialect_cls = url.get_dialect()
        if use_async and not getattr(dialect_cls, "is_async", False):
            return (
                f"{name} is not an async driver; set async_driver to one of "
                f"{_async_names(url)} (or remove it for the default)"
            )
        dialect_cls.import_dbapi()
    except NoSuchModuleError:
        return (
            f"unknown database driver {name!r}{did_you_mean(name, KNOWN_DRIVERS)}; dbconf "
            f"supports {SUPPORTED}"
        )
    except ImportError as e:
        return f"the driver for {name} is not installed ({e.name}); {install_hint(name)}"
    except Exception:  # SQLAlchemy's plugin lookup fails in other ways on odd names
        return f"unknown database driver; dbconf supports {SUPPORTED}"
    if use_async and _greenlet_missing():
        return (
            f"async engines need greenlet (SQLAlchemy's asyncio extra), which is not "
            f"installed; {install_hint(name)}"
        )
    return None


def _async_names(url: URL) -> str:
    dialect = dialect_for(url.get_backend_name())
    return ", ".join(dialect.async_drivers) if dialect is not None else "an async driver"


def require_driver(cfg: DatabaseConfig, use_async: bool) -> None:
    """Raise :class:`ConfigError` (naming the extra to install) when the sync or the async
    side of ``cfg`` cannot be built: its driver unknown or not installed, or greenlet missing
    for an async engine."""
    url = cfg.async_url if use_async else cfg.sqlalchemy_url
    key = "async_driver" if use_async and cfg.async_driver else "driver" if cfg.driver else "url"
    if url is None:
        message = (
            f"dbconf knows no async driver for {cfg.backend}; set async_driver to the name of "
            "one SQLAlchemy supports"
        )
    else:
        found = driver_problem(url, use_async)
        if found is None:
            return
        message = found
    raise ConfigError([Problem("", key, message)])
