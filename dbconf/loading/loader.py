"""YAML profiles + environment → one validated :class:`ProfileConfig`, every value with its origin.

Layers, lowest precedence first (each deep-merges over the one before):

1. built-in defaults (the model defaults, origin ``default``);
2. the profiles named by ``extends``, base first, then the profile itself (``${VAR}`` expanded);
3. ``DATABASE_URL`` (the default database), ``<NAME>_DATABASE_URL`` and
   ``<NAME>_REPLICA_<N>_DATABASE_URL`` (replica N of database NAME);
4. ``DBCONF_<PATH>`` env vars, path joined by ``__`` (``DBCONF_DATABASES__PRIMARY__POOL__SIZE``);
5. files in ``DBCONF_SECRETS_DIR`` named like those env vars;
6. ``overrides=`` given in code (its origin: the caller's file:line; a key it takes over from
   the environment is logged at DEBUG with both origins).

The environment is ``environ`` (default ``os.environ``) over the .env files
(:mod:`dbconf.loading.envfile`) and under the fields of ``settings=``
(:mod:`dbconf.loading.settings_vars`). Which file and which profile:
:mod:`dbconf.loading.selection`.

A layer that sets a database's ``url`` drops the URL parts (host, port, …) of the layers below;
``password``, ``password_file``, ``password_command`` and ``credentials`` likewise replace each
other; ``null`` resets a key. A ``password_file`` is checked here, read for each new connection.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dbconf.config import DatabaseConfig, ProfileConfig
from dbconf.config.origin import KeyPath, Origin, dotted, scrub_secrets, validation_problems
from dbconf.errors import ConfigError, Problem, did_you_mean
from dbconf.loading.envfile import attribute, layered, told
from dbconf.loading.files import UnreadableFileError, shown, size_limits
from dbconf.loading.interpolation import interpolate_tree
from dbconf.loading.layers import (
    Origins,
    Tree,
    code_layer,
    env_items,
    env_layer,
    merge,
    url_layer,
)
from dbconf.loading.merging import as_mapping
from dbconf.loading.replica_env import replica_url_layer
from dbconf.loading.secrets_dir import read_secret, secrets_layer
from dbconf.loading.selection import (
    DEFAULT_PATH,
    EnvFiles,
    attributed,
    caller,
    choose_profile,
    default_profile,
    env_files,
    find_config,
    report_replaced,
)
from dbconf.loading.settings_vars import settings_variables
from dbconf.loading.yamlfile import read_yaml
from dbconf.runtime.rules import build_problems

__all__ = ["DEFAULT_PATH", "LoadedProfile", "list_profiles", "load_profile", "resolve_path"]

log = logging.getLogger("dbconf.loader")

TOP_LEVEL_KEYS = ("profiles", "env_file", "default_profile")


@dataclass(frozen=True)
class LoadedProfile:
    """A validated profile and the origin of each value in it."""

    name: str
    path: Path | None
    config: ProfileConfig
    origins: Mapping[KeyPath, Origin]
    chosen_by: str = "the profile asked for (profile= or --profile)"  # see dbconf.loading.selection

    def origin(self, *path: str) -> Origin:
        """Where the value at ``path`` (under the profile) came from; ``default`` if unset."""
        return self.origins.get(path) or Origin("default")


def resolve_path(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """``path`` if given, else ``$DBCONF_CONFIG``, else the nearest ``config/databases.yaml``
    from the working directory upward (:func:`dbconf.loading.selection.find_config`)."""
    if path is not None:
        return Path(path)
    return Path(environ["DBCONF_CONFIG"]) if environ.get("DBCONF_CONFIG") else find_config()


def read_profiles(
    path: Path, environ: Mapping[str, str], top: dict[str, Any] | None = None
) -> tuple[dict[str, Tree], Origins, list[Problem]]:
    """The raw ``profiles:`` mapping of a file, with origins keyed from ``("profiles", …)``;
    the other top-level keys dbconf reads (``env_file``, ``default_profile``) go to ``top``."""
    data, origins = read_yaml(path, size_limits(environ).config)
    where = str(path)
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise ConfigError(
            [
                Problem(
                    where,
                    "",
                    "the file must be a mapping with a 'profiles:' "
                    "mapping of profile names (see README: the file format)",
                )
            ]
        )
    problems = [
        Problem(
            str(origins[(key,)]),
            key,
            f"unknown top-level key{did_you_mean(key, TOP_LEVEL_KEYS)}; only "
            f"{', '.join(TOP_LEVEL_KEYS)} are read "
            "(keys starting with 'x-' or '.' are allowed for YAML anchors)",
        )
        for key in data
        if key not in TOP_LEVEL_KEYS and not key.startswith(("x-", "."))
    ]
    if top is not None:
        top.update({key: data[key] for key in TOP_LEVEL_KEYS[1:] if key in data})
    shape = [
        Problem(str(origins[("profiles", name)]), f"profiles.{name}", "a profile must be a mapping")
        for name, body in data["profiles"].items()
        if not isinstance(body, dict)
    ]
    if shape:  # nothing can be merged from a profile that is not a mapping
        raise ConfigError(shape + problems)
    for name, body in data["profiles"].items():
        for db_name, db in as_mapping(body.get("databases")).items():
            pool = as_mapping(db).get("pool")
            if isinstance(pool, dict) and "class" in pool and pool["class"] is None:
                key_path = ("profiles", name, "databases", db_name, "pool", "class")
                problems.append(
                    Problem(
                        str(origins[key_path]),
                        ".".join(key_path),
                        "a bare null is "
                        'YAML\'s empty value: write class: "null" (quoted) for '
                        "SQLAlchemy's NullPool, or remove the key",
                    )
                )
    return data["profiles"], origins, problems


def list_profiles(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """Profile names in file order, each with the profile it extends (or None)."""
    env = os.environ if environ is None else environ
    profiles, _, problems = read_profiles(resolve_path(path, env), env)
    if problems:
        raise ConfigError(problems)
    return {name: body.get("extends") for name, body in profiles.items()}


def load_profile(
    profile: str | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_file: EnvFiles = None,
    settings: Any = None,
) -> LoadedProfile:
    """Read, merge, interpolate and validate one profile. Raises :class:`ConfigError`.

    ``env_file``: .env file(s) read under ``environ`` (default: ``$DBCONF_ENV_FILE``, else the
    ``env_file`` of ``settings``, else the file's top-level ``env_file:``). ``settings``: a
    pydantic settings object whose fields ``${VAR}`` can read (:mod:`dbconf.loading.settings_vars`).
    """
    real = os.environ if environ is None else environ
    file = resolve_path(path, real)
    # Problems in the file outside the profile are reported with the profile's own problems.
    top: dict[str, Any] = {}
    profiles, file_origins, file_problems = read_profiles(file, real, top)
    problems: list[Problem] = []  # about the profile; prefixed with its key path below
    extra = settings_variables(settings) if settings is not None else None
    files = env_files(env_file, real, settings, top.get("env_file"), file, file_origins)
    env, sources = layered(real, files, size_limits(real).config, file_problems, extra)
    items = env_items(env, problems)  # a misspelt DBCONF_PROFILE is reported here
    try:
        default, default_origin = default_profile(top, file_origins, env, sources)
        name, name_origin = choose_profile(profile, env, default, default_origin, profiles)
        chain = _extends_chain(name, name_origin, profiles, file_origins)
    except ConfigError as e:
        problems = file_problems + problems + list(e.problems)
        raise ConfigError(attribute({}, problems, sources)) from None

    tree: Tree = {}
    origins: Origins = {}
    by_profile: dict[str, Origins] = {link: {} for link in chain}
    for key, origin in file_origins.items():
        if len(key) > 2 and key[1] in by_profile:
            by_profile[key[1]][key[2:]] = origin
    for link in chain:
        merge(tree, origins, copy.deepcopy(profiles[link]), by_profile[link])
    tree.pop("extends", None)
    origins.pop(("extends",), None)

    # Env vars and secrets may only name databases that exist: declared in the file, added
    # by DATABASE_URL to a profile without databases, or (for secrets) added by an env var.
    known = copy.deepcopy(tree)
    if not as_mapping(known.get("databases")) and (
        env.get("DATABASE_URL") or env.get("PRIMARY_DATABASE_URL")
    ):
        known["databases"] = {"primary": {}}
    from_env = env_layer(items, known, problems)
    merge(known, {}, copy.deepcopy(from_env[0]), {})
    before = len(problems)
    code, code_origins = code_layer({} if overrides is None else overrides, problems)
    here = caller()  # the overrides= origin: the app's file:line that loaded the profile
    code_origins = {path: here for path in code_origins}
    problems[before:] = [
        Problem(p.origin.replace("overrides= in code", str(here)), p.path, p.message)
        for p in problems[before:]
    ]
    upper: list[tuple[Tree, Origins]] = [
        from_env,
        secrets_layer(env, known, problems),
        (code, code_origins),
    ]
    from_urls = url_layer(env, tree, upper)
    from_replica_urls = replica_url_layer(env, tree, upper)  # <NAME>_REPLICA_<N>_DATABASE_URL
    for layer, layer_origins in [from_urls, from_replica_urls, *upper]:
        if layer is code:
            report_replaced(attributed(origins, sources), code_origins, name)
        merge(tree, origins, layer, layer_origins, problems=problems)

    interpolate_tree(tree, origins, env, problems, ())
    _read_password_files(tree, origins, file, problems, size_limits(env).secret)
    prefix = ("profiles", name)
    problems = file_problems + [
        Problem(p.origin, ".".join((*prefix, p.path)) if p.path else "", p.message)
        for p in problems
    ]
    problems = attribute(origins, problems, sources)
    profile_origin = str(file_origins.get(prefix, file))  # for errors about the whole profile
    try:
        config = ProfileConfig.model_validate(tree)
    except ValidationError as e:
        # Report every problem at once, but not twice: a value that already failed to
        # interpolate or to read is not reported again by validation.
        seen = [p.path for p in problems]
        problems += [
            p
            for p in validation_problems(e, ProfileConfig, origins, prefix, profile_origin)
            if not any(_related(p.path, path) for path in seen)
        ]
        problems += build_problems(_valid_databases(tree), origins, name)
        # Not chained: every error is in the problems, and pydantic's text quotes key paths.
        raise ConfigError(scrub_secrets(problems, tree)) from None
    problems += build_problems(config.databases, origins, name)
    if problems:
        raise ConfigError(scrub_secrets(problems, tree))
    return LoadedProfile(name, file, config, origins, told(name_origin, sources))


def _valid_databases(tree: Tree) -> dict[str, DatabaseConfig]:
    """The databases that validate on their own, to check them further while others fail."""
    valid = {}
    for name, db in as_mapping(tree.get("databases")).items():
        try:
            valid[name] = DatabaseConfig.model_validate(db)
        except ValidationError:
            continue
    return valid


def _related(a: str, b: str) -> bool:
    """Whether dotted key paths a and b are equal or one contains the other."""
    return a == b or a.startswith((b + ".", b + "[")) or b.startswith((a + ".", a + "["))


def _extends_chain(
    name: str, origin: str, profiles: dict[str, Tree], origins: Origins
) -> list[str]:
    """[root base, …, name]; unknown profiles and cycles are errors."""
    if name not in profiles:
        raise ConfigError(
            [
                Problem(
                    origin,
                    "",
                    f"no profile {name!r}{did_you_mean(name, profiles)}"
                    f"; the file declares: {', '.join(profiles)}",
                )
            ]
        )
    chain = [name]
    while (parent := profiles[chain[-1]].get("extends")) is not None:
        where = str(origins[("profiles", chain[-1], "extends")])
        key = f"profiles.{chain[-1]}.extends"
        if not isinstance(parent, str) or parent not in profiles:
            hint = did_you_mean(str(parent), profiles)
            raise ConfigError([Problem(where, key, f"extends unknown profile {parent!r}{hint}")])
        if parent in chain:
            cycle = " → ".join([*chain, parent])
            raise ConfigError(
                [Problem(where, key, f"profiles extend each other in a cycle: {cycle}")]
            )
        chain.append(parent)
    return list(reversed(chain))


def _read_password_files(
    tree: Tree, origins: Origins, file: Path, problems: list[Problem], limit: int
) -> None:
    """Check that each database's and each replica's ``password_file`` can be read now, and
    make its path absolute (relative to the config file). Its content is not kept: it is read
    again for each new connection (:mod:`dbconf.runtime.credentials`), so a rotated secret is
    picked up without a restart."""
    for name, db in as_mapping(tree.get("databases")).items():
        replicas = as_mapping(db).get("replicas")
        places: list[tuple[KeyPath, Any]] = [(("databases", name), db)]
        if isinstance(replicas, list):
            places += [(("databases", name, "replicas", str(i)), r) for i, r in enumerate(replicas)]
        for path, node in places:
            _check_password_file(path, node, origins, file, problems, limit)


def _check_password_file(
    path: KeyPath, db: Any, origins: Origins, file: Path, problems: list[Problem], limit: int
) -> None:
    if not isinstance(db, dict) or not isinstance(db.get("password_file"), str):
        return  # not a path: validation reports it (never str() it: it may hold a URL)
    secret = Path(db["password_file"])
    if not secret.is_absolute():
        secret = file.parent / secret
    try:
        read_secret(secret, limit)
    except UnreadableFileError as e:
        problems.append(
            Problem(
                str(origins.get((*path, "password_file"))),
                dotted((*path, "password_file")),
                f"cannot read password file {shown(secret)} ({e}); fix the path or mount "
                "the secret",
            )
        )
        return
    db["password_file"] = str(secret.absolute())
