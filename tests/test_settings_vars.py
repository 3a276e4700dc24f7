"""dbconf.load(settings=app_settings): ${VAR} reads the fields of an app's settings object
(and its env_file), each value told as ``settings field Cls.name``."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict

import dbconf
from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile
from dbconf.loading.settings_vars import settings_variables

WriteConfig = Callable[..., Path]

CONFIG = """
    profiles:
      p:
        databases:
          primary:
            driver: postgresql+psycopg2
            host: ${POSTGRES_SERVER}
            port: ${POSTGRES_PORT}
            username: ${POSTGRES_USER}
            password: ${POSTGRES_PASSWORD}
            database: ${POSTGRES_DB}
            echo: ${DEBUG_SQL}
            application_name: ${ENVIRONMENT}
"""


class Environment(Enum):
    LOCAL = "local"
    STAGING = "staging"


class AppSettings(BaseModel):
    POSTGRES_SERVER: str = "db.internal"
    POSTGRES_PORT: int = 6543
    postgres_user: str = "app"  # lower-case: also ${POSTGRES_USER}
    POSTGRES_PASSWORD: SecretStr = SecretStr("pw-from-settings")
    DEBUG_SQL: bool = True
    ENVIRONMENT: Environment = Environment.STAGING
    NOT_A_VALUE: dict[str, int] = {"x": 1}
    UNSET: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def POSTGRES_DB(self) -> str:  # noqa: N802 (the template's style)
        return f"{self.ENVIRONMENT.value}_db"


def test_settings_fields_feed_interpolation(write_config: WriteConfig) -> None:
    loaded = load_profile("p", path=write_config(CONFIG), environ={}, settings=AppSettings())
    db = loaded.config.databases["primary"]
    assert (db.host, db.port, db.username, db.database, db.echo) == (
        "db.internal",
        6543,
        "app",
        "staging_db",
        True,
    )
    assert db.application_name == "staging"
    assert db.password is not None
    assert db.password.get_secret_value() == "pw-from-settings"
    assert str(loaded.origin("databases", "primary", "host")).endswith(
        "(via ${POSTGRES_SERVER} from settings field AppSettings.POSTGRES_SERVER)"
    )
    assert str(loaded.origin("databases", "primary", "username")).endswith(
        "(via ${POSTGRES_USER} from settings field AppSettings.postgres_user)"
    )


def test_settings_fields_win_over_the_environment(write_config: WriteConfig) -> None:
    """The settings object already took the environment into account: its value is the
    app's truth (an init argument may have overridden the variable)."""
    settings = AppSettings(POSTGRES_SERVER="from.init")
    environ = {"POSTGRES_SERVER": "from.env"}
    loaded = load_profile("p", path=write_config(CONFIG), environ=environ, settings=settings)
    assert loaded.config.databases["primary"].host == "from.init"


def test_dbconf_load_takes_settings(write_config: WriteConfig) -> None:
    dbs = dbconf.load("p", path=write_config(CONFIG), environ={}, settings=AppSettings())
    assert dbs["primary"].config.host == "db.internal"
    assert "pw-from-settings" not in repr(dbs["primary"].config)


def test_the_settings_env_file_is_read(write_config: WriteConfig, tmp_path: Path) -> None:
    """A BaseSettings' env_file (relative to the working directory, as pydantic-settings reads
    it): its variables that are no fields are visible too."""
    env_file = tmp_path / "app.env"
    env_file.write_text("POSTGRES_SERVER=db.from.env\nEXTRA_NAME=extra_db\n")

    class Settings(BaseSettings):
        model_config = SettingsConfigDict(env_file=env_file, extra="ignore")
        POSTGRES_SERVER: str = "default.host"

    config = write_config(CONFIG.replace("${POSTGRES_DB}", "${EXTRA_NAME}"))
    environ = {
        "POSTGRES_PORT": "5432",
        "POSTGRES_USER": "u",
        "POSTGRES_PASSWORD": "x",
        "DEBUG_SQL": "false",
        "ENVIRONMENT": "local",
    }
    settings = Settings()
    loaded = load_profile("p", path=config, environ=environ, settings=settings)
    db = loaded.config.databases["primary"]
    assert (db.host, db.database) == ("db.from.env", "extra_db")
    assert str(loaded.origin("databases", "primary", "database")).endswith(
        f"(via ${{EXTRA_NAME}} from {env_file}:2)"
    )


def test_values_that_are_no_scalars_are_not_variables() -> None:
    variables = settings_variables(AppSettings())
    assert "NOT_A_VALUE" not in variables
    assert "UNSET" not in variables
    assert variables["DEBUG_SQL"][0] == "true"
    assert variables["ENVIRONMENT"][0] == "staging"


def test_settings_must_be_a_pydantic_model(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=write_config(CONFIG), environ={}, settings=object())
    assert str(info.value.problems[0]) == (
        "settings=: expected a pydantic BaseSettings (or BaseModel) instance, got object"
    )


def test_a_missing_variable_is_still_an_error(write_config: WriteConfig) -> None:
    class Partial(BaseModel):
        POSTGRES_SERVER: str = "h"

    with pytest.raises(ConfigError) as info:
        load_profile("p", path=write_config(CONFIG), environ={}, settings=Partial())
    assert "environment variable POSTGRES_PORT is not set" in str(info.value)
