"""The sessionmakers of a database with replicas: which session class a flavour gets, and the
:class:`~dbconf.replicas.session.Route` its sessions route with (sync and async alike).

- ``role: replica`` → :class:`~dbconf.replicas.session.RoutingSession`; ``auto`` →
  :class:`~dbconf.replicas.session.AutoRoutingSession` (which also records its writes);
- ``role: primary`` (or none) with ``routing.read_your_writes`` →
  :class:`~dbconf.replicas.session.WriteTrackingSession`;
- otherwise (and always for a database without replicas) → the flavour's own class, untouched.

A flavour naming its own ``class:`` gets a subclass of both (dbconf's first in the MRO), unless
its class overrides ``get_bind`` and the flavour routes: two routings through one method
cannot both hold, so that is a :class:`~dbconf.errors.ConfigError`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dbconf.config import SessionConfig
from dbconf.errors import ConfigError, Problem
from dbconf.replicas.router import Router
from dbconf.replicas.session import (
    AutoRoutingSession,
    Role,
    Route,
    RoutingSession,
    WriteTrackingSession,
)

if TYPE_CHECKING:
    from dbconf.runtime.loops import LoopEngines

__all__ = ["async_route", "routed_class", "sync_route"]

_classes: dict[tuple[type[Session], type[Session]], type[Session]] = {}
_classes_lock = threading.Lock()


def _role(router: Router, flavour: SessionConfig) -> Role | None:
    """The role the flavour's sessions route with; None: plain sessions."""
    role = flavour.role or "primary"
    if role == "primary" and not router.routing.read_your_writes:
        return None
    return role


def routed_class(base: type[Session], role: Role, flavour_name: str) -> type[Session]:
    """The session class of a routed flavour whose own class is ``base``."""
    mixin: type[Session] = {
        "primary": WriteTrackingSession,
        "replica": RoutingSession,
        "auto": AutoRoutingSession,
    }[role]
    if base is Session:
        return mixin
    if role != "primary" and base.get_bind is not Session.get_bind:
        problem = (
            f"session class {base.__module__}.{base.__qualname__} overrides get_bind (its own "
            f"routing), and role: {role} routes reads to replicas through get_bind too; drop "
            "the role (role: primary) or the class's get_bind override"
        )
        raise ConfigError([Problem("", f"sessions.{flavour_name}", problem)])
    key = (mixin, base)
    with _classes_lock:
        cls = _classes.get(key)
        if cls is None:
            cls = _classes[key] = type(f"{mixin.__name__}_{base.__name__}", (mixin, base), {})
    return cls


def _route(
    router: Router,
    role: Role,
    replica: Callable[[int], sa.Engine],
    primary_read: Callable[[], sa.Engine],
) -> Route:
    dialect = router.dialect
    return Route(
        router=router,
        role=role,
        replica=replica,
        primary_read=primary_read,
        read_only_sql=dialect.read_only_transaction_sql if dialect is not None else None,
        write_position=dialect.write_position if dialect is not None else None,
        writes_key=router.writes_key,
    )


def sync_route(
    router: Router, flavour: SessionConfig, primary: Callable[[], sa.Engine]
) -> Route | None:
    """The route of a sync sessionmaker of ``flavour``; None: plain sessions."""
    role = _role(router, flavour)
    if role is None:
        return None
    replica: Callable[[int], sa.Engine] = router.replica_engine
    if flavour.autocommit:
        variants: dict[int, tuple[sa.Engine, sa.Engine]] = {}

        def replica(i: int) -> sa.Engine:
            engine = router.replica_engine(i)
            cached = variants.get(i)
            if cached is None or cached[0] is not engine:
                cached = variants[i] = (
                    engine,
                    engine.execution_options(isolation_level="AUTOCOMMIT"),
                )
            return cached[1]

    return _route(router, role, replica, primary)


def async_route(router: Router, flavour: SessionConfig, primary: LoopEngines) -> Route | None:
    """The route of an async sessionmaker of ``flavour`` (binds: the running loop's engines'
    ``sync_engine``); None: plain sessions."""
    role = _role(router, flavour)
    if role is None:
        return None
    autocommit = bool(flavour.autocommit)

    def replica(i: int) -> sa.Engine:
        return router.replica_async_engine(i, autocommit=autocommit).sync_engine

    def primary_read() -> sa.Engine:
        return primary.current().sync_engine

    return _route(router, role, replica, primary_read)


def maker_kwargs(route: Route, base: type[Session], flavour_name: str) -> dict[str, Any]:
    """What a sessionmaker of a routed flavour passes on: its session class, a subclass of
    :func:`routed_class` holding ``route`` as a class attribute (made once per sessionmaker,
    so making a session costs no more than making a plain one)."""
    cls = routed_class(base, route.role, flavour_name)
    attrs = {"_dbconf_route": route, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    return {"class_": type(cls.__name__, (cls,), attrs)}
