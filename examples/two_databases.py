"""Two databases of different dialects in one app: PostgreSQL (primary) and MariaDB (analytics).

Uses the ``test`` profile of config/databases.yaml (the local servers; point it elsewhere with
TEST_POSTGRES_URL / TEST_MARIADB_URL, or with DATABASE_URL and ANALYTICS_DATABASE_URL).
Run from the repository root: ``python examples/two_databases.py``.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa

import dbconf


def main() -> None:
    suffix = uuid.uuid4().hex[:8]
    orders, daily = f"orders_{suffix}", f"daily_totals_{suffix}"
    with dbconf.load("test") as dbs:
        primary, analytics = dbs["primary"], dbs["analytics"]
        try:
            with primary.session() as s:  # PostgreSQL: write the orders
                s.execute(sa.text(f"CREATE TABLE {orders} (id serial PRIMARY KEY, cents int)"))
                s.execute(sa.text(f"INSERT INTO {orders} (cents) VALUES (1250), (899), (4000)"))
            with primary.session("reporting") as s:  # an AUTOCOMMIT flavour for reads
                total = s.execute(sa.text(f"SELECT sum(cents) FROM {orders}")).scalar_one()
            with analytics.session() as s:  # MariaDB: store the aggregate
                s.execute(sa.text(f"CREATE TABLE {daily} (day date PRIMARY KEY, cents int)"))
                s.execute(
                    sa.text(f"INSERT INTO {daily} VALUES (CURRENT_DATE, :c)"), {"c": int(total)}
                )
            with analytics.session() as s:
                stored = s.execute(sa.text(f"SELECT cents FROM {daily}")).scalar_one()
            print(f"primary ({primary.engine.dialect.name}) total {total} cents")
            print(f"analytics ({analytics.engine.dialect.name}) stored {stored} cents")
            assert stored == total
        finally:
            with primary.session() as s:
                s.execute(sa.text(f"DROP TABLE IF EXISTS {orders}"))
            with analytics.session() as s:
                s.execute(sa.text(f"DROP TABLE IF EXISTS {daily}"))
        for db in dbs:
            print(f"{db.name}: {db.engine.pool.status()}")


if __name__ == "__main__":
    main()
