"""pydantic-settings, both ways (needs the ``settings`` extra: ``pip install 'dbconf[settings]'``).

**A dbconf profile inside an app's** ``BaseSettings``: :class:`DbconfSettingsSource` fills one
field (``databases`` by default) with the validated :class:`~dbconf.ProfileConfig`:

.. code-block:: python

    class Settings(BaseSettings):
        model_config = SettingsConfigDict(env_file="../.env", extra="ignore")
        ENVIRONMENT: Literal["local", "staging", "production"] = "local"
        POSTGRES_SERVER: str
        databases: dbconf.ProfileConfig

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                       dotenv_settings, file_secret_settings):
            return (init_settings, env_settings, dotenv_settings, file_secret_settings,
                    DbconfSettingsSource(settings_cls))  # last: it sees what the others found

    settings = Settings()
    dbs = registry(settings.databases)   # a Registry that keeps the origins (file:line)

The source loads the profile as :func:`dbconf.load` does (the file, ``DBCONF_PROFILE``,
``default_profile``, env vars and secrets, every problem a :class:`~dbconf.ConfigError` with
its origin), with two additions: ``${VAR}`` in the YAML also reads the values the sources
before it found (``${POSTGRES_SERVER}`` from the settings' ``.env``), and the settings'
``env_file`` is read as dbconf's .env file (missing files skipped, as pydantic-settings skips
them). Passwords stay ``SecretStr``: the settings' repr shows ``'**********'``.

**The app's settings inside dbconf**: ``dbconf.load(settings=settings)`` (no import of this
module needed) lets ``${VAR}`` read the fields of a settings object and its ``env_file``
(:mod:`dbconf.loading.settings_vars`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from dbconf.config import ProfileConfig
from dbconf.loading.loader import LoadedProfile, load_profile
from dbconf.loading.settings_vars import SettingsValues, settings_env_files
from dbconf.runtime.registry import Registry

__all__ = ["DbconfSettingsSource", "loaded_profile", "registry"]

_REMEMBERED: OrderedDict[int, LoadedProfile] = OrderedDict()  # the last few, by config id
_REMEMBER = 16


class DbconfSettingsSource(PydanticBaseSettingsSource):
    """A pydantic-settings source that puts a dbconf profile into the field ``field``.

    ``profile``, ``path``, ``environ`` and ``overrides`` mean what they mean for
    :func:`dbconf.load`. ``env_file`` defaults to the settings class's ``env_file`` (the
    files that exist, relative to the working directory as pydantic-settings reads them).
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        *,
        field: str = "databases",
        profile: str | None = None,
        path: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        env_file: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        super().__init__(settings_cls)
        self.field = field
        self.profile = profile
        self.path = path
        self.environ = environ
        self.overrides = overrides
        self.env_file = env_file
        self.loaded: LoadedProfile | None = None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # the whole profile is given by __call__

    def __call__(self) -> dict[str, Any]:
        env_file = self.env_file
        if env_file is None:
            env_file = settings_env_files(self.settings_cls) or None
        # What the sources before this one found for the declared fields (the .env's other
        # variables are read from the env_file itself, with their path:line).
        fields = {
            key
            for name, info in self.settings_cls.model_fields.items()
            for key in (name, info.alias)
            if key is not None and name != self.field
        }
        state = getattr(self, "current_state", {})
        found = {k: v for k, v in state.items() if k in fields}
        self.loaded = load_profile(
            self.profile,
            path=self.path,
            environ=self.environ,
            overrides=self.overrides,
            env_file=env_file,
            settings=SettingsValues(found, owner=self.settings_cls.__name__),
        )
        _remember(self.loaded)
        return {self.field: self.loaded.config}


def _remember(loaded: LoadedProfile) -> None:
    _REMEMBERED[id(loaded.config)] = loaded  # the entry holds the config: its id stays unique
    while len(_REMEMBERED) > _REMEMBER:
        _REMEMBERED.popitem(last=False)


def loaded_profile(config: ProfileConfig) -> LoadedProfile | None:
    """The :class:`~dbconf.loading.loader.LoadedProfile` (name, file, origins) a
    :class:`DbconfSettingsSource` made ``config`` from, if it is one of the last 16."""
    loaded = _REMEMBERED.get(id(config))
    return loaded if loaded is not None and loaded.config is config else None


def registry(config: ProfileConfig) -> Registry:
    """A :class:`~dbconf.Registry` on ``config`` (``settings.databases``), with the profile name
    and origins of the load when the source made it (errors then say file:line)."""
    loaded = loaded_profile(config)
    if loaded is None:
        return Registry(config)
    return Registry(loaded.config, profile=loaded.name, origins=loaded.origins)
