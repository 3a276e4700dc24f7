"""Fork safety on real PostgreSQL: a forked child never talks on a socket of its parent.

The fault: a parent with a warm pool (connections checked in) forks 4 children that each run
100 scopes while the parent keeps going; without dbconf's at-fork hook the children would
check out the parent's connections and the server would see interleaved protocol messages
from several processes on one session. The unit tests of the hook are in tests/test_forking.py.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import time
import traceback
from contextlib import ExitStack
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from dbconf.config import ProfileConfig
from dbconf.pooling import forking
from dbconf.runtime.registry import Database, Registry

from .conftest import FaultStats, SecretWatch

pytestmark = pytest.mark.faults

CHILDREN = 4
SCOPES_PER_CHILD = 100
WARM = 4
DEADLINE_S = 60.0
BACKEND_PID = sa.text("SELECT pg_backend_pid()")


def _registry(url: str, app_name: str, pre_ping: bool) -> Registry:
    config = ProfileConfig.model_validate(
        {
            "databases": {
                "main": {
                    "url": url,
                    "application_name": app_name,
                    "pool": {"size": WARM, "max_overflow": 0, "timeout": 10, "pre_ping": pre_ping},
                }
            }
        }
    )
    return Registry(config, profile="fork")


def _scope_pid(db: Database) -> int:
    with db.session() as session:
        return int(session.execute(BACKEND_PID).scalar_one())


def _child(db: Database, write_fd: int) -> None:
    """Runs in the forked child: never returns (os._exit), always reports through the pipe."""
    code = 1
    try:
        gc.collect()  # the parent's pool is unreachable now: freeing it must not close its sockets
        pids = sorted({_scope_pid(db) for _ in range(SCOPES_PER_CHILD)})
        result: dict[str, Any] = {"scopes": SCOPES_PER_CHILD, "pids": pids}
        code = 0
    except BaseException:
        result = {"error": traceback.format_exc()}
    try:
        os.write(write_fd, json.dumps(result).encode() + b"\n")
    finally:
        os._exit(code)


@pytest.mark.parametrize("pre_ping", [True, False], ids=["pre_ping", "no_pre_ping"])
def test_forked_children_get_their_own_connections(
    pg_app_url: str,
    pg_faults: sa.Engine,
    app_name: str,
    pre_ping: bool,
    fault_stats: FaultStats,
    secret_watch: SecretWatch,
) -> None:
    """Fault: fork x4 from a parent with a warm pool; each child runs 100 scopes while the
    parent keeps running scopes. Guarantee: no error anywhere; every child runs on backends of
    its own (distinct from each other's and from the parent's); afterwards the parent's
    original connections still work, without a reconnect."""
    registry = _registry(pg_app_url, app_name, pre_ping)
    db = registry["main"]
    connects: list[int] = []
    event.listen(db.engine, "connect", lambda *_: connects.append(os.getpid()))
    assert db.engine in forking.registered_engines()

    # Warm pool: WARM connections opened at once, then all checked in.
    with ExitStack() as stack:
        sessions = [stack.enter_context(db.session()) for _ in range(WARM)]
        warm = {int(s.execute(BACKEND_PID).scalar_one()) for s in sessions}
    assert len(warm) == WARM
    assert db.engine.pool.checkedin() == WARM  # type: ignore[attr-defined]

    children: dict[int, int] = {}  # pid → read end of its pipe
    for _ in range(CHILDREN):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            os.close(read_fd)
            _child(db, write_fd)
        os.close(write_fd)
        children[pid] = read_fd

    results: dict[int, dict[str, Any]] = {}
    buffers = {pid: b"" for pid in children}
    parent_pids: set[int] = set()
    parent_scopes = 0
    parent_errors: list[BaseException] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(results) < CHILDREN and time.monotonic() < deadline:
            try:  # the parent keeps working while the children run
                parent_pids.add(_scope_pid(db))
                parent_scopes += 1
            except Exception as e:
                parent_errors.append(secret_watch.saw(e))
            waiting = {fd: pid for pid, fd in children.items() if pid not in results}
            ready, _, _ = select.select(list(waiting), [], [], 0)
            for fd in ready:
                pid = waiting[fd]
                chunk = os.read(fd, 65536)
                buffers[pid] += chunk
                if not chunk or buffers[pid].endswith(b"\n"):
                    text = buffers[pid].decode() or '{"error": "child exited without a report"}'
                    results[pid] = json.loads(text)
    finally:
        hung = [pid for pid in children if pid not in results]
        for pid in hung:
            os.kill(pid, signal.SIGKILL)
        statuses = {}
        for pid, fd in children.items():
            statuses[pid] = os.waitpid(pid, 0)[1]  # reaped: they reported or were killed
            os.close(fd)

    errors = {pid: r["error"] for pid, r in results.items() if "error" in r}
    secret_watch.errors += list(errors.values())  # the children's tracebacks, as text
    child_pids = [set(r.get("pids", ())) for r in results.values()]
    child_scopes = sum(r.get("scopes", 0) for r in results.values())
    fault_stats.record(
        f"fork x{CHILDREN}, warm pool ({'pre_ping' if pre_ping else 'no pre_ping'})",
        "os.fork() with 4 pooled conns",
        scopes=2 * WARM + parent_scopes + child_scopes,
        faults=CHILDREN,
        errors=len(errors) + len(hung) + len(parent_errors),
        parent_scopes=parent_scopes,
        child_scopes=child_scopes,
        distinct_backends=len(set().union(*child_pids, parent_pids)),
        child_backends=sum(len(p) for p in child_pids),
    )

    assert not hung, f"children {hung} did not report within {DEADLINE_S:.0f}s (killed)"
    assert not errors, f"errors in children: {errors}"
    assert all(os.waitstatus_to_exitcode(s) == 0 for s in statuses.values()), statuses
    assert not parent_errors, parent_errors
    assert parent_scopes > 0

    assert all(r["scopes"] == SCOPES_PER_CHILD for r in results.values())
    for i, pids in enumerate(child_pids):
        assert pids, "a child ran no scope"
        assert not pids & (warm | parent_pids), "a child used one of the parent's connections"
        for other in child_pids[i + 1 :]:
            assert not pids & other, "two children shared a backend"

    # After the children are gone the parent's original connections still work: same
    # backends, no reconnect (pre-ping would hide a broken one, so count connects too).
    with ExitStack() as stack:
        sessions = [stack.enter_context(db.session()) for _ in range(WARM)]
        after = {int(s.execute(BACKEND_PID).scalar_one()) for s in sessions}
        assert all(s.execute(sa.text("SELECT 1")).scalar_one() == 1 for s in sessions)
    assert after == warm
    assert connects == [os.getpid()] * WARM
    assert parent_pids <= warm
    registry.dispose()
