"""dbconf.integrations.pydantic_settings: a dbconf profile as a field of an app's BaseSettings,
validated by dbconf (errors with origins), passwords masked, ${VAR} reading what the app's
other sources (its .env) found."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

import dbconf
from dbconf.errors import ConfigError
from dbconf.integrations.pydantic_settings import DbconfSettingsSource, loaded_profile, registry

CONFIG = """
    default_profile: ${ENVIRONMENT:-local}
    profiles:
      local:
        databases:
          primary:
            driver: postgresql+psycopg2
            host: ${POSTGRES_SERVER}
            port: ${POSTGRES_PORT}
            username: app
            password: ${POSTGRES_PASSWORD}
            database: app
      test:
        databases:
          primary: {url: "sqlite:///var/test.db"}
"""

DOTENV = """
    ENVIRONMENT=local
    POSTGRES_SERVER=db.from.dotenv
    POSTGRES_PORT=6543
    POSTGRES_PASSWORD=pw-from-dotenv
    DBCONF_DATABASES__PRIMARY__POOL__SIZE=4
"""


def make_settings(tmp_path: Path, **source: Any) -> type[BaseSettings]:
    """A template-like Settings class: .env beside it, a `databases` field from dbconf."""
    config = tmp_path / "databases.yaml"
    config.write_text(textwrap.dedent(CONFIG).lstrip())
    env_file = tmp_path / ".env"
    env_file.write_text(textwrap.dedent(DOTENV).lstrip())

    class Settings(BaseSettings):
        model_config = SettingsConfigDict(env_file=env_file, extra="ignore")
        ENVIRONMENT: str = "local"
        POSTGRES_SERVER: str
        POSTGRES_PORT: int = 5432
        databases: dbconf.ProfileConfig
        options: ClassVar[dict[str, Any]] = {"path": config, "environ": {}, **source}

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            dbconf_settings = DbconfSettingsSource(settings_cls, **cls.options)
            return (
                init_settings,
                env_settings,
                dotenv_settings,
                file_secret_settings,
                dbconf_settings,
            )

    return Settings


def test_the_profile_is_a_field_of_the_settings(tmp_path: Path) -> None:
    settings: Any = make_settings(tmp_path)()
    config: dbconf.ProfileConfig = settings.databases
    db = config.databases["primary"]
    assert (db.host, db.port, db.pool.size) == ("db.from.dotenv", 6543, 4)
    assert settings.POSTGRES_SERVER == "db.from.dotenv"  # the app's own field, same .env
    assert "pw-from-dotenv" not in repr(settings)
    assert "pw-from-dotenv" not in str(settings.model_dump())


def test_origins_travel_with_the_field(tmp_path: Path) -> None:
    settings: Any = make_settings(tmp_path)()
    loaded = loaded_profile(settings.databases)
    assert loaded is not None
    assert loaded.name == "local"
    assert str(loaded.origin("databases", "primary", "pool", "size")) == (
        f"{tmp_path / '.env'}:5 (via DBCONF_DATABASES__PRIMARY__POOL__SIZE)"
    )
    host = str(loaded.origin("databases", "primary", "host"))
    assert host.startswith(f"{tmp_path / 'databases.yaml'}:7:")
    assert host.endswith("(via ${POSTGRES_SERVER} from settings field Settings.POSTGRES_SERVER)")
    with registry(settings.databases) as dbs:
        assert dbs.profile == "local"
        assert dbs["primary"].config.host == "db.from.dotenv"


def test_an_init_argument_reaches_the_yaml(tmp_path: Path) -> None:
    """The source comes last: ${POSTGRES_SERVER} is what the sources before it settled on."""
    settings: Any = make_settings(tmp_path)(POSTGRES_SERVER="from.init")
    assert settings.databases.databases["primary"].host == "from.init"


def test_dbconf_profile_switches_the_settings_to_test(tmp_path: Path) -> None:
    settings: Any = make_settings(tmp_path, environ={"DBCONF_PROFILE": "test"})()
    assert loaded_profile(settings.databases).name == "test"  # type: ignore[union-attr]
    assert settings.databases.databases["primary"].url.get_secret_value() == "sqlite:///var/test.db"


def test_a_config_error_comes_out_of_the_settings_with_its_origin(tmp_path: Path) -> None:
    settings_cls = make_settings(
        tmp_path, overrides={"databases.primary.pool.size": 0}, environ={"DBCONF_PROFILE": "tset"}
    )
    with pytest.raises(ConfigError) as info:
        settings_cls()
    assert "env DBCONF_PROFILE: no profile 'tset' (did you mean 'test'?)" in str(info.value)


def test_an_unrelated_config_is_a_plain_registry(tmp_path: Path) -> None:
    config = dbconf.ProfileConfig.model_validate({"databases": {"primary": {"url": "sqlite://"}}})
    assert loaded_profile(config) is None
    with registry(config) as dbs:
        assert dbs.profile == "default"


def test_overrides_of_the_source_are_told_at_the_line_that_built_the_settings(
    tmp_path: Path,
) -> None:
    settings_cls = make_settings(tmp_path, overrides={"databases.primary.echo": True})
    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    settings: Any = settings_cls()
    loaded = loaded_profile(settings.databases)
    assert loaded is not None
    assert str(loaded.origin("databases", "primary", "echo")) == f"overrides= at {__file__}:{line}"
