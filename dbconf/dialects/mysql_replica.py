"""MariaDB and MySQL read replicas: how far behind a replica is, and read-your-writes positions.

**Lag.** ``SHOW SLAVE STATUS`` on the replica (``SHOW REPLICA STATUS`` on MySQL >= 8.0.22,
whose columns say Source/Replica for Master/Slave): ``Seconds_Behind_Master`` is the lag in
whole seconds; NULL means the replica is not replicating (its SQL thread is stopped, or its
I/O thread is not connected to the primary), and so does any thread not running ``Yes``: the
measurement then has no lag and a reason built from ``Slave_IO_Running``,
``Slave_SQL_Running``, ``Last_IO_Error`` and ``Last_SQL_Error``. No row: the server is not a
replica. ``Seconds_Behind_Master`` counts whole seconds (truncated) from the primary's
timestamp of the event being applied (a delayed replica's ``MASTER_DELAY`` included), so the
lag recorded is a bound on how old the replica's data is, as the router needs it: 0 when the
SQL thread has applied everything the I/O thread received (``Exec_Master_Log_Pos`` =
``Read_Master_Log_Pos`` in the same file; as PostgreSQL's receive LSN = replay LSN), else
``Seconds_Behind_Master`` + 1 (a replica the server shows 0 s behind while it applies an event
may be up to a second behind). MariaDB's multi-source replication is not covered:
``SHOW SLAVE STATUS`` shows the default (unnamed) connection only. Reading it needs MariaDB's
``SLAVE MONITOR`` (or ``SUPER``) privilege, MySQL's ``REPLICATION CLIENT``: without it the
measurement says so (it is not a connection failure).

**Positions (MariaDB GTID).** A MariaDB primary with a binary log numbers its transactions
``domain-server-seq_no``, ``seq_no`` increasing within a domain. After a commit the primary's
``@@gtid_binlog_pos`` holds, per domain, the last GTID written to its binary log (this
commit's or a later one), and a replica's ``@@gtid_slave_pos`` the last GTID its replication
threads applied. MariaDB documents comparing the two per domain: ``MASTER_GTID_WAIT()`` waits
until ``gtid_slave_pos`` has "the same or higher seq_no within all replication domains" of a
``gtid_binlog_pos`` taken on the primary, and the replica has then caught up with it. With one
domain (the default setup, ``gtid_domain_id`` 0 everywhere) the position is that domain's
``seq_no`` as an int: a replica whose measured position is >= a write's position has applied
that write (tests/test_replicas_mariadb.py proves it against a real pair). With several
domains there is no single order: the position is None and read-your-writes goes by time
(measured lag), as on MySQL, whose GTID sets (``uuid:1-42,…``) are not one number, and on a
primary without a binary log (empty ``gtid_binlog_pos``). Known limit: ``RESET MASTER`` on the
primary restarts ``seq_no`` at 1, so positions taken before and after it do not compare.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from dbconf.dialects.base import ReplicaMeasurement

__all__ = [
    "NO_STATUS_PRIVILEGE",
    "applied_all_received",
    "gtid_seq_no",
    "lag_bound",
    "measure_replica",
    "not_replicating_reason",
    "write_position",
]

# ER_SPECIFIC_ACCESS_DENIED_ERROR: "you need (at least one of) the SUPER, SLAVE MONITOR
# privilege(s)" (MySQL: REPLICATION CLIENT)
NO_STATUS_PRIVILEGE = frozenset({1227})


def gtid_seq_no(gtid_list: str | None) -> int | None:
    """The ``seq_no`` of a one-domain GTID list (``'0-1-42'`` → 42); None when it is empty or
    has several domains (no single order)."""
    gtids = [part.strip() for part in (gtid_list or "").split(",") if part.strip()]
    if len(gtids) != 1:
        return None
    parts = gtids[0].split("-")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[2])


def _is_mariadb(conn: sa.Connection) -> bool:
    return bool(getattr(conn.dialect, "is_mariadb", False))


def _status_statement(conn: sa.Connection) -> str:
    if _is_mariadb(conn):
        return "SHOW SLAVE STATUS"  # every MariaDB; SHOW REPLICA STATUS only since 10.5.1
    version = tuple(getattr(conn.dialect, "server_version_info", None) or ())
    # MySQL 8.4 removed SHOW SLAVE STATUS; SHOW REPLICA STATUS exists since 8.0.22
    return "SHOW REPLICA STATUS" if version >= (8, 0, 22) else "SHOW SLAVE STATUS"


def _field(row: Mapping[str, Any], name: str) -> Any:
    """A status column by its MariaDB name, or by MySQL's newer name (Source, Replica)."""
    if name in row:
        return row[name]
    return row.get(name.replace("Master", "Source").replace("Slave", "Replica"))


def _error_code(exc: sa.exc.DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def not_replicating_reason(row: Mapping[str, Any]) -> str:
    """Why a replica whose status row this is does not replicate (for ejection messages)."""
    io, sql = _field(row, "Slave_IO_Running"), _field(row, "Slave_SQL_Running")
    lag = _field(row, "Seconds_Behind_Master")
    causes = []
    if sql != "Yes":
        causes.append(f"its SQL thread is not running (Slave_SQL_Running: {sql})")
    if io != "Yes":
        causes.append(f"its I/O thread is not connected to the primary (Slave_IO_Running: {io})")
    if not causes or lag is None:
        causes.append("Seconds_Behind_Master is NULL")
    for column in ("Last_SQL_Error", "Last_IO_Error"):
        error = _field(row, column)
        if error:
            causes.append(f"{column}: {' '.join(str(error).split())}")
    return "not replicating: " + "; ".join(causes)


def measure_replica(conn: sa.Connection) -> ReplicaMeasurement:
    """Lag (seconds), applied GTID position (MariaDB, one domain) and why not usable, measured
    through a connection to the replica."""
    statement = _status_statement(conn)
    try:
        row = conn.execute(sa.text(statement)).mappings().first()
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated or _error_code(exc) not in NO_STATUS_PRIVILEGE:
            raise
        message = " ".join(str(getattr(exc.orig, "args", (0, exc))[-1]).split())
        grant = "SLAVE MONITOR" if _is_mariadb(conn) else "REPLICATION CLIENT"
        return ReplicaMeasurement(
            None,
            None,
            f"cannot read its replication status ({statement}: {message}); grant {grant} "
            "to this replica's user",
        )
    if row is None:
        return ReplicaMeasurement(None, None, f"not a replica ({statement} is empty)")
    status: dict[str, Any] = {str(k): v for k, v in row.items()}
    position = None
    if _is_mariadb(conn):
        position = gtid_seq_no(conn.execute(sa.text("SELECT @@gtid_slave_pos")).scalar())
    behind = _field(status, "Seconds_Behind_Master")
    running = all(_field(status, f"Slave_{t}_Running") == "Yes" for t in ("IO", "SQL"))
    if behind is None or not running:
        return ReplicaMeasurement(None, position, not_replicating_reason(status))
    return ReplicaMeasurement(lag_bound(status, int(behind)), position)


def applied_all_received(status: Mapping[str, Any]) -> bool:
    """Whether the SQL thread has applied everything the I/O thread received (the same binlog
    file and position of the primary)."""
    received = (_field(status, "Master_Log_File"), _field(status, "Read_Master_Log_Pos"))
    applied = (_field(status, "Relay_Master_Log_File"), _field(status, "Exec_Master_Log_Pos"))
    return received == applied


def lag_bound(status: Mapping[str, Any], behind: int) -> float:
    """How old the replica's data may be, in seconds (module doc): 0 when it has applied all
    it received, else ``Seconds_Behind_Master`` + 1 (the server truncates to whole seconds)."""
    if applied_all_received(status):
        return 0.0
    return float(max(behind, 0) + 1)


def write_position(conn: sa.Connection) -> int | None:
    """The primary's GTID ``seq_no`` after a commit (MariaDB, one domain; module doc): a
    replica whose measured position has reached it has applied that commit. Read on any
    connection to the primary (``@@gtid_binlog_pos`` is global). None: no single position
    (MySQL, several domains, no binary log): read-your-writes goes by time."""
    if not _is_mariadb(conn):
        return None
    return gtid_seq_no(conn.execute(sa.text("SELECT @@gtid_binlog_pos")).scalar())
