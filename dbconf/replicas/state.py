"""What dbconf knows about each read replica, and the rule that says whether it may serve.

Each replica has one :class:`ReplicaState`, written by the probe thread (:mod:`.probe`) and by
routed sessions that saw its connection fail (:meth:`ReplicaState.eject`), read by
:meth:`Router.choose <dbconf.replicas.router.Router.choose>`; a lock guards it.

States: ``unknown`` (not probed yet), ``up`` (may serve) and ``ejected``. A bad probe (lag
over ``max_lag``, unreachable, not replicating) or a failed connection ejects a replica **at
once**; an ejected replica is re-admitted after **two consecutive good probes** (one good
probe could be a blip between two bad ones). A replica never probed becomes ``up`` on its
first good probe.

**Eligibility** (:meth:`ReplicaState.eligible`): ``up`` and ``lag + (now - measured_at) <=
max_lag + check_interval``. ``lag`` was true at ``measured_at`` (the monotonic time the probe
started), so ``lag + (now - measured_at)`` bounds how old the replica's data can be now even if
it stopped replaying right after the probe. A probe that is late (a stalled probe thread, a
slow replica) therefore makes the replica ineligible by itself: a read never sees data older
than ``max_lag + check_interval``, whatever the probe thread does.

**Lag after a quiet period.** A measured lag of 0 (PostgreSQL: the standby has replayed all it
received) means its data was complete when that probe started. The next measurement may read
a large lag only because the primary was quiet: PostgreSQL's ``now() -
pg_last_xact_replay_timestamp()`` counts from the last transaction replayed, however long
ago, as soon as new WAL is received and not yet replayed. Since the data was complete at the
last caught-up probe, the lag recorded is the smaller of the two bounds: the measured lag and
the time since that probe started. A quiet primary's first write then does not eject healthy
replicas, while a replica that stops replaying still shows a lag growing with time.
"""

from __future__ import annotations

import datetime
import math
import threading
from dataclasses import dataclass
from typing import Literal

from dbconf.dialects.base import ReplicaMeasurement

__all__ = ["GOOD_PROBES_TO_READMIT", "ReplicaState", "ReplicaStatus"]

# consecutive good probes an ejected replica needs to serve again
GOOD_PROBES_TO_READMIT = 2

State = Literal["up", "ejected", "unknown"]


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica as :meth:`Database.replica_status() <dbconf.Database.replica_status>` shows
    it."""

    name: str  # "replicas[0]"
    url: str  # masked
    state: State
    lag: float | None  # seconds behind the primary at the last probe; None: unknown
    reason: str | None  # why it is ejected / unknown; None when up
    checked_at: datetime.datetime | None  # wall-clock time (UTC) of the last probe
    position: int | None  # replayed position (PostgreSQL LSN) at the last probe


def _seconds(value: float) -> str:
    return f"{value:.3g} s"


class ReplicaState:
    """The mutable, lock-protected state of one replica (see the module doc)."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new state; also in a forked child, where the lock may be held
        by a thread of the parent that does not exist here)."""
        self._lock = threading.Lock()
        self.state: State = "unknown"
        self.lag: float | None = None
        self.position: int | None = None
        self.reason: str | None = "not probed yet"
        self.measured_at: float | None = None  # monotonic
        self.checked_at: datetime.datetime | None = None
        self.good = 0  # consecutive good probes while ejected
        self._ejected_for = ""
        self._caught_up_at: float | None = None  # monotonic start of the last lag-0 probe
        # monotonic time until which it may serve (the eligibility rule solved for now, kept
        # by every change, read without the lock by Router.choose's fast path); -inf: not up
        self.serve_until = -math.inf

    def record(
        self,
        measurement: ReplicaMeasurement,
        *,
        measured_at: float,
        max_lag: float,
        check_interval: float,
    ) -> None:
        """A probe's result (``measured_at``: monotonic time the probe started)."""
        lag = measurement.lag
        reason = measurement.reason
        if reason is None and lag is None:
            reason = "not replicating"
        with self._lock:
            if reason is not None or lag is None:
                self._caught_up_at = None
            elif lag == 0:
                self._caught_up_at = measured_at
            elif self._caught_up_at is not None:
                # its data was complete when the last caught-up probe started (module doc)
                lag = min(lag, measured_at - self._caught_up_at)
            if reason is None and lag is not None and lag > max_lag:
                reason = f"lag {_seconds(lag)} > max_lag {_seconds(max_lag)}"
            self.lag = lag
            self.position = measurement.position
            self.measured_at = measured_at
            self.checked_at = datetime.datetime.now(datetime.timezone.utc)
            if reason is not None:
                self._eject(reason)
            elif self.state == "up":
                self.reason = None
            elif self.state == "unknown":
                self.state, self.reason, self.good = "up", None, 0
            else:
                self.good += 1
                if self.good >= GOOD_PROBES_TO_READMIT:
                    self.state, self.reason, self.good = "up", None, 0
                else:
                    self.reason = (
                        f"{self._ejected_for} (re-admitted after {GOOD_PROBES_TO_READMIT} "
                        f"good probes in a row: {self.good} so far)"
                    )
            self.serve_until = (
                measured_at - lag + max_lag + check_interval
                if self.state == "up" and lag is not None
                else -math.inf
            )

    def failed(self, reason: str) -> None:
        """A probe that could not measure (unreachable, timed out): ejected at once."""
        with self._lock:
            self.lag = None
            self.measured_at = None
            self._caught_up_at = None
            self.checked_at = datetime.datetime.now(datetime.timezone.utc)
            self._eject(reason)

    def eject(self, reason: str) -> None:
        """A routed session's connection to this replica failed: ejected at once."""
        with self._lock:
            self._eject(reason)

    def _eject(self, reason: str) -> None:
        self.state = "ejected"
        self.serve_until = -math.inf
        self._caught_up_at = None
        self._ejected_for = reason
        self.reason = reason
        self.good = 0

    def eligible(self, now: float, max_lag: float, check_interval: float) -> bool:
        """Whether this replica may serve a read at monotonic time ``now`` (module doc)."""
        with self._lock:
            if self.state != "up" or self.lag is None or self.measured_at is None:
                return False
            return self.lag + (now - self.measured_at) <= max_lag + check_interval

    def has_replayed(self, position: int | None, wrote_at: float | None) -> bool:
        """Whether this replica's data, as of its last probe, includes a write made at
        ``position`` (when both sides know positions) or at monotonic time ``wrote_at``."""
        with self._lock:
            if position is not None and self.position is not None:
                return self.position >= position
            if wrote_at is None:
                return position is None
            if self.lag is None or self.measured_at is None:
                return False
            return self.measured_at - self.lag > wrote_at

    def why_not(self, now: float, max_lag: float, check_interval: float) -> str:
        """Why this replica is not eligible now (for errors and the status)."""
        with self._lock:
            if self.state != "up":
                return self.reason or self.state
            if self.lag is None or self.measured_at is None:
                return "no measurement"
            age = now - self.measured_at
            return (
                f"last probe {_seconds(age)} ago with lag {_seconds(self.lag)}: its data may be "
                f"older than max_lag + check_interval ({_seconds(max_lag + check_interval)})"
            )

    def status(self) -> ReplicaStatus:
        with self._lock:
            return ReplicaStatus(
                name=self.name,
                url=self.url,
                state=self.state,
                lag=self.lag,
                reason=self.reason,
                checked_at=self.checked_at,
                position=self.position,
            )
