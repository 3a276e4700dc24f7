"""The session class of a flavour (``class: module.sub:QualName``), imported and checked.

:class:`~dbconf.config.SessionConfig` only checks the form of the path (models do no I/O);
:func:`class_problem` (run at load by :func:`dbconf.runtime.rules.build_problems`) imports it and
checks that it is a subclass of :class:`sqlalchemy.orm.Session` or of
:class:`sqlalchemy.ext.asyncio.AsyncSession`. One class serves both sides:

- a ``Session`` subclass is the sync class, and the ``sync_session_class`` of a plain
  ``AsyncSession`` for async use;
- an ``AsyncSession`` subclass is the async class, and its ``sync_session_class`` is the
  sync class (``sqlmodel.ext.asyncio.session:AsyncSession`` → sqlmodel's ``Session``).
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from dbconf.errors import ConfigError, Problem, did_you_mean

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from dbconf.config import SessionConfig

__all__ = ["async_classes", "class_problem", "find_object", "import_class", "sync_class"]


def _async_session() -> type[AsyncSession]:
    from sqlalchemy.ext.asyncio import AsyncSession

    return AsyncSession


def find_object(path: str, what: str = "session class") -> Any:
    """The object at ``module.sub:QualName`` (``what`` names it in errors: a session class, a
    credentials callable); raises ValueError saying what is wrong."""
    module_name, _, qualname = path.partition(":")
    form = "module.sub:ClassName" if "class" in what else "module.sub:function"
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f"cannot import module {module_name!r} of {what} {path!r} ({e}); install "
            f"the package that provides it, or fix the path ({form})"
        ) from None
    where = module_name
    for part in qualname.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise ValueError(
                f"{where} has no attribute {part!r}{did_you_mean(part, names)} ({what} {path!r})"
            )
        obj = getattr(obj, part)
        where = f"{where}.{part}" if where != module_name else f"{module_name}:{part}"
    return obj


def _check(path: str, obj: Any) -> type[Session] | type[AsyncSession]:
    async_session = _async_session()
    if isinstance(obj, type) and issubclass(obj, Session | async_session):
        return obj
    raise ValueError(
        f"session class {path!r} is not a subclass of sqlalchemy.orm.Session or "
        "sqlalchemy.ext.asyncio.AsyncSession"
    )


@functools.cache
def import_class(path: str) -> type[Session] | type[AsyncSession]:
    """The class at ``path`` (cached); :class:`ConfigError` if it cannot be imported or is not
    a Session/AsyncSession subclass."""
    try:
        return _check(path, find_object(path))
    except ValueError as e:
        raise ConfigError([Problem("", "class", str(e))]) from None


def class_problem(path: str) -> str | None:
    """Why the session class at ``path`` cannot be used, or None (imports it)."""
    try:
        _check(path, find_object(path))
    except ValueError as e:
        return str(e)
    return None


def sync_class(flavour: SessionConfig) -> type[Session]:
    """The sync session class of ``flavour`` (``Session`` when it names none)."""
    if flavour.class_ is None:
        return Session
    cls = import_class(flavour.class_)
    if issubclass(cls, Session):
        return cls
    sync: type[Session] = cls.sync_session_class
    return sync


def async_classes(flavour: SessionConfig) -> tuple[type[AsyncSession], type[Session]]:
    """``(class_, sync_session_class)`` for an ``async_sessionmaker`` of ``flavour``."""
    async_session = _async_session()
    if flavour.class_ is None:
        return async_session, Session
    cls = import_class(flavour.class_)
    if issubclass(cls, Session):
        return async_session, cls
    return cls, cls.sync_session_class
