"""Case 14: what routing a read to a replica costs per session scope.

``with db.session("reader") as s: s.execute(select 1)`` on a database whose ``replicas:`` list
the standby (flavour ``role: replica``: the RoutingSession, the router's choice among eligible
replicas, the retry-once wrapper of the first statement, the read-your-writes lookup) vs what
a user writes without dbconf: a ``create_engine`` on the standby with the same pool arguments,
a ``connect`` listener making its connections read-only (what dbconf's replica engine does),
``sessionmaker`` + ``with Session.begin()``. Information only: the same scope through dbconf
on a database whose URL *is* the standby (no routing), to separate the routing from the scope;
and an identical twin of the hand-written engine (A/A), whose ratio to it shows the run's noise.

Measured with :func:`~bench.stats.interleave_shuffled` (small blocks in random order, every
variant's connections reopened every 10 rounds, 20,000 scopes each): with the long rotating
blocks of the other cases, two identical engines here differed by up to 4 or 5% in one run,
which is more than the 1.03 target allows; the A/A row keeps that visible.

It needs a streaming standby: ``BENCH_POSTGRES_STANDBY_URL`` (default
``postgresql+psycopg2://postgres@127.0.0.1:5433/test``, what ``.ci/pg-standby`` makes); without
one the case is ``n/a``.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from bench.cases_single import PG_POOL, dbconf_op, hand_op
from bench.envs import PG_URL, hand_engine, hand_maker, pool_signature, registry
from bench.stats import CaseResult, Scale, Target, interleave_shuffled

STANDBY_URL = os.environ.get(
    "BENCH_POSTGRES_STANDBY_URL", "postgresql+psycopg2://postgres@127.0.0.1:5433/test"
)
TARGET = "14 PostgreSQL time ratio routed replica scope/hand replica engine"
AA = "hand replica engine, an identical twin (A/A)"


def _standby_problem() -> str | None:
    engine = sa.create_engine(STANDBY_URL, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not conn.execute(sa.text("select pg_is_in_recovery()")).scalar_one():
                return f"{STANDBY_URL} is not a standby (not in recovery)"
    except Exception as exc:
        return f"no standby at {STANDBY_URL} ({type(exc).__name__}); run .ci/pg-standby"
    finally:
        engine.dispose()
    return None


def _read_only(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def read_only(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cursor.close()
        dbapi_connection.commit()


def case14(scale: Scale) -> CaseResult:
    """Routed replica-role scope vs a hand-written read-only engine on the standby."""
    result = CaseResult(14, "replica read scope: dbconf routing vs hand-written replica engine")
    problem = _standby_problem()
    if problem is not None:
        result.skipped = problem
        result.targets.append(Target(TARGET, None, "<=", 1.03, note=problem))
        return result
    dbs = registry(
        {
            "primary": {
                "url": PG_URL,
                "pool": PG_POOL,
                "replicas": [{"url": STANDBY_URL}],
                "routing": {"max_lag": "60s"},
                "sessions": {"default": {}, "reader": {"role": "replica"}},
            },
            "standby": {"url": STANDBY_URL, "pool": PG_POOL},
        }
    )
    engine, twin = (
        hand_engine(
            STANDBY_URL, pool_size=5, max_overflow=10, pool_pre_ping=True, hide_parameters=True
        )
        for _ in range(2)
    )
    _read_only(engine)
    _read_only(twin)
    try:
        db = dbs["primary"]
        with db.session("reader") as s:  # starts the probe, waits for its first round
            where = s.execute(sa.select(sa.func.inet_server_port())).scalar_one()
        if where != sa.make_url(STANDBY_URL).port:
            result.notes.append(f"the routed read went to port {where}, not the standby")
        router = db.router
        assert router is not None
        a, b = pool_signature(router.replica_engine(0)), pool_signature(engine)
        result.metrics["pool_replica"] = a
        if a != b:
            result.notes.append(f"pools differ: dbconf {a} vs hand {b}")
        run = interleave_shuffled(
            {
                "routed replica scope": dbconf_op(db, "reader"),
                "hand replica engine": hand_op(hand_maker(engine)),
                AA: hand_op(hand_maker(twin)),
                "dbconf on the standby, no routing": dbconf_op(dbs["standby"]),
            },
            scale.rounds * scale.n(500),
            scale,
            refresh_every=10,
            refresh={
                "routed replica scope": router.replica_engine(0).dispose,
                "hand replica engine": engine.dispose,
                AA: twin.dispose,
                "dbconf on the standby, no routing": dbs["standby"].engine.dispose,
            },
        )
        result.metrics["replica_state_after"] = router.status()[0].state
    finally:
        dbs.close()  # stops the probe thread too
        engine.dispose()
        twin.dispose()
    result.variants.update(run.stats)
    ratio = run.time_ratio("routed replica scope", "hand replica engine")
    result.metrics["time_ratio"] = round(ratio, 4)
    result.metrics["routing_only_ratio"] = round(
        run.time_ratio("routed replica scope", "dbconf on the standby, no routing"), 4
    )
    # A/A: two identical hand-written engines; how far apart they land is this run's noise
    result.metrics["aa_ratio"] = round(run.time_ratio(AA, "hand replica engine"), 4)
    result.targets.append(Target(TARGET, ratio, "<=", 1.03))
    return result
