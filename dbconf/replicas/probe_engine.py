"""The configuration of a replica's probe engine: the replica's, with a pool of one connection
and short timeouts.

The probe thread measures every replica in turn (:mod:`dbconf.replicas.probe`), so a replica
that does not answer must not hold it for long: its probe engine connects and runs its query
with ``connect`` and ``statement`` timeouts of ``check_interval`` clamped to [1 s, 5 s]
(libpq's connect timeout is whole seconds, at least 1), whatever the replica's own timeouts
say. The pool keeps one connection (no pre-ping: a failed probe disposes the pool, so the next
probe connects afresh). Leak detection, retry settings and session flavours are dropped: no
session ever uses this engine.

Limit: the statement timeout is enforced by the server; a replica whose network silently drops
packets after the connection is made can hold the probe until the OS gives up on the socket
(TCP keepalives); the eligibility rule still makes its data count as older at every check, so
the staleness bound holds, but the other replicas of the process are probed late meanwhile.
"""

from __future__ import annotations

from typing import Any

from dbconf.config import DatabaseConfig

__all__ = ["PROBE_TIMEOUT_MAX", "PROBE_TIMEOUT_MIN", "probe_config", "probe_timeout"]

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
    data["pool"] = {"class": "queue", "size": 1, "max_overflow": 0, "pre_ping": False}
    timeout = probe_timeout(check_interval)
    timeouts = replica.timeouts.model_dump(exclude_unset=True)
    if short_timeouts:
        timeouts = {**timeouts, "connect": timeout, "statement": timeout}
    data["timeouts"] = timeouts
    return DatabaseConfig.model_validate(data)
