"""Case 5: 50 threads sharing a pool of size 20 + overflow 5, dbconf vs hand-written SQLAlchemy.

The same 50 threads run every block; the main thread alternates the variant between blocks
(A B / B A / …), so both variants see the same machine. Each op records its latency and its
checkout wait: the time ``session.connection()`` takes (pool queueing + pre-ping round trip).
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bench.envs import PG_URL, SELECT_1, hand_engine, hand_maker, pool_signature, registry
from bench.stats import CaseResult, Scale, Target, percentile, summarize

THREADS = 50
POOL = {"size": 20, "max_overflow": 5}
TimedOp = Callable[[], int]  # returns the checkout wait in ns


def _dbconf_op(db: Any) -> TimedOp:
    def op() -> int:
        with db.session() as s:
            t0 = time.perf_counter_ns()
            s.connection()
            wait = time.perf_counter_ns() - t0
            s.execute(SELECT_1)
        return wait

    return op


def _hand_op(maker: sessionmaker[Session]) -> TimedOp:
    def op() -> int:
        with maker.begin() as s:
            t0 = time.perf_counter_ns()
            s.connection()
            wait = time.perf_counter_ns() - t0
            s.execute(SELECT_1)
        return wait

    return op


@dataclass
class _Tally:
    latencies: list[int] = field(default_factory=list)
    waits: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None


class _Crew:
    """``THREADS`` persistent workers; :meth:`block` runs ``n`` ops on each and times it."""

    def __init__(self) -> None:
        self._start = threading.Barrier(THREADS + 1)
        self._done = threading.Barrier(THREADS + 1)
        self._lock = threading.Lock()
        self._job: tuple[TimedOp, _Tally, int] | None = None
        self._threads = [
            threading.Thread(target=self._work, name=f"bench-{i}", daemon=True)
            for i in range(THREADS)
        ]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        clock = time.perf_counter_ns
        while True:
            self._start.wait()
            job = self._job
            if job is None:
                return
            op, tally, n = job
            lat: list[int] = []
            waits: list[int] = []
            errors, first = 0, None
            for _ in range(n):
                t0 = clock()
                try:
                    waits.append(op())
                except Exception as exc:
                    errors += 1
                    first = first or f"{type(exc).__name__}: {exc}"[:200]
                lat.append(clock() - t0)
            with self._lock:
                tally.latencies += lat
                tally.waits += waits
                tally.errors += errors
                tally.first_error = tally.first_error or first
            self._done.wait()

    def block(self, op: TimedOp, tally: _Tally, n: int) -> None:
        self._job = (op, tally, n)
        gc.collect()
        t0 = time.perf_counter_ns()
        self._start.wait()
        self._done.wait()
        tally.blocks.append(time.perf_counter_ns() - t0)

    def stop(self) -> None:
        self._job = None
        self._start.wait()
        for t in self._threads:
            t.join()


def case5(scale: Scale) -> CaseResult:
    result = CaseResult(5, f"{THREADS} threads, pool size 20 + overflow 5 (PostgreSQL)")
    dbs = registry({"primary": {"url": PG_URL, "pool": POOL}})
    engine = hand_engine(
        PG_URL, pool_size=20, max_overflow=5, pool_pre_ping=True, hide_parameters=True
    )
    db = dbs["primary"]
    ours, theirs = pool_signature(db.engine), pool_signature(engine)
    result.metrics["pool"] = ours
    if ours != theirs:
        result.notes.append(f"pools differ: dbconf {ours} vs hand {theirs}")
    variants = {"threads dbconf": _dbconf_op(db), "threads hand": _hand_op(hand_maker(engine))}
    tallies = {name: _Tally() for name in variants}
    n = scale.n(16)
    crew = _Crew()
    try:
        for op in variants.values():  # warm-up: open the pools' connections
            crew.block(op, _Tally(), max(2, scale.warmup // 40))
        names = list(variants)
        for r in range(scale.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                crew.block(variants[name], tallies[name], n)
    finally:
        crew.stop()
        dbs.dispose()
        engine.dispose()
    for name, tally in tallies.items():
        result.variants[name] = summarize(tally.latencies, sum(tally.blocks))
        waits = sorted(tally.waits)
        key = name.split()[-1]
        result.metrics[f"{key}_checkout_wait_median_us"] = round(statistics.median(waits) / 1e3, 1)
        result.metrics[f"{key}_checkout_wait_p99_us"] = round(percentile(waits, 99) / 1e3, 1)
        result.metrics[f"{key}_errors"] = tally.errors
        if tally.first_error:
            result.notes.append(f"{name}: first error: {tally.first_error}")
    a, b = tallies["threads dbconf"].blocks, tallies["threads hand"].blocks
    ratio = statistics.median(y / x for x, y in zip(a, b, strict=True))  # throughput dbconf / hand
    result.metrics["throughput_ratio"] = round(ratio, 4)
    errors = tallies["threads dbconf"].errors + tallies["threads hand"].errors
    result.targets += [
        Target("5 threads throughput dbconf/hand", ratio, ">=", 0.97),
        Target("5 threads errors (both variants)", errors, "==", 0),
    ]
    return result


def case16(scale: Scale) -> CaseResult:
    """50 threads over the case-5 pool through dbconf: ``pre_ping: 1s`` (the bypass window)
    vs ``pre_ping: false`` (target) and ``pre_ping: true`` (information), blocks alternated."""
    result = CaseResult(16, f"{THREADS} threads: pre_ping 1s vs false vs true (PostgreSQL)")
    dbs = registry(
        {
            name: {"url": PG_URL, "pool": {**POOL, "pre_ping": value}}
            for name, value in (("window", "1s"), ("off", False), ("on", True))
        }
    )
    variants = {
        "pre_ping 1s": _dbconf_op(dbs["window"]),
        "pre_ping false": _dbconf_op(dbs["off"]),
        "pre_ping true": _dbconf_op(dbs["on"]),
    }
    result.metrics["pool_window"] = pool_signature(dbs["window"].engine)
    tallies = {name: _Tally() for name in variants}
    n = scale.n(16)
    crew = _Crew()
    try:
        for op in variants.values():
            crew.block(op, _Tally(), max(2, scale.warmup // 40))
        names = list(variants)
        for r in range(scale.rounds):
            k = r % len(names)
            for name in names[k:] + names[:k] if r % 2 == 0 else (names[k:] + names[:k])[::-1]:
                crew.block(variants[name], tallies[name], n)
    finally:
        crew.stop()
        dbs.dispose()
    for name, tally in tallies.items():
        result.variants[name] = summarize(tally.latencies, sum(tally.blocks))
        key = name.split()[-1]
        result.metrics[f"{key}_errors"] = tally.errors
        if tally.first_error:
            result.notes.append(f"{name}: first error: {tally.first_error}")

    def ratio(a: str, b: str) -> float:  # per-scope time: block time of a / of b, paired
        pairs = zip(tallies[a].blocks, tallies[b].blocks, strict=True)
        return statistics.median(x / y for x, y in pairs)

    window, always = (
        ratio("pre_ping 1s", "pre_ping false"),
        ratio("pre_ping true", "pre_ping false"),
    )
    result.metrics.update(
        time_ratio_1s_false=round(window, 4), time_ratio_true_false=round(always, 4)
    )
    errors = sum(t.errors for t in tallies.values())
    result.targets += [
        Target("16 threads per-scope time pre_ping 1s / false", window, "<=", 1.05),
        Target("16 threads errors (all variants)", errors, "==", 0),
    ]
    result.notes.append(
        f"information: pre_ping true / false = {always:.3f} under {THREADS} threads (one ping "
        "round trip per checkout); the 1s window pings only connections idle longer than 1s"
    )
    return result
