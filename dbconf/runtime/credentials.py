"""Passwords fetched for each new physical connection: ``password_file``, ``password_command``
and ``credentials`` (the rules on the keys are in :mod:`dbconf.config.credential_config`).

:func:`install_credentials` puts a ``do_connect`` listener first on an engine (an async
engine's ``sync_engine``). For each new DBAPI connection it fetches the password, passes it to
the driver under the driver's own keyword (found by asking the dialect, e.g. ``password``) in a
copy of the connect arguments, and connects. Connections already open are not touched: they
keep working after a rotation, until the pool recycles or discards them.

- ``password_file`` is read again each time (no cache).
- ``password_command`` runs the argv (no shell, stdin closed) with a timeout of
  :data:`COMMAND_TIMEOUT` seconds; its stdout, trailing newline stripped, is the password. On
  an async engine it runs as an asyncio subprocess (the loop is not blocked). A failure says
  the exit status and the last line of stderr (with any line of stdout removed from it).
- ``credentials`` is called with a :class:`CredentialTarget`; it returns a ``str`` (or a
  ``SecretStr``). An ``async def`` callable (or one returning an awaitable) is awaited on async
  engines and refused on sync ones; a sync callable serves both (on an async engine it runs
  on the loop: keep it quick).

The command's output and the callable's result are cached for ``credentials_ttl`` seconds
(default 0: fetched for every new connection). When the server refuses the credentials
(PostgreSQL 28P01/28000, MySQL 1045: :func:`dbconf.sessions.driver_errors.is_auth_failure`), the
cache is dropped and the connect is retried once with fresh credentials. A failure to fetch is a
:class:`~dbconf.errors.CredentialsError`; no message, log or repr holds the secret.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy import event

from dbconf.config import DatabaseConfig
from dbconf.errors import ConfigError, CredentialsError, Problem
from dbconf.loading.files import (
    SECRET_LIMIT_VAR,
    UnreadableFileError,
    read_text,
    shown,
    size_limits,
)
from dbconf.sessions.driver_errors import is_auth_failure
from dbconf.sessions.resilience import connect_dbapi_errors
from dbconf.sessions.session_classes import find_object

__all__ = ["COMMAND_TIMEOUT", "CredentialTarget", "callable_problem", "install_credentials"]

log = logging.getLogger("dbconf.credentials")

COMMAND_TIMEOUT = 30.0  # seconds a password_command may run
_STDERR_SHOWN = 200  # characters of the command's last stderr line shown in an error


@dataclass(frozen=True)
class CredentialTarget:
    """What a ``credentials`` callable is given: where the new connection goes."""

    name: str  # the dbconf database name (primary, analytics, …)
    backend: str  # postgresql, mysql, mariadb
    driver: str  # psycopg2, asyncpg, pymysql, …
    host: str | None
    port: int | None
    username: str | None
    database: str | None  # the server's database name
    is_async: bool


def callable_problem(path: str) -> str | None:
    """Why the ``credentials`` callable at ``path`` cannot be used, or None (imports it)."""
    try:
        _import_callable(path)
    except ValueError as e:
        return str(e)
    return None


def _import_callable(path: str) -> Any:
    fn = find_object(path, "credentials callable")
    if not callable(fn):
        raise ValueError(f"credentials {path!r} is not callable (it is a {type(fn).__name__})")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return fn
    try:
        signature.bind(None)
    except TypeError:
        raise ValueError(
            f"credentials {path!r} must take one argument (a dbconf.CredentialTarget: host, "
            "port, username, database, …), e.g. def token(target): ..."
        ) from None
    return fn


class _Source:
    """Fetches the secret of one engine; caches it for ``ttl`` seconds."""

    what = ""

    def __init__(self, database: str, ttl: float) -> None:
        self.database = database
        self._ttl = ttl
        self._cached: tuple[str, float] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.what} of database {self.database!r}>"

    def get(self, in_async: bool) -> str:
        cached = self._cached
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        if in_async:
            from sqlalchemy.util import await_only

            secret: str = await_only(self._fetch_async())
        else:
            secret = self._fetch()
        if self._ttl > 0:
            self._cached = (secret, time.monotonic() + self._ttl)
        return secret

    def invalidate(self) -> None:
        self._cached = None

    def _fetch(self) -> str:
        raise NotImplementedError

    async def _fetch_async(self) -> str:
        return self._fetch()

    def error(self, message: str) -> CredentialsError:
        return CredentialsError(self.database, message)


class _FileSource(_Source):
    def __init__(self, database: str, path: Path, limit: int) -> None:
        super().__init__(database, 0.0)
        self._path, self._limit = path, limit
        self.what = f"password_file {shown(path)}"

    def _fetch(self) -> str:
        try:
            text, _ = read_text(self._path, self._limit, SECRET_LIMIT_VAR)
        except UnreadableFileError as e:
            raise self.error(f"cannot read password file {shown(self._path)} ({e})") from None
        secret = text.rstrip("\r\n")
        if not secret:
            raise self.error(f"password file {shown(self._path)} is empty")
        return secret


class _CommandSource(_Source):
    def __init__(self, database: str, argv: list[str], ttl: float) -> None:
        super().__init__(database, ttl)
        self._argv = list(argv)
        self._last = ""  # the last password printed: never repeated from stderr
        self.what = f"password_command {argv[0]!r}"

    def _fetch(self) -> str:
        try:
            done = subprocess.run(  # noqa: S603 (the user's own argv, no shell)
                self._argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            done = None  # raised below: the TimeoutExpired holds what was printed so far
        except OSError as e:
            raise self._could_not_run(e) from None
        if done is None:
            raise self._timed_out()
        return self._output(done.returncode, done.stdout, done.stderr)

    async def _fetch_async(self) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as e:
            raise self._could_not_run(e) from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
        except asyncio.TimeoutError:
            raise self._timed_out() from None
        finally:
            if proc.returncode is None:  # timed out or cancelled: do not leave it running
                proc.kill()
                await asyncio.shield(proc.wait())
        assert proc.returncode is not None
        return self._output(proc.returncode, out, err)

    def _timed_out(self) -> CredentialsError:
        return self.error(f"{self.what} did not finish within {COMMAND_TIMEOUT:g} s and was killed")

    def _could_not_run(self, e: OSError) -> CredentialsError:
        return self.error(
            f"{self.what} could not be run ({e.strerror or type(e).__name__}); give an "
            "absolute path or a program on PATH"
        )

    def _output(self, code: int, out: bytes, err: bytes) -> str:
        text = out.decode("utf-8", "replace")
        if code != 0:
            status = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise self.error(f"{self.what} {status}{_stderr_line(err, text, self._last)}")
        secret = text.rstrip("\r\n")
        if not secret:
            raise self.error(f"{self.what} printed nothing on stdout (the password goes there)")
        self._last = secret
        return secret


def _stderr_line(err: bytes, out: str, last_password: str) -> str:
    """`` (stderr: <last line>)``, without anything the command printed on stdout nor the
    last password it gave."""
    lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    printed = {x.strip() for x in [*out.splitlines(), last_password] if x.strip()}
    for text in sorted(printed, key=len, reverse=True):
        last = last.replace(text, "***")
    if len(last) > _STDERR_SHOWN:
        last = last[:_STDERR_SHOWN] + "…"
    return f" (stderr: {last})"


class _CallableSource(_Source):
    def __init__(self, database: str, path: str, ttl: float, target: CredentialTarget) -> None:
        super().__init__(database, ttl)
        self._path, self._target = path, target
        try:
            self._fn = _import_callable(path)
        except ValueError as e:
            raise ConfigError([Problem("", "credentials", str(e))]) from None
        self.what = f"credentials {path!r}"

    def _call(self) -> Any:
        try:
            return self._fn(self._target)
        except Exception as e:
            raise self.error(f"{self.what} raised {type(e).__name__}") from e

    def _fetch(self) -> str:
        result = self._call()
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise self.error(
                f"{self.what} returned an awaitable on a sync engine: give a sync callable "
                "(it serves sync and async engines) or use the async engine"
            )
        return self._checked(result)

    async def _fetch_async(self) -> str:
        result = self._call()
        if inspect.isawaitable(result):
            try:
                result = await result
            except Exception as e:
                raise self.error(f"{self.what} raised {type(e).__name__}") from e
        return self._checked(result)

    def _checked(self, result: Any) -> str:
        if isinstance(result, SecretStr):
            result = result.get_secret_value()
        if not isinstance(result, str) or not result:
            got = "an empty string" if result == "" else f"a {type(result).__name__}"
            raise self.error(f"{self.what} returned {got}; it must return the password or token")
        return result


def _source(name: str, cfg: DatabaseConfig, engine: sa.Engine) -> _Source | None:
    ttl = cfg.credentials_ttl or 0.0
    if cfg.password_file is not None:
        return _FileSource(name, Path(cfg.password_file), size_limits(os.environ).secret)
    if cfg.password_command is not None:
        return _CommandSource(name, cfg.password_command, ttl)
    if cfg.credentials is not None:
        url = engine.url
        target = CredentialTarget(
            name=name,
            backend=url.get_backend_name(),
            driver=engine.dialect.driver,
            host=url.host,
            port=url.port,
            username=url.username,
            database=url.database,
            is_async=engine.dialect.is_async,
        )
        source = _CallableSource(name, cfg.credentials, ttl, target)
        if not engine.dialect.is_async and inspect.iscoroutinefunction(source._fn):
            raise ConfigError(
                [
                    Problem(
                        "",
                        "credentials",
                        f"credentials {cfg.credentials!r} is async: a sync engine cannot await "
                        "it; give a sync callable (it serves both) or use the async engine",
                    )
                ]
            )
        return source
    return None


_MIN_QUOTED = 4  # a shorter password is not looked for in driver messages
_MARKER = "dbconf-password-marker"


def _password_key(engine: sa.Engine) -> str:
    """The keyword under which the driver takes the password (``password``, ``passwd``…)."""
    _, cparams = engine.dialect.create_connect_args(engine.url.set(password=_MARKER))
    key = next((k for k, v in cparams.items() if v == _MARKER), None)
    if key is None:
        raise ConfigError(
            [
                Problem(
                    "",
                    "password_file",
                    f"the {engine.dialect.name}+{engine.dialect.driver} driver takes no "
                    "password: remove password_file, password_command and credentials",
                )
            ]
        )
    return key


def install_credentials(engine: sa.Engine, name: str, cfg: DatabaseConfig) -> None:
    """Fetch the password of each new connection of ``engine`` (an async engine's
    ``sync_engine``) from ``cfg``'s ``password_file``, ``password_command`` or ``credentials``;
    nothing when the password is fixed. Raises :class:`ConfigError` for a callable that
    cannot be used or a driver that takes no password."""
    source = _source(name, cfg, engine)
    if source is None:
        return
    key = _password_key(engine)
    in_async = engine.dialect.is_async

    def _connect(dialect: sa.Dialect, rec: Any, cargs: Any, cparams: Any) -> Any:
        for attempt in (1, 2):
            secret = source.get(in_async)
            params = {**cparams, key: secret}
            try:
                if in_async:  # asyncpg's own errors become the driver's (resilience)
                    return connect_dbapi_errors(dialect, rec, cargs, params)
                return dialect.connect(*cargs, **params)
            except Exception as e:
                quoted = len(secret) >= _MIN_QUOTED and secret in str(e)
                if not quoted and (attempt == 2 or not is_auth_failure(e)):
                    raise
            del params
            if quoted:  # raised here, out of the except block: no context holding the text
                raise source.error(
                    "connecting failed and the driver's message quotes the password, so it "
                    "is not shown; check the password's characters and the driver's options"
                )
            source.invalidate()
            log.warning(
                "database %r: the server refused the credentials; fetching them again from %s "
                "and retrying once",
                name,
                source.what,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    event.listen(engine, "do_connect", _connect, insert=True)
