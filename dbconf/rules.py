"""What would fail when building a profile's databases: unknown or missing drivers, and
settings given twice (:func:`build_problems`, run at load). The per-field rules of a database
that depend on its dialect are in :mod:`dbconf.dialects.checks`."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.exc import NoSuchModuleError

from dbconf.builder import engine_kwargs
from dbconf.config import DatabaseConfig
from dbconf.dialects import DIALECTS, dialect_for
from dbconf.errors import ConfigError, Problem, did_you_mean
from dbconf.origin import KeyPath, Origin, find_origin

__all__ = ["KNOWN_DRIVERS", "build_problems", "missing_driver_hint"]

# Every backend[+driver] spelling of the drivers the dialects know (for "did you mean").
KNOWN_DRIVERS = tuple(name for dialect in DIALECTS for name in dialect.known_drivers)


def build_problems(
    databases: Mapping[str, DatabaseConfig], origins: Mapping[KeyPath, Origin], profile: str
) -> list[Problem]:
    """What would fail when building these databases: unknown or missing drivers, and
    translation conflicts (a setting given twice). Imports drivers; connects to nothing."""
    problems: list[Problem] = []

    def problem(name: str, key: str, message: str, fallback: str = "") -> None:
        path = ("databases", name, *key.split(".")) if key else ("databases", name)
        origin = find_origin(origins, path)
        where = ".".join(("profiles", profile, *path))
        problems.append(Problem(str(origin) if origin else fallback, where, message))

    for name, db in databases.items():
        url = db.sqlalchemy_url
        key = "driver" if db.driver else "url"
        try:
            url.get_dialect().import_dbapi()
        except NoSuchModuleError:
            hint = did_you_mean(url.drivername, KNOWN_DRIVERS)
            problem(
                name,
                key,
                f"unknown database driver {url.drivername!r}{hint}; dbconf "
                "supports postgresql+psycopg2, mariadb+pymysql, mysql+pymysql and sqlite",
            )
            continue
        except ImportError as e:
            problem(name, key, missing_driver_hint(url.drivername, url.get_driver_name(), e.name))
            continue
        except Exception:  # SQLAlchemy's plugin lookup fails in other ways on odd names
            problem(
                name,
                key,
                "unknown database driver; dbconf supports postgresql+psycopg2, "
                "mariadb+pymysql, mysql+pymysql and sqlite",
            )
            continue
        try:
            engine_kwargs(db)
        except ConfigError as e:
            for p in e.problems:
                problem(name, p.path, p.message, p.origin)
    return problems


def missing_driver_hint(drivername: str, driver: str, module: str | None) -> str:
    """What to install for a driver that is not installed: an extra of dbconf only for the
    drivers dbconf ships (a real extra of pyproject.toml), else the driver itself."""
    dialect = dialect_for(drivername.partition("+")[0])
    extra = dialect.drivers.get(driver) if dialect is not None else None
    if extra is not None:
        how = f"pip install 'dbconf[{extra}]'"
    else:
        how = f"dbconf ships no extra for it: install the {driver} driver itself"
    return f"the driver for {drivername} is not installed ({module}); {how}"
