"""Which file, which profile, and who passed ``overrides=``.

**The file**: ``path=`` (or ``--config``), else ``$DBCONF_CONFIG``, else the first
``config/databases.yaml`` found from the working directory upward. The search stops after the
first directory holding a repository root marker (``.git``, a directory or the file of a git
worktree, or ``.hg``), like pytest stops looking for its rootdir: a project's configuration is
never taken from a checkout it lies in. ``pyproject.toml`` is not a marker: in a monorepo such
as the FastAPI full-stack template it marks ``backend/``, below the repository root where the
configuration may live. Without a marker the search ends at the filesystem root.

**The profile**, first that is set: ``profile=`` in code (or ``--profile``), ``$DBCONF_PROFILE``,
the file's top-level ``default_profile:`` (``${VAR}`` allowed: ``${ENVIRONMENT:-local}``), then
``development``. A name in code wins over ``DBCONF_PROFILE``: it is the more specific
statement (as ``--profile`` beats the variable on a command line and ``overrides=`` beats the
environment), and a variable left in a shell must not silently move a script that names its
profile (a migration run on ``admin``) to another database. An app that wants the environment
to choose (the template: ``ENVIRONMENT``, and ``DBCONF_PROFILE=test`` under pytest) names no
profile in code and sets ``default_profile:``. When both are set and differ, a warning says
which one was used.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dbconf.config.origin import KeyPath, Origin
from dbconf.errors import ConfigError, Problem, did_you_mean
from dbconf.loading.envfile import ENV_FILE_VAR, EnvFile, attribute
from dbconf.loading.files import shown
from dbconf.loading.interpolation import interpolate
from dbconf.loading.merging import Origins
from dbconf.loading.settings_vars import settings_env_files

__all__ = [
    "DEFAULT_PATH",
    "DEFAULT_PROFILE",
    "ROOT_MARKERS",
    "EnvFiles",
    "attributed",
    "caller",
    "choose_profile",
    "default_profile",
    "env_files",
    "find_config",
    "report_replaced",
]

log = logging.getLogger("dbconf.loader")

EnvFiles = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None

DEFAULT_PATH = Path("config/databases.yaml")
DEFAULT_PROFILE = "development"
ROOT_MARKERS = (".git", ".hg")


def find_config(start: Path | None = None) -> Path:
    """The nearest ``config/databases.yaml`` from ``start`` (the working directory) upward.

    Relative (``config/databases.yaml``) when found in the working directory itself, absolute
    otherwise. Raises :class:`ConfigError` naming every directory looked in.
    """
    here = Path.cwd() if start is None else start
    looked: list[Path] = []
    stop = ""
    for directory in (here, *here.parents):
        looked.append(directory)
        candidate = directory / DEFAULT_PATH
        if candidate.is_file():
            return DEFAULT_PATH if directory == here and start is None else candidate
        marker = next((m for m in ROOT_MARKERS if (directory / m).exists()), None)
        if marker is not None:
            stop = f"; stopped at {shown(directory)}, a repository root ({marker})"
            break
    where = ", ".join(shown(d / DEFAULT_PATH) for d in looked)
    raise ConfigError(
        [
            Problem(
                "config file",
                "",
                f"no {DEFAULT_PATH} found; looked for {where}{stop}. Pass path=, "
                "--config or set DBCONF_CONFIG, or create the file",
            )
        ]
    )


def choose_profile(
    profile: str | None,
    env: Mapping[str, str],
    default: Any,
    default_origin: Origin | None,
    profiles: Mapping[str, Any],
) -> tuple[str, str]:
    """The profile name and what chose it (an origin text for errors and ``dbconf show``).

    ``default`` is the file's ``default_profile`` (interpolated) or None. An unknown name is a
    :class:`ConfigError` with a suggestion, naming what chose it.
    """
    from_env = env.get("DBCONF_PROFILE") or None
    if profile is not None:
        name, why = profile, "the profile asked for (profile= or --profile)"
        if from_env is not None and from_env != profile:
            log.warning(
                "profile %r named in code (profile= or --profile) wins over DBCONF_PROFILE=%r; "
                "to let the environment choose, name no profile in code",
                profile,
                from_env,
            )
    elif from_env is not None:
        name, why = from_env, "env DBCONF_PROFILE"
    elif default is not None:
        if not isinstance(default, str) or not default:
            where = str(default_origin)
            raise ConfigError(
                [Problem(where, "default_profile", "must be a profile name (a string)")]
            )
        name, why = default, f"default_profile at {default_origin}"
    else:
        name, why = (
            DEFAULT_PROFILE,
            "default profile (no profile=, DBCONF_PROFILE or default_profile)",
        )
    if name not in profiles:
        raise ConfigError(
            [
                Problem(
                    why,
                    "",
                    f"no profile {name!r}{did_you_mean(name, profiles)}"
                    f"; the file declares: {', '.join(profiles)}",
                )
            ]
        )
    return name, why


_NOT_CALLERS = ("dbconf", "pydantic", "pydantic_settings")  # packages a load passes through


def caller() -> Origin:
    """``overrides=``'s origin: the file:line of the first frame outside dbconf (and outside
    pydantic-settings, for :class:`~dbconf.integrations.pydantic_settings.DbconfSettingsSource`:
    there it is the line that built the settings)."""
    frame = sys._getframe(1)
    while frame is not None:
        package = str(frame.f_globals.get("__name__", "")).partition(".")[0]
        if package not in _NOT_CALLERS:
            return Origin("code", f"{frame.f_code.co_filename}:{frame.f_lineno}")
        frame = frame.f_back  # type: ignore[assignment]
    return Origin("code")


def report_replaced(
    below: Mapping[KeyPath, Origin], layer: Mapping[KeyPath, Origin], profile: str
) -> None:
    """Log at DEBUG each ``overrides=`` key that replaces a value the environment set."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    for path, origin in layer.items():
        old = below.get(path)
        if old is not None and old.kind in ("env", "secret", "dotenv", "settings"):
            log.debug(
                "profile %s: %s from %s replaces the value from %s",
                profile,
                ".".join(path),
                origin,
                old,
            )


def attributed(origins: Origins, sources: Mapping[str, Origin]) -> Origins:
    """A copy of ``origins`` with the variables of .env files and settings told as such."""
    copied = dict(origins)
    attribute(copied, [], sources)
    return copied


def env_files(
    given: EnvFiles,
    env: Mapping[str, str],
    settings: Any,
    in_file: Any,
    file: Path,
    origins: Origins,
) -> list[EnvFile]:
    """The .env files to read: ``env_file=``, else ``$DBCONF_ENV_FILE``, else the settings'
    ``env_file`` (those that exist), else the file's ``env_file:`` (relative to the file;
    skipped when missing, as pydantic-settings skips a missing one)."""
    if given is not None:
        named = [given] if isinstance(given, str | os.PathLike) else list(given)
        return [EnvFile(Path(p), "env_file=", optional=False) for p in named]
    if env.get(ENV_FILE_VAR):
        return [EnvFile(Path(env[ENV_FILE_VAR]), f"env {ENV_FILE_VAR}", optional=False)]
    if settings is not None and (found := settings_env_files(settings)):
        return [EnvFile(p, "the settings' env_file", optional=True) for p in found]
    if in_file is None:
        return []
    where = str(origins.get(("env_file",), file))
    if not isinstance(in_file, str) or not in_file or "${" in in_file:
        message = "must be a path (relative to this file), without ${…}"
        raise ConfigError([Problem(where, "env_file", message)])
    path = Path(in_file)
    path = Path(os.path.normpath(path if path.is_absolute() else file.parent / path))
    return [EnvFile(path, where, optional=True)]


def default_profile(
    top: Mapping[str, Any], origins: Origins, env: Mapping[str, str], sources: Mapping[str, Origin]
) -> tuple[Any, Origin | None]:
    """The file's ``default_profile``, ``${VAR}`` expanded, and its origin."""
    raw = top.get("default_profile")
    origin = origins.get(("default_profile",))
    if not isinstance(raw, str) or "$" not in raw or origin is None:
        return raw, origin
    errors: list[str] = []
    used: list[str] = []
    value = interpolate(raw, env, errors, used)
    if errors:
        raise ConfigError([Problem(str(origin), "default_profile", e) for e in errors])
    origin = Origin("file", origin.source, origin.line, origin.column, via=", ".join(used))
    return value, attributed({("default_profile",): origin}, sources)[("default_profile",)]
