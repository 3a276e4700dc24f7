"""The template's ``Settings``, with its databases given by dbconf.

pydantic-settings reads the environment and ``../.env`` (relative to ``backend/``, as in the
template); :class:`~dbconf.integrations.pydantic_settings.DbconfSettingsSource`, last in the
sources, fills ``databases`` from ``config/databases.yaml``, whose ``${POSTGRES_SERVER}`` and
friends are the values the sources before it found.
"""

import functools
from typing import Literal

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

import dbconf
from dbconf.integrations.pydantic_settings import DbconfSettingsSource


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file="../.env",
        env_ignore_empty=True,
        extra="ignore",  # the template's own
    )
    PROJECT_NAME: str = "app"
    ENVIRONMENT: Literal["local", "staging", "production"] = "local"
    POSTGRES_SERVER: str
    POSTGRES_PORT: int = 5432
    POSTGRES_USER: str
    POSTGRES_PASSWORD: str = ""
    POSTGRES_DB: str = ""
    ITEMS_TABLE: str = "item"

    databases: dbconf.ProfileConfig  # the profile dbconf loads: validated, passwords masked

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            file_secret_settings,
            DbconfSettingsSource(settings_cls),  # last: it sees what the others found
        )


@functools.cache
def get_settings() -> Settings:
    return Settings()  # type: ignore[call-arg]  # required fields come from the environment
