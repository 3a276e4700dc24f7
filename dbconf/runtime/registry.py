"""The runtime objects: a :class:`Registry` of named :class:`~dbconf.runtime.database.Database`
objects (sync and async).

Leaving a ``with Registry`` block (or an ``async with`` one) closes it (:meth:`Registry.close`,
:meth:`Registry.aclose`): every idle pooled connection is closed, a connection still checked
out (a thread or task mid-scope) is closed when it is returned instead of going back to a pool,
and any further use of the registry or of its databases raises
:class:`~dbconf.errors.RegistryClosedError` instead of building a new pool.
:meth:`Registry.dispose` only empties the pools; the registry stays usable.

``close()`` called synchronously also closes the async engines as far as a synchronous call
can: see :meth:`Database.close` (``aclose()`` awaits the running loop's engine instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from dbconf.config import ProfileConfig
from dbconf.config.origin import KeyPath, Origin, find_origin
from dbconf.errors import ConfigError, RegistryClosedError, UnknownDatabaseError
from dbconf.loading.loader import load_profile
from dbconf.loading.selection import EnvFiles
from dbconf.pooling.pool_metrics import load_exporter
from dbconf.replicas.state import ReplicaStatus
from dbconf.runtime import testhooks
from dbconf.runtime.database import Database
from dbconf.runtime.health import registry_health
from dbconf.runtime.reports import DatabaseReport
from dbconf.runtime.rules import build_problems

__all__ = ["Database", "DatabaseReport", "Registry", "load"]


class Registry:
    """The databases of one loaded profile, by name. A context manager that closes them."""

    def __init__(
        self,
        config: ProfileConfig,
        *,
        profile: str = "default",
        origins: Mapping[KeyPath, Origin] | None = None,
    ) -> None:
        self.profile = profile
        self.config = config
        self.origins: Mapping[KeyPath, Origin] = origins or {}
        # The loader has run these checks already; a Registry built from a model runs them
        # too (they only import drivers and translate settings: well under 1 ms a database).
        problems = build_problems(config.databases, self.origins, profile)
        if problems:
            raise ConfigError(problems)
        self._databases = {name: Database(name, db) for name, db in config.databases.items()}
        self._closed = False
        for kind in config.metrics.exporters if config.metrics is not None else ():
            origin = find_origin(self.origins, ("metrics", kind))
            where = f"profiles.{profile}.metrics.{kind}"
            load_exporter(kind, str(origin) if origin else "", where).instrument(self)

    def __repr__(self) -> str:
        return f"<Registry profile={self.profile!r} databases={list(self._databases)}>"

    @property
    def names(self) -> tuple[str, ...]:
        """Database names in declaration order."""
        return tuple(self._databases)

    @property
    def default(self) -> Database:
        return self[self.config.default_name]

    def __getitem__(self, name: str) -> Database:
        try:
            db = self._databases[name]
        except KeyError:
            raise UnknownDatabaseError(name, self.names, self.profile) from None
        if self._closed:
            raise RegistryClosedError(name)
        return db

    def __contains__(self, name: object) -> bool:
        return name in self._databases

    def __iter__(self) -> Iterator[Database]:
        return iter(self._databases.values())

    def __len__(self) -> int:
        return len(self._databases)

    def check(self, names: list[str] | None = None) -> list[DatabaseReport]:
        """Connect to each database (or those named) and report; see :meth:`Database.check`."""
        return [self[name].check() for name in (names or self.names)]

    async def async_check(self, names: list[str] | None = None) -> list[DatabaseReport]:
        """:meth:`check` over the async engines, concurrently; never raises for an unreachable
        server (see :meth:`Database.async_check`)."""
        dbs = [self[name] for name in (names or self.names)]
        return list(await asyncio.gather(*(db.async_check() for db in dbs)))

    def replica_status(self) -> dict[str, list[ReplicaStatus]]:
        """:meth:`Database.replica_status` of every database (name → list; [] without
        replicas)."""
        return {db.name: db.replica_status() for db in self._databases.values()}

    def health(self, names: list[str] | None = None) -> dict[str, Any]:
        """Each database's :meth:`Database.health` (or those named) under ``status``: ``ok``
        when all are up, else ``unavailable`` (:func:`dbconf.runtime.health.registry_health`)."""
        entries = [self[name].health() for name in (names or self.names)]
        return registry_health(self.profile, entries)

    async def async_health(self, names: list[str] | None = None) -> dict[str, Any]:
        """:meth:`health` through the async engines, concurrently."""
        dbs = [self[name] for name in (names or self.names)]
        entries = await asyncio.gather(*(db.async_health() for db in dbs))
        return registry_health(self.profile, entries)

    def dispose(self) -> None:
        """Dispose every engine that was built (the registry stays usable: new pools)."""
        for db in self._databases.values():
            db.dispose()

    def close(self) -> None:
        """Close every database (:meth:`Database.close`); what ``with`` does at the end."""
        self._closed = True
        for db in self._databases.values():
            db.close()

    async def aclose(self) -> None:
        """:meth:`close`, awaiting the disposal of the running loop's async engines; what
        ``async with`` does at the end."""
        self._closed = True
        await asyncio.gather(*(db.aclose() for db in self._databases.values()))

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def load(
    profile: str | None = None,
    *,
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_file: EnvFiles = None,
    settings: Any = None,
) -> Registry:
    """Load ``profile`` (validated now; no engine, no connection until first use).

    ``env_file``: .env file(s) under ``environ``; ``settings``: an app's pydantic settings
    object whose fields ``${VAR}`` reads (see :func:`dbconf.loading.loader.load_profile`).

    During a test run of dbconf's pytest plugin, the test profile's databases are pointed at
    the test databases here (:func:`dbconf.runtime.testhooks.load_overrides`).
    """
    options: dict[str, Any] = {"path": path, "environ": environ, "env_file": env_file}
    loaded = load_profile(profile, overrides=overrides, settings=settings, **options)
    if loaded.path is not None:
        extra = testhooks.load_overrides(loaded.name, loaded.path)
        if extra:
            combined = {**(overrides or {}), **extra}
            loaded = load_profile(loaded.name, overrides=combined, settings=settings, **options)
    return Registry(loaded.config, profile=loaded.name, origins=loaded.origins)
