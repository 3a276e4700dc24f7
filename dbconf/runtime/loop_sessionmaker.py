"""The sessionmaker that serves every event loop (:class:`LoopSessionmaker`, see
:mod:`dbconf.runtime.loops`). Its own module because subclassing ``async_sessionmaker`` imports
``sqlalchemy.ext.asyncio``, which needs greenlet: only async use (which installs it through the
async extras) imports this module, so ``import dbconf`` works without greenlet."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dbconf.runtime.loops import LoopEngines

__all__ = ["LoopSessionmaker"]

_AS = TypeVar("_AS", bound=AsyncSession)


class LoopSessionmaker(async_sessionmaker[_AS]):
    """An ``async_sessionmaker`` whose sessions bind the running loop's engine when created
    (unless a ``bind`` is given), so one sessionmaker serves every event loop."""

    def __init__(self, engines: LoopEngines, *, autocommit: bool = False, **kw: Any) -> None:
        super().__init__(None, **kw)
        self.engines = engines
        self.autocommit = autocommit

    def __call__(self, **local_kw: Any) -> _AS:
        if local_kw.get("bind") is None and self.kw.get("bind") is None:
            local_kw["bind"] = self.engines.current(autocommit=self.autocommit)
        return super().__call__(**local_kw)
