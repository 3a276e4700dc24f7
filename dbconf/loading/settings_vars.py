"""A pydantic settings object as variables for ``${VAR}``: ``dbconf.load(settings=app_settings)``.

Each field (and computed field) with a plain value is a variable under its name as written and
upper-cased (``postgres_server`` is also ``${POSTGRES_SERVER}``; not a ``dbconf_…`` name, which
would then be set twice) and under its alias. Secrets
(``SecretStr``) give their value, booleans ``true``/``false``, URLs and paths their text;
``None``, mappings, lists and models are skipped. The settings' ``env_file`` (its
``model_config``) is read too, relative to the working directory as pydantic-settings reads
it, and skipped when missing as pydantic-settings skips it.

Any pydantic model works: dbconf does not import pydantic-settings here.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Secret, SecretBytes, SecretStr

from dbconf.config.origin import Origin
from dbconf.errors import ConfigError, Problem

__all__ = ["SettingsValues", "settings_env_files", "settings_variables"]


class SettingsValues(dict[str, Any]):
    """Values of a settings class's fields (what its sources found), named for origins."""

    def __init__(self, values: Mapping[str, Any], *, owner: str) -> None:
        super().__init__(values)
        self.owner = owner


def settings_variables(settings: Any) -> dict[str, tuple[str, Origin]]:
    """The variables a settings object gives, each with its origin ``settings field Cls.name``.

    ``settings`` may also be a mapping of field names to values (a :class:`SettingsValues`:
    what the sources of a pydantic-settings class found so far, named by its class).
    """
    owner = str(getattr(settings, "owner", "settings"))
    if isinstance(settings, BaseModel):
        cls = type(settings)
        owner = cls.__name__
        aliases: dict[str, str | None] = {name: f.alias for name, f in cls.model_fields.items()}
        aliases.update({name: None for name in cls.model_computed_fields})
        values = {name: getattr(settings, name) for name in aliases}
    elif isinstance(settings, Mapping):
        aliases = {str(name): None for name in settings}
        values = {str(name): value for name, value in settings.items()}
    else:
        raise ConfigError(
            [
                Problem(
                    "settings=",
                    "",
                    f"expected a pydantic BaseSettings (or BaseModel) instance, got "
                    f"{type(settings).__name__}",
                )
            ]
        )
    variables: dict[str, tuple[str, Origin]] = {}
    for name, alias in aliases.items():
        text = _text(values[name])
        if text is None:
            continue
        origin = Origin("settings", f"{owner}.{name}")
        upper = name.upper() if not name.upper().startswith("DBCONF_") else name  # no twin
        for var in dict.fromkeys((name, upper, alias or name)):
            variables[var] = (text, origin)
    return variables


def settings_env_files(settings: Any) -> list[Path]:
    """The ``env_file`` of a settings object's ``model_config`` that exist, in order."""
    config: Mapping[str, Any] = getattr(settings, "model_config", {})
    named = config.get("env_file")
    if named is None:
        return []
    paths = [named] if isinstance(named, str | os.PathLike) else list(_sequence(named))
    return [Path(p) for p in paths if Path(p).exists()]


def _sequence(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else []


def _text(value: Any) -> str | None:
    if isinstance(value, SecretStr | SecretBytes | Secret):
        value = value.get_secret_value()
    if value is None or isinstance(value, Mapping | list | tuple | set | BaseModel):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
