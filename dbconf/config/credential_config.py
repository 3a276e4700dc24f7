"""Where a database's password comes from: the rules on its credential keys (no I/O).

A password is given by exactly one of

- ``password`` (or a password inside ``url``): fixed at load;
- ``password_file``: a file read again for each new physical connection (a Kubernetes secret
  that rotates is picked up without a restart);
- ``password_command: [argv…]``: a command run for each new connection (no shell);
- ``credentials: "module:callable"``: a function returning a password or token per new
  connection, sync or async.

``credentials_ttl`` caches what the command or the callable returned (default 0: no cache).
What happens at connect time is in :mod:`dbconf.runtime.credentials`; the callable is imported and
checked at load by :func:`dbconf.runtime.credentials.callable_problem`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL

if TYPE_CHECKING:
    from dbconf.config.models import DatabaseConfig

__all__ = ["CALLABLE_PATH", "CREDENTIAL_KEYS", "DYNAMIC_KEYS", "credential_issues"]

# The keys that give a password; a layer that sets one drops the others of the layers below.
CREDENTIAL_KEYS = ("password", "password_file", "password_command", "credentials")
# The keys whose password is fetched for each new connection.
DYNAMIC_KEYS = ("password_file", "password_command", "credentials")
CALLABLE_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def credential_issues(cfg: DatabaseConfig, url: URL) -> list[tuple[str, str]]:
    """``(key, message)`` for each broken rule: a per-connection password source with
    another source (``password`` over a password in ``url`` is allowed: it wins), a malformed
    ``credentials`` path or ``password_command``, a ``credentials_ttl`` with nothing to cache.
    ``url`` is the database's URL with the parts written beside it."""
    issues: list[tuple[str, str]] = []
    dynamic = [key for key in DYNAMIC_KEYS if getattr(cfg, key) is not None]
    if cfg.password is not None:
        fixed = ["password"]
    else:  # the url's own password, or its ?password=
        fixed = ["a password in url"] if url.password is not None else []
    if dynamic and len(dynamic) + len(fixed) > 1:
        names = fixed + dynamic
        issues.append(
            (
                dynamic[-1],
                f"{' and '.join(names)} are {'both' if len(names) == 2 else 'all'} set; "
                "password_file, "
                "password_command and credentials exclude each other and a fixed password "
                "(password, or one in url): keep one",
            )
        )
    if cfg.credentials is not None and not CALLABLE_PATH.match(cfg.credentials):
        issues.append(
            (
                "credentials",
                "is not an import path: write module.sub:function (e.g. myapp.db:rds_token)",
            )
        )
    if cfg.password_command is not None and not cfg.password_command[0].strip():
        issues.append(("password_command", "the first item must name the program to run (argv[0])"))
    if cfg.credentials_ttl is not None and cfg.password_command is None and not cfg.credentials:
        issues.append(
            (
                "credentials_ttl",
                "caches what password_command or credentials returns: set one of them, or "
                "remove credentials_ttl (password_file is read for each new connection)",
            )
        )
    return issues
