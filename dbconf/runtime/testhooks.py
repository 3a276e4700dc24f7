"""Two hooks through which a test harness redirects the runtime; both unset (None) otherwise.

dbconf's pytest plugin (:mod:`dbconf.integrations.pytest_plugin`) sets them for a test run and
restores the previous values afterwards; nothing else in dbconf sets them, and the runtime
only reads them, so outside such a run they cost one global lookup per call.

- **load hook** ``(profile, config_path) -> overrides or None``: :func:`dbconf.load` asks it,
  after loading a profile, for overrides to apply on top of everything (the plugin points the
  test profile's databases at the test databases); with overrides the profile is loaded again
  with them added to the caller's.
- **binder** ``(database_name, config) -> Binding or None``: :meth:`Database.sessionmaker
  <dbconf.runtime.database.Database.sessionmaker>` asks it which connection the sessions of this
  database must use. With a :class:`Binding`, sessions are bound to that connection (already
  in a transaction) with ``join_transaction_mode="create_savepoint"``: their commits release
  savepoints and the harness rolls everything back. A binder may raise to refuse a session.
- **async binder** ``(database_name, config) -> AsyncConnection or None``: the same for
  :meth:`Database.async_sessionmaker
  <dbconf.runtime.async_database.AsyncDatabase.async_sessionmaker>` (the connection belongs to the
  running event loop).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from dbconf.config import DatabaseConfig

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "AsyncBinder",
    "Binder",
    "Binding",
    "LoadHook",
    "async_binding_for",
    "binding_for",
    "get",
    "load_overrides",
    "set_hooks",
]


@dataclass(frozen=True)
class Binding:
    """Where a database's sessions go during a test: ``connection`` is in an outer
    transaction that the harness rolls back."""

    connection: sa.Connection


LoadHook = Callable[[str, Path], Mapping[str, Any] | None]
Binder = Callable[[str, DatabaseConfig], Binding | None]
AsyncBinder = Callable[[str, DatabaseConfig], "AsyncConnection | None"]

_load_hook: LoadHook | None = None
_binder: Binder | None = None
_async_binder: AsyncBinder | None = None


def set_hooks(
    load_hook: LoadHook | None, binder: Binder | None, async_binder: AsyncBinder | None = None
) -> tuple[Any, Any, Any]:
    """Install the hooks; return the previous ones, to pass back here to restore them."""
    global _load_hook, _binder, _async_binder
    previous = (_load_hook, _binder, _async_binder)
    _load_hook, _binder, _async_binder = load_hook, binder, async_binder
    return previous


def get() -> tuple[LoadHook | None, Binder | None, AsyncBinder | None]:
    """The installed hooks (all None when no harness is active)."""
    return _load_hook, _binder, _async_binder


def load_overrides(profile: str, path: Path) -> Mapping[str, Any] | None:
    """What the load hook adds to ``profile`` read from ``path``; None without a hook."""
    hook = _load_hook
    return None if hook is None else hook(profile, path)


def binding_for(name: str, config: DatabaseConfig) -> Binding | None:
    """The binding the binder gives database ``name``; None without a binder."""
    binder = _binder
    return None if binder is None else binder(name, config)


def async_binding_for(name: str, config: DatabaseConfig) -> AsyncConnection | None:
    """The async connection the async binder gives database ``name``; None without one."""
    binder = _async_binder
    return None if binder is None else binder(name, config)
