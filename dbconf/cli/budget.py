"""Connection budget: can the profile's pools open more connections than the server allows?

For each server (same backend family, host and port) the budget is the sum, over the
profile's databases on that server, of the most connections one pool can hold, times the
profile's ``workers`` (processes that each build their own pools: gunicorn workers, Celery
prefork children…). Per pool class:

- ``queue`` (the default for server databases): ``size + max_overflow``, SQLAlchemy's
  defaults 5 + 10 when unset; ``max_overflow: -1`` has no cap → unbounded;
- ``static``: 1 (one connection shared by every thread);
- ``null``: one connection per concurrent session, no cap → unbounded;
- ``singleton``: one connection per thread, no cap from the pool → unbounded.

The server's limit is what non-superusers can use: PostgreSQL ``max_connections`` minus
``superuser_reserved_connections`` (and ``reserved_connections`` on PostgreSQL 16+);
MariaDB/MySQL ``@@max_connections``. SQLite databases have no server and are not counted, nor
are databases behind a declared ``pooler:``: their pools connect to PgBouncer, whose own
``max_client_conn`` and pool sizes (in pgbouncer.ini) bound them, not ``max_connections``.

Verdicts (``dbconf check``): ``ERROR`` (exit 1) when one worker's bounded pools alone can
exceed the limit, since that fails even with ``workers: 1``; ``WARNING`` (exit unchanged) when
all workers together can exceed it, or when a pool is unbounded (the total cannot be
bounded); ``ok`` otherwise. Other clients of the same server are not counted: the budget is
an upper bound for this profile only, so leave room for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa

from dbconf.config import DatabaseConfig, ProfileConfig
from dbconf.dialects import dialect_for

if TYPE_CHECKING:
    from dbconf.runtime.registry import DatabaseReport, Registry

__all__ = [
    "BudgetReport",
    "PoolBudget",
    "ServerBudget",
    "ServerLimit",
    "check_budget",
    "compute_budget",
    "evaluate",
    "pool_budget",
    "query_limit",
]

QUEUE_DEFAULT_SIZE = 5
QUEUE_DEFAULT_OVERFLOW = 10


@dataclass(frozen=True)
class PoolBudget:
    """The most connections one pool (one worker) can hold; ``None`` means no cap."""

    database: str
    connections: int | None
    why: str


@dataclass(frozen=True)
class ServerBudget:
    """The profile's pools on one server."""

    server: str
    family: str
    workers: int
    pools: tuple[PoolBudget, ...]

    @property
    def per_worker(self) -> int:
        """Sum of the bounded pools of one worker (unbounded ones are listed separately)."""
        return sum(p.connections for p in self.pools if p.connections is not None)

    @property
    def total(self) -> int:
        return self.per_worker * self.workers

    @property
    def unbounded(self) -> tuple[str, ...]:
        return tuple(p.database for p in self.pools if p.connections is None)


@dataclass(frozen=True)
class ServerLimit:
    """What the server allows: ``max_connections`` minus the slots reserved for superusers."""

    max_connections: int
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved

    def describe(self) -> str:
        if not self.reserved:
            return f"max_connections {self.max_connections}"
        return f"max_connections {self.max_connections} - {self.reserved} reserved"


@dataclass(frozen=True)
class BudgetReport:
    """The verdict for one server; ``level`` is ``ok``, ``warning``, ``error`` or ``unknown``."""

    budget: ServerBudget
    limit: ServerLimit | None
    level: str
    messages: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """(level, text) pairs: each finding with its own level."""

    @property
    def failed(self) -> bool:
        return self.level == "error"

    def render(self) -> str:
        b = self.budget
        pools = " + ".join(
            f"{p.database} {p.connections if p.connections is not None else 'unbounded'}"
            for p in b.pools
        )
        worker = "worker" if b.workers == 1 else "workers"
        more = "+" if b.unbounded else ""
        head = f"budget {b.server}: {b.workers} {worker} x ({pools}) = {b.total}{more} connections"
        if self.limit is not None:
            head += f", server allows {self.limit.available} ({self.limit.describe()})"
        lines = [f"{head}: {self.level}"]
        lines += [f"  {level.upper()}: {text}" for level, text in self.messages]
        return "\n".join(lines)


def pool_budget(name: str, db: DatabaseConfig) -> PoolBudget:
    """The most connections the pool of ``db`` can hold in one process."""
    pool = db.pool
    cls = pool.class_ or "queue"
    if cls == "static":
        return PoolBudget(name, 1, "static pool: one shared connection")
    if cls == "null":
        return PoolBudget(name, None, "null pool: one connection per concurrent session, no cap")
    if cls == "singleton":
        return PoolBudget(name, None, "singleton pool: one connection per thread, no cap")
    size = pool.size if pool.size is not None else QUEUE_DEFAULT_SIZE
    overflow = pool.max_overflow if pool.max_overflow is not None else QUEUE_DEFAULT_OVERFLOW
    if overflow < 0:
        return PoolBudget(name, None, "pool.max_overflow -1: no cap on overflow connections")
    return PoolBudget(name, size + overflow, f"pool.size {size} + pool.max_overflow {overflow}")


def _server_of(db: DatabaseConfig) -> tuple[str, str] | None:
    dialect = dialect_for(db.backend)
    if dialect is None or dialect.server_limit is None:
        return None  # SQLite (no server) or a dialect dbconf does not know the limits of
    if db.pooler is not None:
        return None  # PgBouncer's clients: bounded by pgbouncer.ini, not max_connections
    url = db.sqlalchemy_url
    host = url.host or "localhost"
    port = url.port or dialect.default_port
    return dialect.name, f"{dialect.name}://{host}:{port}"


def compute_budget(config: ProfileConfig) -> list[ServerBudget]:
    """Pure: group the profile's databases by server and size each group's pools."""
    groups: dict[str, tuple[str, list[PoolBudget]]] = {}
    for name, db in config.databases.items():
        server = _server_of(db)
        if server is None:
            continue
        family, key = server
        groups.setdefault(key, (family, []))[1].append(pool_budget(name, db))
    return [
        ServerBudget(key, family, config.workers, tuple(pools))
        for key, (family, pools) in groups.items()
    ]


def evaluate(budget: ServerBudget, limit: ServerLimit) -> BudgetReport:
    """Pure: the verdict for one server (see the module docstring for the levels)."""
    fix = (
        "lower pool.size/pool.max_overflow or workers, or raise the server's max_connections "
        "(or put a pooler such as PgBouncer in front)"
    )
    available = limit.available
    messages: list[tuple[str, str]] = []
    level = "ok"
    if budget.per_worker > available:
        level = "error"
        messages.append(
            (
                level,
                f"one worker's pools can open {budget.per_worker} connections to {budget.server} "
                f"but the server allows {available}; {fix}",
            )
        )
    elif budget.total > available:
        level = "warning"
        messages.append(
            (
                level,
                f"{budget.workers} workers can open up to {budget.total} connections to "
                f"{budget.server} but the server allows {available}; under load the last ones "
                f"fail with 'too many connections'; {fix}",
            )
        )
    for pool in budget.pools:
        if pool.connections is None:
            if level == "ok":
                level = "warning"
            messages.append(
                (
                    "warning",
                    f"database {pool.database!r} has no connection cap ({pool.why}), so the "
                    f"budget cannot be bounded; the capped pools need {budget.total} "
                    f"of {available}",
                )
            )
    return BudgetReport(budget, limit, level, tuple(messages))


def query_limit(conn: sa.Connection) -> ServerLimit:
    """Read the server's connection limit through ``conn`` (any user may read these)."""
    backend = conn.dialect.name
    dialect = dialect_for(backend)
    if dialect is not None and dialect.server_limit is not None:
        return ServerLimit(*dialect.server_limit(conn))
    raise ValueError(f"no connection limit known for {backend}")


def check_budget(registry: Registry, reports: Sequence[DatabaseReport]) -> list[BudgetReport]:
    """For each server with a checked database, query its limit and evaluate the budget.

    ``reports`` are those of :meth:`Registry.check`; the limit is read through a database
    that answered. A server whose checked databases are all unreachable gets level
    ``unknown`` (the unreachable report already says why); so does a failed query.
    Servers with no checked database (``dbconf check -d other``) are left out.
    """
    checked = {r.name for r in reports}
    ok = [r.name for r in reports if r.ok]
    out: list[BudgetReport] = []
    for budget in compute_budget(registry.config):
        on_server = [p.database for p in budget.pools]
        if not checked.intersection(on_server):
            continue
        names = [name for name in ok if name in on_server]
        if not names:
            out.append(
                BudgetReport(budget, None, "unknown", (("unknown", "no reachable database on it"),))
            )
            continue
        try:
            with registry[names[0]].engine.connect() as conn:
                limit = query_limit(conn)
        except Exception as e:  # report, never raise: check must print every finding
            reason = f"could not read max_connections ({type(e).__name__})"
            out.append(BudgetReport(budget, None, "unknown", (("unknown", reason),)))
            continue
        out.append(evaluate(budget, limit))
    return out
