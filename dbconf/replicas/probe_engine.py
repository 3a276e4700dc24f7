"""The probe engines of a router's replicas, and one measurement of a replica through them.

A probe engine's configuration is the replica's, with a pool of one connection and short
timeouts.

The probe thread measures every replica in turn (:mod:`dbconf.replicas.probe`), so a replica
that does not answer must not hold it for long: its probe engine connects and runs its query
with ``connect`` and ``statement`` timeouts of ``check_interval`` clamped to [1 s, 5 s]
(libpq's connect timeout is whole seconds, at least 1), whatever the replica's own timeouts
say. The pool keeps one connection (no pre-ping: a probe that fails drops its connection, so the
next probe connects afresh; waiting for it times out as fast). Leak detection, retry settings
and session flavours are dropped: no session ever uses this engine.

Limit: the statement timeout is enforced by the server; a replica whose network silently drops
packets after the connection is made can hold the probe until the OS gives up on the socket
(TCP keepalives); the eligibility rule still makes its data count as older at every check, so
the staleness bound holds, but the other replicas of the process are probed late meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from dbconf.config import DatabaseConfig
from dbconf.dialects.base import Dialect, ReplicaMeasurement
from dbconf.errors import ConfigError, RegistryClosedError
from dbconf.runtime.builder import build_engine
from dbconf.sessions.resilience import first_line

__all__ = [
    "PROBE_TIMEOUT_MAX",
    "PROBE_TIMEOUT_MIN",
    "ProbeEngines",
    "ProbeFailedError",
    "probe_config",
    "probe_timeout",
]

PROBE_TIMEOUT_MIN = 1.0
PROBE_TIMEOUT_MAX = 5.0
_DROPPED = ("leak_detection", "retry", "sessions", "replicas", "routing")


def probe_timeout(check_interval: float) -> float:
    """The probe's connect and statement timeout for a ``check_interval``."""
    return min(max(check_interval, PROBE_TIMEOUT_MIN), PROBE_TIMEOUT_MAX)


def probe_config(
    replica: DatabaseConfig, check_interval: float, *, short_timeouts: bool = True
) -> DatabaseConfig:
    """``replica``'s configuration for its probe engine (see the module doc); without
    ``short_timeouts`` its own timeouts (when they would clash with its ``connect_args``)."""
    data: dict[str, Any] = {
        key: getattr(replica, key) for key in replica.model_fields_set if key not in _DROPPED
    }
    timeout = probe_timeout(check_interval)
    data["pool"] = {
        "class": "queue",
        "size": 1,
        "max_overflow": 0,
        "pre_ping": False,
        "timeout": timeout,
    }
    timeouts = replica.timeouts.model_dump(exclude_unset=True)
    if short_timeouts:
        timeouts = {**timeouts, "connect": timeout, "statement": timeout}
    data["timeouts"] = timeouts
    return DatabaseConfig.model_validate(data)


class ProbeFailedError(Exception):
    """A probe could not measure a replica; ``str()`` says why in one line (password
    masked), starting with ``unreachable:`` when it could not connect."""


class ProbeEngines:
    """The probe engines of one database's replicas, built on first use."""

    def __init__(
        self,
        database_name: str,
        configs: Sequence[DatabaseConfig],
        dialect: Dialect | None,
        check_interval: float,
    ) -> None:
        self.database_name = database_name
        self._configs = configs
        self._dialect = dialect
        self._interval = check_interval
        self._engines: list[sa.Engine | None] = [None] * len(configs)
        self._lock = threading.Lock()
        self.closed = False

    def engine(self, i: int) -> sa.Engine:
        with self._lock:
            if self.closed:
                raise RegistryClosedError(self.database_name)
            engine = self._engines[i]
            if engine is None:
                engine = self._engines[i] = self._build(i)
            return engine

    def _build(self, i: int) -> sa.Engine:
        name, cfg = f"{self.database_name}.replicas[{i}].probe", self._configs[i]
        try:
            return build_engine(name, probe_config(cfg, self._interval))
        except ConfigError:  # its connect_args set the timeouts: keep them
            return build_engine(name, probe_config(cfg, self._interval, short_timeouts=False))

    def measure(self, i: int) -> ReplicaMeasurement:
        """Measure replica ``i``; raises :class:`ProbeFailedError`."""
        measure = self._dialect.measure_replica if self._dialect is not None else None
        if measure is None:
            backend = self._configs[i].backend
            raise ProbeFailedError(f"probe failed: dbconf cannot measure {backend} replicas yet")
        engine = self.engine(i)
        try:
            conn = engine.connect()
        except Exception as exc:
            raise ProbeFailedError(f"unreachable: {self._line(i, exc)}") from exc
        try:
            return measure(conn)
        except Exception as exc:
            conn.invalidate()  # a fresh connection next time
            raise ProbeFailedError(f"probe failed: {self._line(i, exc)}") from exc
        finally:
            conn.close()

    def _line(self, i: int, exc: BaseException) -> str:
        """The driver's error in one line, the replica's password masked."""
        orig = getattr(exc, "orig", None) or exc
        password = self._configs[i].sqlalchemy_url.password
        return f"{type(orig).__name__}: {first_line(orig, str(password) if password else None)}"

    def engines(self) -> list[sa.Engine]:
        """The probe engines built so far."""
        with self._lock:
            return [e for e in self._engines if e is not None]
