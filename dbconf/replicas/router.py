"""The router of one database with replicas: which replica serves a read, and its engines.

:class:`Router` holds each replica's state (:mod:`.state`), builds its engines lazily (sync,
one async engine per event loop, and a small probe engine), registers itself with the probe
thread (:mod:`.probe`) on first use, and answers :meth:`Router.choose`:

- only **eligible** replicas serve (up, and data not older than ``max_lag + check_interval``:
  see :mod:`.state`);
- among them the **least loaded** (fewest checked-out connections, sync and async pools),
  **ties in round robin**. Why not plain round robin: a slow replica holds its connections
  longer, so counting them moves load off it, where round robin keeps sending it 1/n of the
  reads; when all are idle (the usual case at low load) it *is* round robin;
- a read that must see this context's last write (:meth:`remember_write`) only goes to a
  replica whose last probe showed it replayed that write (PostgreSQL: replay LSN >= the
  commit's WAL position), else to the primary (``None``), whatever ``fallback`` says;
- no eligible replica: ``None`` (read from the primary) with ``fallback: primary`` — one
  WARNING per router until a replica is eligible again — or :class:`NoReplicaError` with
  ``fallback: error``.

Every connection of a replica engine runs the dialect's ``read_only_session_sql`` when it is
opened, so a write through it is refused by the server.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event

import dbconf.replicas.probe as probe
import dbconf.replicas.writes as writes
from dbconf.config import DatabaseConfig
from dbconf.dialects import dialect_for
from dbconf.errors import NoReplicaError, RegistryClosedError
from dbconf.replicas.probe_engine import ProbeEngines, ProbeFailedError
from dbconf.replicas.state import ReplicaState, ReplicaStatus
from dbconf.runtime.builder import build_async_engine, build_engine
from dbconf.runtime.loops import LoopEngines, close_returned

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["Router"]

log = logging.getLogger("dbconf.replicas")

_keys = itertools.count(1)


class Router:
    """Routing of one database's reads among its replicas (see the module doc)."""

    def __init__(
        self, database_name: str, config: DatabaseConfig, primary_engine: Callable[[], sa.Engine]
    ) -> None:
        self.database_name = database_name
        self.config = config
        self.routing = config.routing_config
        self.primary_engine = primary_engine
        self.dialect = dialect_for(config.backend)
        self._configs = config.replica_configs
        self._states = [
            ReplicaState(f"replicas[{i}]", cfg.masked_url()) for i, cfg in enumerate(self._configs)
        ]
        n = len(self._configs)
        self._engines: list[sa.Engine | None] = [None] * n
        self._probes = ProbeEngines(
            database_name, self._configs, self.dialect, self.routing.check_interval
        )
        self._async = [LoopEngines(self._name(i), self._async_builder(i)) for i in range(n)]
        self._key = next(_keys)
        # the routed sessions' fast path: the only replica's state (None: several, or closed)
        self.single: ReplicaState | None = self._states[0] if n == 1 else None
        self._closed = False
        self.reset_after_fork()
        probe.track(self)

    def __repr__(self) -> str:
        return f"<Router {self.database_name} replicas={len(self._configs)}>"

    def reset_after_fork(self) -> None:
        """Fresh state (at construction, and in a forked child: its parent's probes and locks
        mean nothing there)."""
        self._lock = threading.Lock()
        self._probing = threading.Lock()
        self._started = False
        self._first_round = threading.Event()
        self._wait_until = 0.0
        self._due = 0.0
        self._rr = 0
        self._warned = False
        for state in self._states:
            state.reset()

    def __len__(self) -> int:
        return len(self._configs)

    def _name(self, i: int) -> str:
        return f"{self.database_name}.replicas[{i}]"

    def _require_open(self) -> None:
        if self._closed:
            raise RegistryClosedError(self.database_name)

    # --- engines ---
    def replica_engine(self, i: int) -> sa.Engine:
        """Replica ``i``'s engine (built on first use; its connections are read-only)."""
        engine = self._engines[i]
        if engine is None:
            with self._lock:
                self._require_open()
                engine = self._engines[i]
                if engine is None:
                    engine = build_engine(self._name(i), self._configs[i])
                    self._read_only(engine)
                    self._engines[i] = engine
        return engine

    def replica_async_engine(self, i: int, *, autocommit: bool = False) -> AsyncEngine:
        """Replica ``i``'s async engine of the running event loop (``autocommit``: its
        AUTOCOMMIT variant); one per loop, as :mod:`dbconf.runtime.loops` explains."""
        self._require_open()
        return self._async[i].current(autocommit=autocommit)

    def replica_async_engines(self, i: int) -> LoopEngines:
        """Replica ``i``'s async engines, one per event loop (for a LoopSessionmaker)."""
        return self._async[i]

    def _async_builder(self, i: int) -> Callable[[], AsyncEngine]:
        def build() -> AsyncEngine:
            self._require_open()
            engine = build_async_engine(self._name(i), self._configs[i])
            self._read_only(engine.sync_engine)
            return engine

        return build

    def _read_only(self, engine: sa.Engine) -> None:
        sql = self.dialect.read_only_session_sql if self.dialect is not None else None
        if sql is None:
            return

        @event.listens_for(engine, "connect")
        def _set_read_only(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(sql)
            finally:
                cursor.close()
            dbapi_connection.commit()  # a driver outside autocommit opened a transaction

    # --- probing (called by the probe thread) ---
    def probe_if_due(self, now: float) -> float:
        """Measure every replica if ``check_interval`` has passed since the last round."""
        if self._closed:
            return math.inf
        if now >= self._due:
            self._due = now + self.routing.check_interval
            for i in range(len(self._states)):
                if self._closed:
                    return math.inf
                self.probe_one(i)
            self._first_round.set()
        return self._due

    def probe_one(self, i: int, *, log_change: bool = True) -> None:
        """Measure replica ``i`` now (in the calling thread) and record the result; a change
        of state is logged (``dbconf.replicas``: WARNING when ejected, INFO when up). Probes
        of one router never overlap (the probe thread and ``dbconf check``)."""
        state = self._states[i]
        with self._probing:
            before = state.state
            start = time.monotonic()
            try:
                measurement = self._probes.measure(i)
            except ProbeFailedError as exc:
                state.failed(str(exc))
            else:
                state.record(
                    measurement,
                    measured_at=start,
                    max_lag=self.routing.max_lag,
                    check_interval=self.routing.check_interval,
                )
        if state.serve_until >= time.monotonic():
            self._warned = False  # a replica serves again: the next fallback warns again
        if log_change:
            self._log_change(i, before)

    def probe_now(self) -> list[ReplicaStatus]:
        """Measure every replica now, in the calling thread (``dbconf check``), and return
        their status (no log: the caller shows it); does not start the probe thread."""
        for i in range(len(self._states)):
            self.probe_one(i, log_change=False)
        return [state.status() for state in self._states]

    def _log_change(self, i: int, before: str) -> None:
        status = self._states[i].status()
        if status.state == before:
            return
        where = f"database {self.database_name!r} {status.name} ({status.url})"
        if status.state == "ejected":
            log.warning("%s ejected: %s", where, status.reason)
        elif status.state == "up":
            log.info("%s is serving reads (lag %s s)", where, status.lag)

    def _start(self, *, wait: bool) -> None:
        """Register with the probe thread on first use; ``wait``: until its first round is
        done, at most ``check_interval`` after the start."""
        if not self._started:
            with self._lock:
                self._require_open()
                if not self._started:
                    self._wait_until = time.monotonic() + self.routing.check_interval
                    self._started = True
                    probe.register(self)
        if wait and not self._first_round.is_set():
            self._first_round.wait(max(0.0, self._wait_until - time.monotonic()))

    # --- routing ---
    def choose(self, *, position: int | None = None, wrote_at: float | None = None) -> int | None:
        """The index of the replica to read from, or None: read from the primary.

        ``position`` / ``wrote_at``: the read must see a write made at that WAL position /
        monotonic time (:meth:`last_write`). Raises :class:`NoReplicaError` when no replica is
        eligible and ``fallback`` is ``error``.
        """
        # (the common case — one replica, eligible, nothing to wait for — is decided by the
        # routed session itself from ``single``, before it calls this)
        states = self._states
        self._require_open()
        self._start(wait=True)
        routing = self.routing
        now = time.monotonic()
        eligible = [
            i
            for i, s in enumerate(states)
            if s.eligible(now, routing.max_lag, routing.check_interval)
        ]
        if not eligible:
            return self._fallback(now)
        self._warned = False
        if position is not None or wrote_at is not None:
            eligible = [i for i in eligible if states[i].has_replayed(position, wrote_at)]
            if not eligible:
                return None  # the primary has the write; not a fallback
        return self._least_loaded(eligible)

    def _fallback(self, now: float) -> int | None:
        routing = self.routing
        reasons = [
            (s.name, s.why_not(now, routing.max_lag, routing.check_interval)) for s in self._states
        ]
        if routing.fallback == "error":
            raise NoReplicaError(self.database_name, reasons)
        with self._lock:
            warn, self._warned = not self._warned, True
        if warn:
            urls = [s.url for s in self._states]
            why = "; ".join(f"{n} ({u}): {r}" for u, (n, r) in zip(urls, reasons, strict=True))
            log.warning(
                "database %r: no replica can serve reads (%s); reading from the primary until "
                "one can (routing.fallback: primary)",
                self.database_name,
                why,
            )
        return None

    def _load(self, i: int) -> int:
        engines = [self._engines[i], *(e.sync_engine for e in self._async[i])]
        return sum(
            getattr(engine.pool, "checkedout", lambda: 0)()
            for engine in engines
            if engine is not None
        )

    def _least_loaded(self, eligible: list[int]) -> int:
        if len(eligible) == 1:
            return eligible[0]
        loads = {i: self._load(i) for i in eligible}
        low = min(loads.values())
        n = len(self._states)
        with self._lock:
            start = self._rr
            chosen = min((i for i in eligible if loads[i] == low), key=lambda i: (i - start) % n)
            self._rr = chosen + 1
        return chosen

    def eject(self, i: int, reason: str) -> None:
        """A routed session's connection to replica ``i`` failed: eject it at once (the probe
        re-admits it after two consecutive good probes)."""
        before = self._states[i].state
        self._states[i].eject(reason)
        self._log_change(i, before)

    def status(self) -> list[ReplicaStatus]:
        """Each replica's state as last probed (starts the probe if needed, without waiting)."""
        if not self._closed:
            self._start(wait=False)
        return [state.status() for state in self._states]

    # --- read your writes ---
    def remember_write(self, position: int | None) -> None:
        """This context (thread / asyncio task) committed a write at ``position`` (None: the
        dialect has no positions; the monotonic time is kept either way)."""
        if self.routing.read_your_writes:
            writes.remember_write(self._key, position)

    def last_write(self) -> tuple[int | None, float] | None:
        """(position, monotonic time) of this context's last write, None if none."""
        key = self.writes_key
        return None if key is None else writes.last_write(key)

    @property
    def writes_key(self) -> int | None:
        """This router's key in :data:`~dbconf.replicas.writes.LAST_WRITES` (None:
        ``read_your_writes`` is off)."""
        return self._key if self.routing.read_your_writes else None

    # --- lifetime ---
    def dispose(self) -> asyncio.Future[Any] | None:
        """Close the idle connections of every replica and probe engine (the async engines
        as :meth:`LoopEngines.dispose_all` says); the router stays usable."""
        return self._dispose(close=False)

    def close(self) -> asyncio.Future[Any] | None:
        """Stop probing and close every engine for good (checked-out connections close when
        returned); a later use raises :class:`RegistryClosedError`."""
        with self._lock:
            self._closed = True
            self.single = None  # every choice takes the checked path (RegistryClosedError)
        self._probes.closed = True
        probe.unregister(self)
        return self._dispose(close=True)

    def _dispose(self, *, close: bool) -> asyncio.Future[Any] | None:
        with self._lock:
            engines = [e for e in self._engines if e is not None]
        engines += self._probes.engines()
        for engine in engines:
            if close:
                event.listen(engine.pool, "checkin", close_returned)
            engine.dispose()
        pending = [f for e in self._async if (f := e.dispose_all(close=close)) is not None]
        if not pending:
            return None
        return pending[0] if len(pending) == 1 else asyncio.gather(*pending)

    @property
    def closed(self) -> bool:
        return self._closed
