"""The same setting given twice: a translated timeout or name also written as a driver argument.

:func:`conflicts` compares what the builder would pass for ``timeouts``/``application_name``
with what the user wrote in ``connect_args`` and the URL query, including the server settings
hidden inside libpq's ``options`` (every spelling the server reads), asyncpg's
``server_settings`` (and its client-side ``command_timeout`` against ``timeouts.statement``) and
MariaDB/MySQL's ``init_command``. The per-dialect names are tables of :mod:`dbconf.dialects`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from dbconf.dialects import mysql, postgresql
from dbconf.dialects.postgresql import pg_option_names
from dbconf.errors import Problem

if TYPE_CHECKING:
    from dbconf.config.models import DatabaseConfig

__all__ = ["conflicts", "given"]


def _conflict(key: str, arg: str) -> Problem:
    return Problem(
        "",
        key,
        f"is also given as the driver argument {arg!r} in connect_args or the URL query; "
        "set it in one place only",
    )


def given(cfg: DatabaseConfig, arg: str) -> list[str]:
    """Every value of driver argument ``arg`` written in connect_args or the URL query."""
    values: list[Any] = []
    user = cfg.connect_args or {}
    if arg in user:
        values.append(user[arg])
    query = cfg.sqlalchemy_url.query.get(arg)
    values += [query] if isinstance(query, str) else list(query or ())
    return [str(v) for v in values]


def conflicts(cfg: DatabaseConfig, ours: dict[str, Any]) -> list[Problem]:
    """Each setting of ``ours`` (the translated driver arguments) the user also wrote."""
    t = cfg.timeouts
    names = {
        "connect_timeout": "timeouts.connect",
        "timeout": "timeouts.connect" if t.connect is not None else "timeouts.lock",  # SQLite
        "application_name": "application_name",
        "program_name": "application_name",
    }
    nested = ("options", "server_settings")
    problems = [_conflict(names[arg], arg) for arg in ours if arg not in nested and given(cfg, arg)]
    if "server_settings" in ours:  # asyncpg: the names inside a user's server_settings
        user = (cfg.connect_args or {}).get("server_settings")
        written = {str(k).lower() for k in user} if isinstance(user, dict) else set()
        for name in ours["server_settings"]:
            key = next((f"timeouts.{k}" for k, g in postgresql.GUCS.items() if g == name), None)
            if name in written:
                problems.append(_conflict(key or "application_name", f"server_settings.{name}"))
        if t.statement is not None and given(cfg, "command_timeout"):
            problems.append(_conflict("timeouts.statement", "command_timeout"))
    if "options" in ours:
        written = {n for text in given(cfg, "options") for n in pg_option_names(text)}
        for key, guc in postgresql.GUCS.items():
            if getattr(t, key) is not None and guc in written:
                problems.append(_conflict(f"timeouts.{key}", f"options (-c {guc})"))
    if cfg.backend in ("mysql", "mariadb"):
        init = " ".join(given(cfg, "init_command")).lower()
        for key, variables in mysql.VARIABLES.items():
            hit = [v for v in variables if re.search(rf"\b{v}\b", init)]
            if getattr(t, key) is not None and hit:
                problems.append(_conflict(f"timeouts.{key}", f"init_command ({hit[0]})"))
    return problems
