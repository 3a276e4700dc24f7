"""The README's main job, on SQLite (no server): run it from the repository root.

Loads the ``development`` profile of ``config/databases.yaml`` by name, overrides a value
through an environment variable, writes and reads in two databases, shows a rollback and a
savepoint, and prints the pool status.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

import dbconf


def main() -> None:
    Path("var").mkdir(exist_ok=True)  # the development SQLite file lives under var/
    # Any key can be overridden per environment; here the pool size of the primary database.
    environ = {**os.environ, "DBCONF_DATABASES__PRIMARY__POOL__SIZE": "3"}

    with dbconf.load("development", environ=environ) as dbs:
        primary, cache = dbs["primary"], dbs["cache"]
        print(f"profile development: databases {', '.join(dbs.names)}; default {dbs.default.name}")
        print(f"  primary pool size from env: {primary.config.pool.size}")

        with primary.session() as s:  # commits on success
            s.execute(
                sa.text("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
            )
            s.execute(sa.text("DELETE FROM notes"))
            s.execute(sa.text("INSERT INTO notes (body) VALUES ('written by quickstart')"))
        with cache.session() as s:  # a second database: in-memory SQLite, shared by threads
            s.execute(sa.text("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)"))
            s.execute(sa.text("INSERT INTO kv VALUES ('greeting', 'hello')"))

        with primary.session() as s, cache.session() as c:
            note = s.execute(sa.text("SELECT body FROM notes")).scalar_one()
            greeting = c.execute(sa.text("SELECT v FROM kv WHERE k = 'greeting'")).scalar_one()
            print(f"  read back: primary {note!r}, cache {greeting!r}")

        try:  # an exception inside the scope rolls everything in it back
            with primary.session() as s:
                s.execute(sa.text("INSERT INTO notes (body) VALUES ('never stored')"))
                raise RuntimeError("boom")
        except RuntimeError:
            pass

        with primary.transaction() as s:  # explicit begin(); a savepoint inside it
            s.execute(sa.text("INSERT INTO notes (body) VALUES ('outer work')"))
            savepoint = s.begin_nested()
            s.execute(sa.text("INSERT INTO notes (body) VALUES ('inner work, rolled back')"))
            savepoint.rollback()

        with primary.session() as s:
            bodies = s.execute(sa.text("SELECT body FROM notes ORDER BY id")).scalars().all()
        print(f"  after rollback and savepoint: {bodies}")
        assert bodies == ["written by quickstart", "outer work"], bodies

        status = primary.pool_status()
        print(f"  pool status: size {status.size}, checked out {status.checked_out}", end="")
        print(f", idle {status.idle}")
    print("ok: every engine disposed")


if __name__ == "__main__":
    main()
