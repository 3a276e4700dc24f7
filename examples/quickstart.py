"""The README's main job, on SQLite (no server): run it from the repository root.

Loads the ``development`` profile of ``config/databases.yaml`` by name, with the process
environment (try ``DBCONF_DATABASES__PRIMARY__POOL__SIZE=3 python examples/quickstart.py``),
writes and reads in two databases, shows a rollback and a savepoint, and prints the pool status.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

import dbconf

POOL_SIZE_VAR = "DBCONF_DATABASES__PRIMARY__POOL__SIZE"


def main() -> None:
    Path("var").mkdir(exist_ok=True)  # the development SQLite file lives under var/

    # Any key can be set from the environment (os.environ, read by default); for example
    # the pool size of the primary database, DBCONF_DATABASES__PRIMARY__POOL__SIZE.
    with dbconf.load("development") as dbs:
        primary, cache = dbs["primary"], dbs["cache"]
        print(f"profile development: databases {', '.join(dbs.names)}; default {dbs.default.name}")
        origin = dbs.origins.get(("databases", "primary", "pool", "size"))
        where = origin or f"SQLAlchemy's default; set {POOL_SIZE_VAR} to change it"
        print(f"  primary pool size: {primary.pool_status().size} ({where})")

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
