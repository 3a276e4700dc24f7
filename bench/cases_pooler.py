"""Case 15: a session scope through PgBouncer (transaction mode), dbconf with
``pooler: pgbouncer_transaction`` vs the best hand-written configuration that behaves the same:
the same pool, ``application_name`` as a startup parameter, and the timeouts set per
transaction by the cheapest hook (the dialect's ``do_begin`` running ``set_config(…, true)``
on the driver's cursor). Information: the hand-written ``begin`` event recipe
(``conn.exec_driver_sql("SET LOCAL …")``), which goes through SQLAlchemy's execution path."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa

from bench.cases_single import dbconf_op, hand_op
from bench.envs import hand_engine, hand_maker, pool_signature, registry
from bench.stats import CaseResult, Scale, Target, interleave

PGBOUNCER_URL = os.environ.get(
    "BENCH_PGBOUNCER_URL", "postgresql+psycopg2://postgres@127.0.0.1:6432/test"
)
POOL = {"size": 5, "max_overflow": 10}
TIMEOUTS = {"statement": "30s", "lock": "10s"}
# what dbconf sends at each transaction's start for TIMEOUTS (dbconf/dialects/pgbouncer.py)
SET_LOCAL = (
    "SELECT set_config('statement_timeout', '30000', true), set_config('lock_timeout', '10000', "
    "true)"
)
TARGET = "15 PgBouncer scope time ratio dbconf/hand"


def _reachable() -> str | None:
    engine = sa.create_engine(PGBOUNCER_URL, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
    except Exception as exc:
        return f"PgBouncer unreachable at {PGBOUNCER_URL} ({type(exc).__name__}): run .ci/pgbouncer"
    finally:
        engine.dispose()
    return None


def _hand(hook: str) -> sa.Engine:
    engine = hand_engine(
        PGBOUNCER_URL,
        pool_size=5,
        max_overflow=10,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={"application_name": "bench"},
    )
    if hook == "do_begin":

        def do_begin(dbapi_connection: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(SET_LOCAL)
            cursor.close()

        engine.dialect.do_begin = do_begin  # type: ignore[method-assign]
    else:

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql(SET_LOCAL)

    return engine


def case15(scale: Scale) -> CaseResult:
    result = CaseResult(15, "session scope through PgBouncer: dbconf pooler: vs hand-written")
    why = _reachable()
    if why:
        result.skipped = why
        result.targets.append(Target(TARGET, None, "<=", 1.03, note=why))
        return result
    dbs = registry(
        {
            "pgb": {
                "url": PGBOUNCER_URL,
                "pooler": "pgbouncer_transaction",
                "pool": POOL,
                "timeouts": TIMEOUTS,
                "application_name": "bench",
            }
        }
    )
    best, recipe = _hand("do_begin"), _hand("event")
    try:
        db = dbs["pgb"]
        a, b = pool_signature(db.engine), pool_signature(best)
        result.metrics["pool"] = a
        if a != b:
            result.notes.append(f"pools differ: dbconf {a} vs hand {b}")
        run = interleave(
            {
                "pgbouncer dbconf": dbconf_op(db),
                "pgbouncer hand, do_begin": hand_op(hand_maker(best)),
                "pgbouncer hand, begin event": hand_op(hand_maker(recipe)),
            },
            scale.n(250),
            scale,
        )
    finally:
        dbs.dispose()
        best.dispose()
        recipe.dispose()
    result.variants.update(run.stats)
    ratio = run.time_ratio("pgbouncer dbconf", "pgbouncer hand, do_begin")
    event_ratio = run.time_ratio("pgbouncer dbconf", "pgbouncer hand, begin event")
    result.metrics["time_ratio"] = round(ratio, 4)
    result.metrics["time_ratio_vs_begin_event"] = round(event_ratio, 4)
    result.targets.append(Target(TARGET, ratio, "<=", 1.03))
    result.notes.append(
        "Each scope: pre-ping, BEGIN-time set_config of both timeouts, select 1, COMMIT, "
        f"through PgBouncer. Information: dbconf/hand with a begin event = {event_ratio:.3f}."
    )
    return result
