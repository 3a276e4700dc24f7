"""Session flavours' ``class:``: the form checked by the model, the class checked at load with
its file:line origin, and the classes the sync and async sessionmakers get."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from dbconf.config import DatabaseConfig, SessionConfig
from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile
from dbconf.runtime.builder import (
    build_async_engine,
    build_async_sessionmaker_kwargs,
    build_engine,
    build_sessionmaker,
)
from dbconf.sessions.session_classes import async_classes, sync_class

MODULE = "drivers_session_classes_mod"
SOURCE = """
from sqlalchemy.orm import Session
from sqlalchemy.ext.asyncio import AsyncSession


class AppSession(Session):
    pass


class AppAsyncSession(AsyncSession):
    sync_session_class = AppSession


class Outer:
    class Inner(Session):
        pass


class NotASession:
    pass
"""

WriteConfig = Callable[..., Path]


@pytest.fixture
def classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / f"{MODULE}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return MODULE


def flavour(path: str | None) -> SessionConfig:
    return SessionConfig.model_validate({"class": path} if path else {})


@pytest.mark.parametrize("path", ["sqlmodel.Session", "a:b:c", ":X", "mod:", "a b:C", "1a:B"])
def test_the_model_checks_only_the_form(path: str) -> None:
    with pytest.raises(ValidationError, match="is not an import path"):
        flavour(path)
    assert flavour("no_such_module_anywhere:Session").class_ is not None  # no import here


def test_sync_and_async_classes_for_each_kind(classes: str) -> None:
    import drivers_session_classes_mod as mod  # type: ignore[import-not-found]

    assert sync_class(flavour(None)) is Session
    assert async_classes(flavour(None)) == (AsyncSession, Session)
    assert sync_class(flavour(f"{classes}:AppSession")) is mod.AppSession
    assert async_classes(flavour(f"{classes}:AppSession")) == (AsyncSession, mod.AppSession)
    assert sync_class(flavour(f"{classes}:AppAsyncSession")) is mod.AppSession
    assert async_classes(flavour(f"{classes}:AppAsyncSession")) == (
        mod.AppAsyncSession,
        mod.AppSession,
    )
    assert sync_class(flavour(f"{classes}:Outer.Inner")) is mod.Outer.Inner


def test_sessionmakers_use_the_class(classes: str, tmp_path: Path) -> None:
    cfg = DatabaseConfig.model_validate(
        {
            "url": f"sqlite:///{tmp_path}/s.db",
            "sessions": {"app": {"class": f"{classes}:AppAsyncSession", "autoflush": False}},
        }
    )
    engine = build_engine("lite", cfg)
    try:
        with build_sessionmaker(engine, cfg.sessions["app"])() as session:
            assert type(session).__name__ == "AppSession"
            assert session.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
    kwargs = build_async_sessionmaker_kwargs(cfg.sessions["app"])
    assert kwargs["autoflush"] is False

    async def main() -> None:
        aengine = build_async_engine("lite", cfg)
        try:
            async with async_sessionmaker(aengine, **kwargs)() as session:
                assert type(session).__name__ == "AppAsyncSession"
                assert type(session.sync_session).__name__ == "AppSession"
                assert (await session.execute(sa.text("SELECT 1"))).scalar_one() == 1
        finally:
            await aengine.dispose()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("no_such_module_xyz:Session", "cannot import module 'no_such_module_xyz'"),
        (f"{MODULE}:AppSesion", "has no attribute 'AppSesion' (did you mean 'AppSession'?)"),
        (f"{MODULE}:NotASession", "is not a subclass of sqlalchemy.orm.Session"),
    ],
)
def test_a_bad_class_fails_load_with_its_origin(
    classes: str, write_config: WriteConfig, path: str, expected: str
) -> None:
    config = write_config(
        textwrap.dedent(
            f"""\
            profiles:
              p:
                databases:
                  db:
                    url: sqlite://
                    sessions:
                      app:
                        class: "{path}"
            """
        )
    )
    with pytest.raises(ConfigError) as err:
        load_profile("p", path=config, environ={})
    [problem] = err.value.problems
    assert problem.path == "profiles.p.databases.db.sessions.app.class"
    assert problem.origin == f"{config}:8:13"
    assert expected in problem.message
