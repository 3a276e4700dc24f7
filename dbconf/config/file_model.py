"""The whole file's model, for the JSON Schema: ``profiles`` and the top-level keys that pick
what is read (:mod:`dbconf.loading.selection`). The loader reads these keys itself, before any
profile."""

from __future__ import annotations

from pydantic import Field

from dbconf.config.models import FileConfig

__all__ = ["WholeFile"]


class WholeFile(FileConfig):
    """``config/databases.yaml``: profiles, ``default_profile`` and ``env_file``."""

    default_profile: str | None = Field(
        None, description="profile when none is named (profile=, DBCONF_PROFILE); ${VAR} allowed"
    )
    env_file: str | None = Field(
        None, description=".env file read under the environment, relative to this file"
    )
