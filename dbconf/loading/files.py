"""Read a configuration or secret file safely: a regular file only, never blocking, size-capped.

A path may name anything: a FIFO (reading it would block until a writer comes), ``/dev/zero``
(reading it would never end), a directory or a huge file. :func:`read_text` opens without
blocking, checks with ``fstat`` that the open file is a regular file and reads at most the cap
plus one byte. Every failure is an :class:`UnreadableFileError` whose text says why, never quoting
the file's content (it may be a secret).

The caps default to 1 MiB for the configuration file and 64 KiB for a secret, and are set by the
reserved env vars ``DBCONF_MAX_CONFIG_BYTES`` and ``DBCONF_MAX_SECRET_BYTES``.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dbconf.errors import ConfigError, Problem

__all__ = [
    "CONFIG_LIMIT_VAR",
    "DEFAULT_LIMITS",
    "LIMIT_VARS",
    "SECRET_LIMIT_VAR",
    "SizeLimits",
    "UnreadableFileError",
    "read_text",
    "shown",
    "size_limits",
]

CONFIG_LIMIT_VAR = "DBCONF_MAX_CONFIG_BYTES"
SECRET_LIMIT_VAR = "DBCONF_MAX_SECRET_BYTES"  # noqa: S105 (a variable name)
DEFAULT_LIMITS = {CONFIG_LIMIT_VAR: 1 << 20, SECRET_LIMIT_VAR: 64 << 10}
LIMIT_VARS = tuple(DEFAULT_LIMITS)
_LIMIT_SYNTAX = re.compile(r"[0-9]{1,12}")
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO opens at once instead of waiting for a writer
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class UnreadableFileError(Exception):
    """A file that cannot or may not be read; ``str()`` says why (never its content)."""


@dataclass(frozen=True)
class SizeLimits:
    """The byte caps: ``config`` for the configuration file, ``secret`` for a secret file."""

    config: int
    secret: int


def size_limits(environ: Mapping[str, str]) -> SizeLimits:
    """The caps set by ``DBCONF_MAX_CONFIG_BYTES`` / ``DBCONF_MAX_SECRET_BYTES`` or the defaults.

    A value that is not a whole number of bytes from 1 to 999999999999 is a :class:`ConfigError`.
    """
    limits: dict[str, int] = {}
    problems = []
    for var, default in DEFAULT_LIMITS.items():
        raw = environ.get(var) or str(default)
        if _LIMIT_SYNTAX.fullmatch(raw) and int(raw) > 0:
            limits[var] = int(raw)
        else:
            problems.append(
                Problem(
                    f"env {var}",
                    "",
                    f"must be a whole number of bytes from 1 to 999999999999 (got "
                    f"{raw[:40]!r}); unset it for the default, {default}",
                )
            )
    if problems:
        raise ConfigError(problems)
    return SizeLimits(limits[CONFIG_LIMIT_VAR], limits[SECRET_LIMIT_VAR])


def read_text(path: Path, limit: int, limit_var: str) -> tuple[str, int]:
    """The UTF-8 text of the regular file ``path`` and its ``st_mode``; at most ``limit`` bytes.

    Raises :class:`UnreadableFileError`.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        raise UnreadableFileError(e.strerror or type(e).__name__) from None
    except ValueError:  # an embedded NUL byte, or a lone surrogate that cannot be encoded
        raise UnreadableFileError(
            "the path contains a NUL byte or a character that cannot be in a file name"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((f"{name}, not" for test, name in _KINDS if test(info.st_mode)), "not")
            raise UnreadableFileError(f"it is {kind} a regular file")
        data = _read_at_most(fd, limit + 1)
    except OSError as e:
        raise UnreadableFileError(e.strerror or type(e).__name__) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UnreadableFileError(
            f"it is larger than {limit} bytes; set {limit_var} to allow a bigger file"
        )
    try:
        return data.decode("utf-8"), info.st_mode
    except UnicodeDecodeError:
        pass  # raised below: the decode error holds the content, it must not be the context
    raise UnreadableFileError("it is not UTF-8 text")


def _read_at_most(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def shown(path: Path | str) -> str:
    """A path fit for a message: as written, or escaped when it holds unprintable characters."""
    text = str(path)
    return text if text.isprintable() else ascii(text)
