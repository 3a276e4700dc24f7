""".env files: ``env_file=``, ``DBCONF_ENV_FILE``, the settings' ``env_file`` or the YAML's
top-level ``env_file:``, read with python-dotenv's parser (the one pydantic-settings uses).

The file's variables sit under the real environment: a variable set in both takes the real
environment's value. ``${VAR}`` inside the .env expands the way python-dotenv's
``dotenv_values`` expands it (earlier lines of the file first, then the environment), except
that the environment is the ``environ`` mapping dbconf was given, never ``os.environ``.

Every value taken from a .env file keeps its file:line: :func:`attribute` rewrites the origins
``env VAR`` of the loaded profile into ``path:line (via VAR)`` and the ``${VAR}`` an
interpolated value came from into ``${VAR} from path:line``.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from dotenv.parser import parse_stream
from dotenv.variables import parse_variables

from dbconf.config.origin import KeyPath, Origin
from dbconf.errors import Problem
from dbconf.loading.files import CONFIG_LIMIT_VAR, UnreadableFileError, read_text, shown

__all__ = ["ENV_FILE_VAR", "EnvFile", "attribute", "layered", "read_env_file", "told"]

log = logging.getLogger("dbconf.loader")

ENV_FILE_VAR = "DBCONF_ENV_FILE"
_ENV_WORD = re.compile(r"\benv ([A-Za-z_][A-Za-z0-9_]*)")
_USED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class EnvFile:
    """One .env file to read: its path, who named it, and whether a missing file is fine."""

    def __init__(self, path: Path, named_by: str, *, optional: bool) -> None:
        self.path = path
        self.named_by = named_by
        self.optional = optional


def read_env_file(
    env_file: EnvFile, environ: Mapping[str, str], limit: int, problems: list[Problem]
) -> dict[str, tuple[str, Origin]]:
    """The variables of one .env file, each with its origin ``path:line (via NAME)``.

    A missing file named only by the YAML or the settings (``optional``) is skipped, as
    pydantic-settings skips it; named by ``env_file=`` or ``DBCONF_ENV_FILE`` it is an error,
    like an unreadable file (a directory, a FIFO, over the size cap, not UTF-8).
    """
    path = env_file.path
    if env_file.optional and not path.exists():
        log.debug(
            "env file %s (named by %s) does not exist; skipped", shown(path), env_file.named_by
        )
        return {}
    try:
        text, _ = read_text(path, limit, CONFIG_LIMIT_VAR)
    except UnreadableFileError as e:
        problems.append(
            Problem(
                env_file.named_by,
                "",
                f"cannot read the env file {shown(path)} ({e}); fix the path or remove the setting",
            )
        )
        return {}
    values: dict[str, tuple[str, Origin]] = {}
    resolved: dict[str, str | None] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:  # python-dotenv warns and goes on; so do we (never quoting the line)
            log.warning("%s:%d: cannot parse this line; it is skipped", path, binding.original.line)
            continue
        if binding.key is None:
            continue  # a comment or a blank line
        if binding.value is None:  # "NAME" without "=": pydantic-settings reads no value
            resolved[binding.key] = None
            continue
        # dotenv_values(): the file's earlier values win over the environment inside the file.
        scope: dict[str, str | None] = {**environ, **resolved}
        value = "".join(atom.resolve(scope) for atom in parse_variables(binding.value))
        resolved[binding.key] = value
        values[binding.key] = (
            value,
            Origin("dotenv", str(path), binding.original.line, via=binding.key),
        )
    return values


def layered(
    environ: Mapping[str, str],
    files: Iterable[EnvFile],
    limit: int,
    problems: list[Problem],
    extra: Mapping[str, tuple[str, Origin]] | None = None,
) -> tuple[dict[str, str], dict[str, Origin]]:
    """The environment a profile is loaded with: the .env files (a later one wins), then the real
    ``environ`` over them, then ``extra`` (a settings object's fields) over both; and the origin of
    each variable that did not come from ``environ``."""
    from_files: dict[str, tuple[str, Origin]] = {}
    for env_file in files:
        from_files.update(read_env_file(env_file, environ, limit, problems))
    merged = {name: value for name, (value, _) in from_files.items() if name not in environ}
    merged.update(environ)
    origins = {name: origin for name, (_, origin) in from_files.items() if name not in environ}
    for name, (value, origin) in (extra or {}).items():
        merged[name] = value
        origins[name] = origin
    return merged, origins


def attribute(
    origins: dict[KeyPath, Origin], problems: list[Problem], sources: Mapping[str, Origin]
) -> list[Problem]:
    """Origins and problems that said ``env VAR`` for a variable of a .env file (or of the
    settings) say where it was written; ``${VAR}`` in an interpolation's ``via`` too."""
    if not sources:
        return problems

    def used(match: re.Match[str]) -> str:
        origin = sources.get(match[1])
        return match[0] if origin is None else f"{match[0]} from {_place(origin)}"

    for path, origin in list(origins.items()):
        if origin.kind == "env" and origin.source in sources:
            origins[path] = sources[origin.source]
        elif origin.via and "${" in origin.via:
            via = _USED_VAR.sub(used, origin.via)
            origins[path] = Origin(origin.kind, origin.source, origin.line, origin.column, via)

    return [Problem(told(p.origin, sources), p.path, p.message) for p in problems]


def told(text: str, sources: Mapping[str, Origin]) -> str:
    """``text`` with each ``env VAR`` of a variable from a .env file (or settings) told as such."""

    def said(match: re.Match[str]) -> str:
        origin = sources.get(match[1])
        return match[0] if origin is None else str(origin)

    return _ENV_WORD.sub(said, text) if sources else text


def _place(origin: Origin) -> str:
    """Where a variable was written, without repeating its name."""
    return str(Origin(origin.kind, origin.source, origin.line, origin.column))
