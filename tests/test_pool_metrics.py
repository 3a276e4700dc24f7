"""dbconf.pooling.pool_metrics: what is measured, under which name, at what cost (nothing when off),
against the real PostgreSQL server: threads holding connections, a blocked checkout, a
forced checkout timeout, dispose, fork, replicas."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import dbconf
from dbconf.config import ProfileConfig
from dbconf.errors import ConfigError, PoolExhaustedError
from dbconf.pooling import pool_metrics
from dbconf.pooling.pool_metrics import PoolSnapshot, PoolStats
from dbconf.runtime.builder import build_engine


class Recorder:
    """A sink that keeps what it is handed (the exporters' end, without an exporter)."""

    def __init__(self) -> None:
        self.create: list[float] = []
        self.wait: list[float] = []
        self.use: list[float] = []
        self.names: set[str] = set()

    def record(
        self, pool: PoolStats, create: Sequence[float], wait: Sequence[float], use: Sequence[float]
    ) -> None:
        self.names.add(pool.name)
        self.create += create
        self.wait += wait
        self.use += use


def registry(
    url: str, pool: dict[str, Any], *, replicas: list[Any] | None = None
) -> dbconf.Registry:
    db: dict[str, Any] = {"url": url, "pool": pool}
    if replicas is not None:
        db["replicas"] = replicas
    return dbconf.Registry(
        ProfileConfig.model_validate({"databases": {"main": db}}), profile="prod"
    )


def stats_of(db: dbconf.Database) -> PoolStats:
    """The stats of the database's engine (building it)."""
    stats = db.engine.pool._dbconf_metrics  # type: ignore[attr-defined]
    assert isinstance(stats, PoolStats)
    assert stats in pool_metrics.pools()
    return stats


def wait_for(
    read: Callable[[], PoolSnapshot | None], ok: Callable[[PoolSnapshot], bool]
) -> PoolSnapshot:
    deadline = time.monotonic() + 10
    while True:
        snap = read()
        assert snap is not None
        if ok(snap) or time.monotonic() > deadline:
            return snap
        time.sleep(0.01)


@pytest.fixture
def sink() -> Recorder:
    return Recorder()


@pytest.fixture
def held() -> Iterator[Callable[[sa.Engine, int], threading.Event]]:
    """``hold(engine, n)``: n threads each holding one checked-out connection until the
    returned event is set (set and joined at teardown too)."""
    threads: list[threading.Thread] = []
    events: list[threading.Event] = []

    def hold(engine: sa.Engine, n: int) -> threading.Event:
        release, ready = threading.Event(), threading.Barrier(n + 1)

        def run() -> None:
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
                ready.wait()
                release.wait(30)

        for _ in range(n):
            t = threading.Thread(target=run)
            t.start()
            threads.append(t)
        ready.wait(30)
        events.append(release)
        return release

    yield hold
    for event in events:
        event.set()
    for t in threads:
        t.join(30)


def test_nothing_is_installed_without_metrics(pg_url: str) -> None:
    with registry(pg_url, {"size": 2}) as dbs:
        pool = dbs["main"].engine.pool
        assert pool._dbconf_metrics is None  # type: ignore[attr-defined]
        assert pool_metrics.install(dbs["main"].engine, "main", dbs["main"].config) is None


def test_threads_holding_connections_are_used_then_idle(
    pg_url: str, sink: Recorder, held: Callable[[sa.Engine, int], threading.Event]
) -> None:
    with registry(pg_url, {"size": 5, "max_overflow": 2}) as dbs:
        db = dbs["main"]
        pool_metrics.instrument(dbs, "prod", [sink])
        stats = stats_of(db)
        release = held(db.engine, 3)
        snap = stats.snapshot()
        assert snap == PoolSnapshot("prod.main", 3, 0, 7, 5, 0, 0, 0)
        release.set()
        snap = wait_for(stats.snapshot, lambda s: s.used == 0)
        assert (snap.used, snap.idle) == (0, 3)
        stats.flush()
        assert sink.names == {"prod.main"}
        assert (len(sink.create), len(sink.wait), len(sink.use)) == (3, 3, 3)
        assert all(v > 0 for v in sink.create + sink.wait + sink.use)
        stats.flush()  # drained: nothing handed twice
        assert len(sink.wait) == 3


def test_blocked_checkout_is_pending_and_timeout_is_counted(pg_url: str, sink: Recorder) -> None:
    with registry(pg_url, {"size": 1, "max_overflow": 0, "timeout": "30s"}) as dbs:
        db = dbs["main"]
        pool_metrics.instrument(dbs, "prod", [sink])
        stats = stats_of(db)
        conn = db.engine.connect()
        got: list[object] = []
        waiter = threading.Thread(target=lambda: got.append(db.engine.connect()))
        waiter.start()
        try:
            snap = wait_for(stats.snapshot, lambda s: s.pending == 1)
            assert (snap.pending, snap.used, snap.idle) == (1, 1, 0)
        finally:
            conn.close()
            waiter.join(30)
        snap = wait_for(stats.snapshot, lambda s: s.pending == 0)
        assert (snap.pending, snap.used) == (0, 1)
        assert snap.timeouts == 0
        fast = db.engine.execution_options()  # same pool
        fast.pool._timeout = 0.05  # type: ignore[attr-defined]
        with pytest.raises(PoolExhaustedError):
            fast.connect()
        assert stats.snapshot().timeouts == 1  # type: ignore[union-attr]
        got[0].close()  # type: ignore[attr-defined]


def test_enabled_by_config_and_kept_across_dispose(pg_url: str, sink: Recorder) -> None:
    config = ProfileConfig.model_validate(
        {"metrics": {"prometheus": True}, "databases": {"main": {"url": pg_url}}}
    )
    with dbconf.Registry(config, profile="prod") as dbs:
        db = dbs["main"]
        with db.session() as s:
            s.execute(sa.text("select 1"))
        stats = stats_of(db)
        db.dispose()  # a new pool: same stats, read through the engine
        assert db.engine.pool._dbconf_metrics is stats  # type: ignore[attr-defined]
        with db.engine.connect():
            assert stats.snapshot().used == 1  # type: ignore[union-attr]


def test_replica_engines_are_named_with_their_index(pg_url: str, sink: Recorder) -> None:
    with registry(pg_url, {"size": 2}, replicas=[{"application_name": "r0"}]) as dbs:
        db = dbs["main"]
        pool_metrics.instrument(dbs, "prod", [sink])
        # how the replica helpers build them: builder.build_engine(f"{name}.replicas[{i}]", cfg)
        engine = build_engine("main.replicas[0]", db.config.replica_configs[0])
        try:
            with engine.connect():
                names = {s.name: s for s in pool_metrics.pools()}
                assert names["prod.main.replicas[0]"].snapshot().used == 1  # type: ignore[union-attr]
        finally:
            engine.dispose()


def test_async_engine_counts_tasks(pg_url: str, sink: Recorder) -> None:
    import asyncio

    async def main(dbs: dbconf.Registry) -> None:
        db = dbs["main"]
        engine = db.async_engine
        stats = next(s for s in pool_metrics.pools() if s._engine() is engine.sync_engine)
        release = asyncio.Event()
        held = 0

        async def hold() -> None:
            nonlocal held
            async with engine.connect() as conn:
                await conn.execute(sa.text("select 1"))
                held += 1
                await release.wait()

        tasks = [asyncio.create_task(hold()) for _ in range(2)]
        while held < 2:
            await asyncio.sleep(0.01)
        waiter = asyncio.create_task(hold())  # size 2, no overflow: it waits
        snap = await _await_snapshot(stats, lambda s: s.pending == 1)
        assert (snap.used, snap.idle, snap.pending, snap.max) == (2, 0, 1, 2)
        release.set()
        await asyncio.gather(*tasks, waiter)
        snap = await _await_snapshot(stats, lambda s: s.used == 0)
        assert (snap.used, snap.idle, snap.pending) == (0, 2, 0)
        stats.flush()
        assert (len(sink.wait), len(sink.use)) == (3, 3)
        await dbs.aclose()

    dbs = registry(pg_url, {"size": 2, "max_overflow": 0})
    pool_metrics.instrument(dbs, "prod", [sink])
    asyncio.run(main(dbs))


async def _await_snapshot(stats: PoolStats, ok: Callable[[PoolSnapshot], bool]) -> PoolSnapshot:
    import asyncio

    deadline = time.monotonic() + 10
    while True:
        snap = stats.snapshot()
        assert snap is not None
        if ok(snap) or time.monotonic() > deadline:
            return snap
        await asyncio.sleep(0.01)


def test_forked_child_starts_from_zero(pg_url: str, sink: Recorder) -> None:
    with registry(pg_url, {"size": 1, "max_overflow": 0, "timeout": 0.05}) as dbs:
        db = dbs["main"]
        pool_metrics.instrument(dbs, "prod", [sink])
        stats = stats_of(db)
        conn = db.engine.connect()
        with pytest.raises(PoolExhaustedError):
            db.engine.connect()
        assert stats.snapshot().timeouts == 1  # type: ignore[union-attr]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                snap = stats.snapshot()
                with db.engine.connect():
                    used = stats.snapshot().used  # type: ignore[union-attr]
                out = {"timeouts": snap.timeouts, "used": snap.used, "used_after": used}  # type: ignore[union-attr]
                out["wait_buffered"] = len(stats.wait)
                os.write(write, json.dumps(out).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            child = json.loads(f.read())
        os.waitpid(pid, 0)
        conn.close()
    assert child == {"timeouts": 0, "used": 0, "used_after": 1, "wait_buffered": 1}


def test_unknown_key_and_missing_exporter_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> None:
    with pytest.raises(ValueError, match="statsd"):
        ProfileConfig.model_validate(
            {"metrics": {"statsd": True}, "databases": {"a": {"url": "sqlite://"}}}
        )
    monkeypatch.setitem(pool_metrics.EXPORTERS, "opentelemetry", ("dbconf_no_such_mod", "otel"))
    path = write_config(
        "profiles:\n  p:\n    metrics: {opentelemetry: true}\n    databases: {a: {url: 'sqlite://'}}\n"
    )
    with pytest.raises(ConfigError) as info:
        dbconf.load("p", path=path)
    text = str(info.value)
    assert "profiles.p.metrics.opentelemetry" in text
    assert "pip install 'dbconf[otel]'" in text
    assert f"{path}:3" in text


def test_engines_built_before_instrument_are_measured(pg_url: str, sink: Recorder) -> None:
    import asyncio

    async def main() -> None:
        dbs = registry(pg_url, {"size": 2})
        db = dbs["main"]
        sync, engine = db.engine, db.async_engine  # both built, not measured yet
        assert sync.pool._dbconf_metrics is None  # type: ignore[attr-defined]
        assert engine.sync_engine.pool._dbconf_metrics is None  # type: ignore[attr-defined]
        pool_metrics.instrument(dbs, "prod", [sink])
        async with engine.connect():
            stats = engine.sync_engine.pool._dbconf_metrics  # type: ignore[attr-defined]
            assert stats.name == "prod.main"
            assert stats.snapshot().used == 1
        with sync.connect():
            assert stats_of(db).snapshot().used == 1  # type: ignore[union-attr]
        await dbs.aclose()

    asyncio.run(main())
