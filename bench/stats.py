"""Timing primitives: interleaved A/B/A/B blocks, per-op latencies, summaries, targets."""

from __future__ import annotations

import gc
import math
import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Op = Callable[[], object]


@dataclass(frozen=True)
class Scale:
    """How long to run: ``rounds`` interleaved rounds; block sizes are multiplied by ``ops``."""

    rounds: int
    ops: float
    warmup: int

    def n(self, base: int) -> int:
        return max(5, int(base * self.ops))


FULL = Scale(rounds=40, ops=1.0, warmup=200)
QUICK = Scale(rounds=4, ops=0.15, warmup=20)


@dataclass
class Stats:
    """Latency summary of one variant, in microseconds."""

    ops: int
    median_us: float
    p99_us: float
    mean_us: float
    throughput: float  # ops per second of wall time inside this variant's blocks

    def as_dict(self) -> dict[str, float]:
        return {
            "ops": self.ops,
            "median_us": round(self.median_us, 2),
            "p99_us": round(self.p99_us, 2),
            "mean_us": round(self.mean_us, 2),
            "throughput_ops_s": round(self.throughput, 1),
        }


def percentile(sorted_values: list[int] | list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def summarize(latencies_ns: list[int], wall_ns: int) -> Stats:
    values = sorted(latencies_ns)
    return Stats(
        ops=len(values),
        median_us=statistics.median(values) / 1000,
        p99_us=percentile(values, 99) / 1000,
        mean_us=statistics.fmean(values) / 1000,
        throughput=len(values) / (wall_ns / 1e9) if wall_ns else math.nan,
    )


@dataclass
class Interleaved:
    """Raw result of :func:`interleave`: latencies and per-round block wall times per variant."""

    latencies: dict[str, list[int]]
    blocks: dict[str, list[int]]  # wall ns of each round's block (same op count in each)
    stats: dict[str, Stats] = field(default_factory=dict)

    def time_ratio(self, a: str, b: str) -> float:
        """Median over rounds of block_time(a) / block_time(b): the paired throughput ratio
        inverted (> 1 means ``a`` is slower). Pairing adjacent blocks cancels machine drift."""
        return statistics.median(x / y for x, y in zip(self.blocks[a], self.blocks[b], strict=True))


def _block(op: Op, n: int, out: list[int]) -> int:
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(n):
        t0 = clock()
        op()
        out.append(clock() - t0)
    return clock() - start


def interleave(
    variants: Mapping[str, Op], n: int, scale: Scale, settle: float = 0.0
) -> Interleaved:
    """Run each variant in blocks of ``n`` ops, alternating variants for ``scale.rounds``
    rounds; the order rotates every round (A B / B A / …) so neither side always goes first.

    ``settle`` seconds of sleep before each block let background work caused by the previous
    block (e.g. server processes exiting after NullPool closes) finish outside the timing."""
    names = list(variants)
    for name in names:  # warm caches, pools, statement caches
        _block(variants[name], scale.warmup, [])
    latencies: dict[str, list[int]] = {name: [] for name in names}
    blocks: dict[str, list[int]] = {name: [] for name in names}
    for r in range(scale.rounds):
        order = names if r % 2 == 0 else names[::-1]
        k = r % len(names)
        order = order[k:] + order[:k] if len(names) > 2 else order
        for name in order:
            gc.collect()
            if settle:
                time.sleep(settle)
            blocks[name].append(_block(variants[name], n, latencies[name]))
    result = Interleaved(latencies, blocks)
    result.stats = {name: summarize(latencies[name], sum(blocks[name])) for name in names}
    return result


def interleave_shuffled(
    variants: Mapping[str, Op],
    ops: int,
    scale: Scale,
    *,
    block: int = 10,
    refresh: Mapping[str, Callable[[], object]] | None = None,
    refresh_every: int = 25,
    seed: int = 0,
) -> Interleaved:
    """Like :func:`interleave`, for ops that each make a server round trip: many small blocks
    (``block`` ops) in a new random order every round, ``ops`` ops per variant in all.

    Why: two *identical* variants measured with :func:`interleave` (blocks of ~250 ops in a
    rotating order) differed by up to 4% here. Bias comes from what ran just before a block
    and from anything periodic in the background (a probe thread's ticks, the server's own
    timers) beating against the round's period; short blocks in a random order spread both
    evenly over the variants. ``refresh``: per variant, what closes its pooled connections
    (``engine.dispose``), called every ``refresh_every`` rounds in a random order, after which
    each variant runs ``block`` untimed ops: each variant's server connections are then a
    fresh draw, so one connection whose server process happens to sit badly (two identical
    engines still differed by up to 5% over a whole run, each on its own connection) does not
    decide a run. Both measures are checked by the A/A rows the cases report.
    """
    names = list(variants)
    rng = random.Random(seed)
    for name in names:  # warm caches, pools, statement caches
        _block(variants[name], scale.warmup, [])
    latencies: dict[str, list[int]] = {name: [] for name in names}
    blocks: dict[str, list[int]] = {name: [] for name in names}
    rounds = max(scale.rounds, ops // block)
    gc.collect()
    for r in range(rounds):
        if refresh is not None and r % refresh_every == 0 and r:
            order = list(refresh)
            rng.shuffle(order)
            for name in order:
                refresh[name]()
            gc.collect()  # outside the timed blocks, with the refresh
            for name in order:
                _block(variants[name], block, [])
        rng.shuffle(names)
        for name in names:
            blocks[name].append(_block(variants[name], block, latencies[name]))
    result = Interleaved(latencies, blocks)
    result.stats = {name: summarize(latencies[name], sum(blocks[name])) for name in names}
    return result


Comparison = Literal["<=", ">=", "<", "=="]


@dataclass
class Target:
    """One pass/fail line of the report. ``value=None`` means not measurable (``n/a``)."""

    name: str
    value: float | None
    op: Comparison
    threshold: float
    unit: str = ""
    note: str = ""

    @property
    def status(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "n/a"
        ok = {
            "<=": self.value <= self.threshold,
            ">=": self.value >= self.threshold,
            "<": self.value < self.threshold,
            "==": self.value == self.threshold,
        }[self.op]
        return "met" if ok else "NOT MET"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "op": self.op,
            "threshold": self.threshold,
            "unit": self.unit,
            "status": self.status,
            "note": self.note,
        }


@dataclass
class CaseResult:
    """What one case reports: per-variant stats, derived metrics, targets, notes."""

    id: int
    title: str
    variants: dict[str, Stats] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 2),
            "variants": {k: v.as_dict() for k, v in self.variants.items()},
            "metrics": self.metrics,
            "targets": [t.as_dict() for t in self.targets],
            "notes": self.notes,
        }
