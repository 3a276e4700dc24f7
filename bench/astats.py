"""Async timing primitives: the interleaved A/B/B/A blocks of :mod:`bench.stats` on one event
loop, and a crew of concurrent tasks that runs blocks of ops (the async twin of case 5's
threads)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from bench.stats import Interleaved, Scale, summarize

AsyncOp = Callable[[], Awaitable[object]]
TimedAsyncOp = Callable[[], Awaitable[int]]  # returns the checkout wait in ns


async def _block(op: AsyncOp, n: int, out: list[int]) -> int:
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(n):
        t0 = clock()
        await op()
        out.append(clock() - t0)
    return clock() - start


async def ainterleave(variants: Mapping[str, AsyncOp], n: int, scale: Scale) -> Interleaved:
    """:func:`bench.stats.interleave` for coroutine functions: the same rotation of variants
    (A B / B A / …), the same warm-up, one op awaited at a time."""
    names = list(variants)
    for name in names:
        await _block(variants[name], scale.warmup, [])
    latencies: dict[str, list[int]] = {name: [] for name in names}
    blocks: dict[str, list[int]] = {name: [] for name in names}
    for r in range(scale.rounds):
        order = names if r % 2 == 0 else names[::-1]
        k = r % len(names)
        order = order[k:] + order[:k] if len(names) > 2 else order
        for name in order:
            gc.collect()
            blocks[name].append(await _block(variants[name], n, latencies[name]))
    result = Interleaved(latencies, blocks)
    result.stats = {name: summarize(latencies[name], sum(blocks[name])) for name in names}
    return result


@dataclass
class Tally:
    """What one variant's blocks of concurrent ops measured."""

    latencies: list[int] = field(default_factory=list)
    waits: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    kinds: Counter[str] = field(default_factory=Counter)  # error class → count


async def _worker(op: TimedAsyncOp, n: int, tally: Tally) -> None:
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        try:
            tally.waits.append(await op())
        except Exception as exc:
            tally.errors += 1
            tally.kinds[type(exc).__name__] += 1
            tally.first_error = tally.first_error or f"{type(exc).__name__}: {exc}"[:200]
        tally.latencies.append(clock() - t0)


async def concurrent_block(op: TimedAsyncOp, tasks: int, n: int, tally: Tally) -> None:
    """``tasks`` tasks each run ``n`` ops; the block's wall time goes to ``tally.blocks``."""
    gc.collect()
    t0 = time.perf_counter_ns()
    await asyncio.gather(*(_worker(op, n, tally) for _ in range(tasks)))
    tally.blocks.append(time.perf_counter_ns() - t0)
