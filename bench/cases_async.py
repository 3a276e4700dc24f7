"""Async cases (PostgreSQL): 9 the scope, 10 200 concurrent tasks, 11 the drivers compared.

9. ``async with db.async_session() as s: await s.execute(select 1)`` vs a hand-written
   ``async_sessionmaker`` + ``async with maker.begin()`` on ``create_async_engine`` with the
   same pool arguments (asyncpg), interleaved on one event loop.
10. 200 tasks sharing ``size: 20, max_overflow: 5``: dbconf vs hand-written, blocks alternated
    (A B / B A / …), each op timing its checkout wait (``await s.connection()``).
11. Information: the same work (a ``select 1`` scope through dbconf) on asyncpg, psycopg 3
    async and sync psycopg2: one scope at a time, and 50 concurrent workers (tasks for the
    async drivers, threads for psycopg2) over ``size: 20, max_overflow: 5``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from bench.astats import AsyncOp, Tally, TimedAsyncOp, ainterleave, concurrent_block
from bench.cases_threads import _Crew, _dbconf_op, _Tally
from bench.envs import PG_URL, SELECT_1, pool_signature, registry, server_started
from bench.stats import CaseResult, Scale, Target, percentile, summarize

TASKS = 200
POOL = {"size": 20, "max_overflow": 5}
WORKERS = 50  # case 11's concurrency (case 5's thread crew has 50 threads)


def async_url(driver: str) -> str:
    """``PG_URL`` with an async driver, as a user would write it (password included)."""
    url = sa.make_url(PG_URL).set(drivername=f"postgresql+{driver}")
    return url.render_as_string(hide_password=False)


def _hand(**pool: Any) -> tuple[Any, Any]:
    """What a user writes without dbconf: ``create_async_engine`` + ``async_sessionmaker``."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    engine = create_async_engine(
        async_url("asyncpg"), pool_pre_ping=True, hide_parameters=True, **pool
    )
    return engine, async_sessionmaker(engine)


def _same_pool(result: CaseResult, db: Any, engine: Any) -> None:
    """Note any pool setting that differs. dbconf's async pool is its own subclass of the
    hand engine's ``AsyncAdaptedQueuePool`` (typed exhaustion error, leak tracking hook):
    the same pool by class, the subclass's cost is what the case measures."""
    pool, hand_pool = db.async_engine.sync_engine.pool, engine.sync_engine.pool
    ours, theirs = pool_signature(db.async_engine.sync_engine), pool_signature(engine.sync_engine)
    result.metrics["pool"] = ours
    if isinstance(pool, type(hand_pool)):
        theirs["class"] = ours["class"]
    if ours != theirs:
        result.notes.append(f"pools differ: dbconf {ours} vs hand {theirs}")


def _guarded(run: Callable[[Scale], Any], scale: Scale) -> CaseResult:
    """``asyncio.run(run(scale))``, with a target that fails when PostgreSQL restarted during
    the case (another client restarting the shared server voids the numbers)."""
    before = server_started()
    result: CaseResult = asyncio.run(run(scale))
    after = server_started()
    up = before is not None and before == after
    if not up:
        result.notes.append(f"PostgreSQL restarted during the case ({before} → {after})")
    result.targets.append(Target(f"{result.id} server up throughout", int(up), "==", 1))
    return result


def case9(scale: Scale) -> CaseResult:
    return _guarded(_case9, scale)


async def _case9(scale: Scale) -> CaseResult:
    result = CaseResult(9, "async scope: db.async_session() vs async_sessionmaker (asyncpg)")
    dbs = registry({"primary": {"url": PG_URL}})
    db = dbs["primary"]
    engine, maker = _hand()
    _same_pool(result, db, engine)

    async def ours() -> None:
        async with db.async_session() as s:
            await s.execute(SELECT_1)

    async def theirs() -> None:
        async with maker.begin() as s:
            await s.execute(SELECT_1)

    variants: dict[str, AsyncOp] = {"async dbconf": ours, "async hand-written": theirs}
    try:
        run = await ainterleave(variants, scale.n(200), scale)
    finally:
        await dbs.aclose()
        await engine.dispose()
    result.variants.update(run.stats)
    ratio = run.time_ratio("async dbconf", "async hand-written")
    result.metrics["time_ratio"] = round(ratio, 4)
    name = "9 async scope dbconf/hand (time ratio, asyncpg)"
    result.targets.append(Target(name, ratio, "<=", 1.03))
    return result


def _timed(scope: Callable[[], Any]) -> TimedAsyncOp:
    """An op in ``scope()`` (an async session context manager) that returns its checkout
    wait: the time ``await s.connection()`` takes (pool queueing + pre-ping round trip)."""

    async def op() -> int:
        async with scope() as s:
            t0 = time.perf_counter_ns()
            await s.connection()
            wait = time.perf_counter_ns() - t0
            await s.execute(SELECT_1)
        return wait

    return op


def case10(scale: Scale) -> CaseResult:
    return _guarded(_case10, scale)


async def _case10(scale: Scale) -> CaseResult:
    result = CaseResult(10, f"{TASKS} tasks, pool size 20 + overflow 5 (asyncpg)")
    dbs = registry({"primary": {"url": PG_URL, "pool": POOL}})
    db = dbs["primary"]
    engine, maker = _hand(pool_size=20, max_overflow=5)
    _same_pool(result, db, engine)
    variants = {"tasks dbconf": _timed(db.async_session), "tasks hand": _timed(maker.begin)}
    tallies = {name: Tally() for name in variants}
    n = scale.n(4)
    try:
        for op in variants.values():  # warm-up: open the pools' connections
            await concurrent_block(op, TASKS, 2, Tally())
        names = list(variants)
        for r in range(scale.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                await concurrent_block(variants[name], TASKS, n, tallies[name])
    finally:
        await dbs.aclose()
        await engine.dispose()
    for name, tally in tallies.items():
        result.variants[name] = summarize(tally.latencies, sum(tally.blocks))
        key = name.split()[-1]
        waits = sorted(tally.waits)
        if waits:
            result.metrics[f"{key}_checkout_wait_median_us"] = round(
                statistics.median(waits) / 1e3, 1
            )
            result.metrics[f"{key}_checkout_wait_p99_us"] = round(percentile(waits, 99) / 1e3, 1)
        result.metrics[f"{key}_errors"] = tally.errors
        if tally.kinds:
            result.metrics[f"{key}_error_kinds"] = ", ".join(
                f"{kind} {count}" for kind, count in tally.kinds.most_common()
            )
        if tally.first_error:
            result.notes.append(f"{name}: first error: {tally.first_error}")
    a, b = tallies["tasks dbconf"].blocks, tallies["tasks hand"].blocks
    ratio = statistics.median(y / x for x, y in zip(a, b, strict=True))  # throughput dbconf/hand
    result.metrics["throughput_ratio"] = round(ratio, 4)
    errors = tallies["tasks dbconf"].errors + tallies["tasks hand"].errors
    result.targets += [
        Target("10 async tasks throughput dbconf/hand", ratio, ">=", 0.97),
        Target("10 async tasks errors (both variants)", errors, "==", 0),
    ]
    return result


def case11(scale: Scale) -> CaseResult:
    return _guarded(_case11, scale)


async def _case11(scale: Scale) -> CaseResult:
    result = CaseResult(11, "drivers: asyncpg vs psycopg 3 async vs psycopg2 (information)")
    dbs = registry(
        {
            "a": {"url": PG_URL, "async_driver": "asyncpg", "pool": POOL},
            "p": {"url": PG_URL, "async_driver": "psycopg_async", "pool": POOL},
            "s": {"url": PG_URL, "pool": POOL},  # psycopg2, the default sync driver
        }
    )
    asyncpg_db, psycopg_db, sync_db = dbs["a"], dbs["p"], dbs["s"]

    def scope_of(db: Any) -> AsyncOp:
        async def op() -> None:
            async with db.async_session() as s:
                await s.execute(SELECT_1)

        return op

    async def sync_scope() -> None:  # blocks the loop: nothing else runs during the serial part
        with sync_db.session() as s:
            s.execute(SELECT_1)

    serial: dict[str, AsyncOp] = {
        "serial asyncpg": scope_of(asyncpg_db),
        "serial psycopg async": scope_of(psycopg_db),
        "serial psycopg2 (sync)": sync_scope,
    }
    crew = _Crew()
    concurrent: dict[str, Tally | _Tally] = {}
    try:
        run = await ainterleave(serial, scale.n(200), scale)
        result.variants.update(run.stats)
        ops: dict[str, TimedAsyncOp] = {
            f"{WORKERS} tasks asyncpg": _timed(asyncpg_db.async_session),
            f"{WORKERS} tasks psycopg async": _timed(psycopg_db.async_session),
        }
        threads = f"{WORKERS} threads psycopg2 (sync)"
        concurrent = {name: Tally() for name in ops} | {threads: _Tally()}
        n = scale.n(16)
        for op in ops.values():  # warm-up
            await concurrent_block(op, WORKERS, 2, Tally())
        crew.block(_dbconf_op(sync_db), _Tally(), 2)
        names = list(concurrent)
        for r in range(scale.rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                if name == threads:
                    crew.block(_dbconf_op(sync_db), concurrent[name], n)  # type: ignore[arg-type]
                else:
                    await concurrent_block(ops[name], WORKERS, n, concurrent[name])  # type: ignore[arg-type]
    finally:
        crew.stop()
        await dbs.aclose()
    for name, tally in concurrent.items():
        result.variants[name] = summarize(tally.latencies, sum(tally.blocks))
        result.metrics[f"{name} errors"] = tally.errors
    base = result.variants["serial psycopg2 (sync)"].throughput
    for name in serial:
        result.metrics[f"{name} throughput / psycopg2"] = round(
            result.variants[name].throughput / base, 3
        )
    if concurrent:
        base = result.variants[f"{WORKERS} threads psycopg2 (sync)"].throughput
        for name in concurrent:
            result.metrics[f"{name} throughput / psycopg2 threads"] = round(
                result.variants[name].throughput / base, 3
            )
    return result
