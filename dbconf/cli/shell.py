"""``dbconf shell``: the database's own command-line client, connected as the profile says.

What each client gets and how the password stays off argv: :mod:`dbconf.cli.shell_clients`. The
files holding a password live in a private (0700) temporary directory, are 0600, and are
removed when the client exits, also when dbconf is interrupted or terminated (SIGINT and
SIGQUIT are left to the client, which uses SIGINT to cancel a query; SIGTERM and SIGHUP are
passed on to it).
dbconf's exit code is the client's (128 + the signal's number when a signal ended it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from dbconf.cli.shell_clients import CLIENTS, invocation
from dbconf.config import DatabaseConfig
from dbconf.errors import UnknownDatabaseError
from dbconf.loading.loader import load_profile

__all__ = ["EXIT_NO_CLIENT", "shell"]

EXIT_NO_CLIENT = 127  # as a shell says for a command it cannot find


def shell(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[int, str]:
    """Open the database's command-line client: psql, mariadb (or mysql), sqlite3.

    It connects to the profile's default database, or to ``--database``, with the profile's
    credentials passed through the environment or a temporary 0600 file (never on the
    command line, which every user can read in ps). Arguments after ``--`` go to the client
    (``dbconf shell -- -c 'select 1'``). The exit code is the client's; 127 when the client is
    not installed.
    """
    loaded = load_profile(args.profile, path=args.config, environ=environ)
    databases = loaded.config.databases
    name = args.database or loaded.config.default_name
    if name not in databases:
        raise UnknownDatabaseError(name, list(databases), loaded.name)
    cfg = databases[name]
    client = CLIENTS.get(cfg.backend)
    if client is None:
        known = ", ".join(sorted(CLIENTS))
        return _fail(f"no shell for {cfg.backend} databases ({name!r}); dbconf knows {known}")
    path = environ.get("PATH", os.defpath)
    found = (shutil.which(candidate, path=path) for candidate in client.programs)
    program = next((p for p in found if p), None)
    if program is None:
        return _fail(
            f"{' or '.join(client.programs)} not found on PATH (the {cfg.backend} client of "
            f"database {name!r}); install it (Debian: apt-get install {client.package}) or put "
            "it on PATH",
            EXIT_NO_CLIENT,
        )
    return run_client(program, cfg, list(getattr(args, "client_args", []) or []), environ), ""


def _fail(message: str, code: int = 1) -> tuple[int, str]:
    sys.stderr.write(f"dbconf: {message}\n")
    sys.stderr.flush()
    return code, ""


def run_client(
    program: str, cfg: DatabaseConfig, extra: list[str], environ: Mapping[str, str]
) -> int:
    """Run ``program`` for ``cfg`` in the foreground and return its exit code."""
    with tempfile.TemporaryDirectory(prefix="dbconf-shell-") as tmp:  # 0700
        how = invocation(cfg, Path(tmp))
        for file, text in how.files.items():
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        for note in how.notes:
            sys.stderr.write(f"dbconf: note: {note}\n")
        env = {k: v for k, v in environ.items() if k not in how.unset}
        env.update(how.env)
        sys.stdout.flush()
        sys.stderr.flush()
        return _foreground([program, *how.args, *extra], env)


def _foreground(argv: list[str], env: dict[str, str]) -> int:
    """Run ``argv`` and wait, leaving the terminal's Ctrl-C and Ctrl-\\ to the client (dbconf
    keeps waiting) and passing SIGTERM/SIGHUP on to it."""
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        if child is not None and signum in (signal.SIGTERM, signal.SIGHUP):
            child.send_signal(signum)  # the terminal's SIGINT/SIGQUIT reach the child already

    # Python-level handlers (not SIG_IGN) are reset to the default in the child at exec.
    names = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
    wanted = [getattr(signal, n) for n in names if hasattr(signal, n)]
    previous = {}
    try:
        for signum in wanted:
            previous[signum] = signal.signal(signum, forward)
    except ValueError:  # not the main thread: leave the signals alone
        previous.clear()
    try:
        child = subprocess.Popen(argv, env=env)  # noqa: S603 (the user's own client, no shell)
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - code if code < 0 else code
