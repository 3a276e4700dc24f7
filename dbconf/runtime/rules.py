"""What would fail when building a profile's databases: unknown or missing drivers, and
settings given twice (:func:`build_problems`, run at load), for each side (sync, async) whose
driver the user named; the implied side is checked when built (:mod:`dbconf.runtime.drivers`). The
per-field rules of a database that depend on its dialect are in :mod:`dbconf.dialects.checks`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from dbconf.config import DatabaseConfig
from dbconf.config.origin import KeyPath, Origin, dotted, find_origin
from dbconf.config.replica_config import ReplicaConfig, replica_key
from dbconf.errors import ConfigError, Problem
from dbconf.runtime.builder import engine_kwargs
from dbconf.runtime.credentials import callable_problem
from dbconf.runtime.drivers import KNOWN_DRIVERS, driver_problem, install_hint
from dbconf.sessions.session_classes import class_problem

__all__ = ["KNOWN_DRIVERS", "build_problems", "missing_driver_hint"]


def build_problems(
    databases: Mapping[str, DatabaseConfig], origins: Mapping[KeyPath, Origin], profile: str
) -> list[Problem]:
    """What would fail when building these databases: unknown or missing drivers, and
    translation conflicts (a setting given twice). Imports drivers; connects to nothing."""
    problems: list[Problem] = []

    def problem(name: str, key: str, message: str, fallback: str = "") -> None:
        note = ""
        index, replica = scope
        if replica is not None:  # a replica's problem: at its key, or the primary's it inherits
            key, inherited = replica_key(replica, index, key)
            note = f" (in replicas[{index}], which inherits {key})" if inherited else ""
        path = ("databases", name, *key.split(".")) if key else ("databases", name)
        origin = find_origin(origins, path)
        where = dotted(("profiles", profile, *path))
        found = Problem(str(origin) if origin else fallback, where, message)
        if found not in problems:  # a primary's problem its replicas inherit: said once
            problems.append(Problem(found.origin, where, message + note))

    scope: tuple[int, ReplicaConfig | None] = (0, None)  # the replica being checked, if any
    for name, index, replica, db in _with_replicas(databases):
        scope = (index, replica)
        for flavour_name, flavour in db.sessions.items():
            if flavour.class_ is not None:
                found = class_problem(flavour.class_)
                if found is not None:
                    problem(name, f"sessions.{flavour_name}.class", found)
        if db.credentials is not None:
            found = callable_problem(db.credentials)
            if found is not None:
                problem(name, "credentials", found)
        for use_async in (False, True):
            if not db.names_driver(use_async):
                continue  # implied: checked when built (drivers.require_driver)
            url = db.async_url if use_async else db.sqlalchemy_url
            if url is None:
                continue  # a backend dbconf knows no async driver for, and none named
            key = (
                "async_driver"
                if use_async and db.async_driver
                else "driver"
                if db.driver
                else "url"
            )
            found = driver_problem(url, use_async)
            if found is not None:
                problem(name, key, found)
                continue
            try:
                engine_kwargs(db, use_async=use_async)
            except ConfigError as e:
                for p in e.problems:
                    problem(name, p.path, p.message, p.origin)
    return problems


def missing_driver_hint(drivername: str, driver: str, module: str | None) -> str:
    """What to install for a driver that is not installed: an extra of dbconf only for the
    drivers dbconf ships (a real extra of pyproject.toml), else the driver itself."""
    return f"the driver for {drivername} is not installed ({module}); {install_hint(drivername)}"


def _with_replicas(
    databases: Mapping[str, DatabaseConfig],
) -> Iterator[tuple[str, int, ReplicaConfig | None, DatabaseConfig]]:
    """(name, replica index, replica, config to check): each database, then each of its
    replicas' full configurations."""
    for name, db in databases.items():
        yield name, 0, None, db
        for index, (replica, cfg) in enumerate(zip(db.replicas, db.replica_configs, strict=True)):
            yield name, index, replica, cfg
