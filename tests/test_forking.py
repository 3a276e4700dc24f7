"""Fork safety, the hook's unit tests. The fault test (a parent with a warm pool forks 4
children that run scopes while the parent keeps going) is tests/faults/test_fault_fork.py.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import sqlalchemy as sa

from dbconf.pooling import forking


def test_register_engine_is_weak_and_idempotent() -> None:
    gc.collect()
    before = len(forking.registered_engines())
    engine = sa.create_engine("sqlite://")
    assert forking.register_engine(engine) is engine
    forking.register_engine(engine)
    assert forking.registered_engines().count(engine) == 1
    assert len(forking.registered_engines()) == before + 1
    assert forking._hook_registered
    del engine
    gc.collect()
    assert len(forking.registered_engines()) == before  # a weak reference only


def test_dispose_in_child_gives_fresh_pool_without_closing(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook itself, without a fork: the old pool's connections are left untouched.

    The hook runs on a private engine set (and lock, and no other at-fork resets): called on
    the real ones it would swap the pools of every live engine of other tests in this process
    and reset dbconf's other process-wide state."""
    monkeypatch.setattr(forking, "_engines", weakref.WeakSet())
    monkeypatch.setattr(forking, "_lock", forking._lock)  # the hook replaces it: restore after
    monkeypatch.setattr(forking, "_child_calls", [], raising=False)  # other process-wide resets
    engine = forking.register_engine(sa.create_engine(pg_url, pool_size=1, max_overflow=0))
    assert forking.registered_engines() == [engine]
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        old_pool = engine.pool
        record = old_pool._pool.queue[0]  # type: ignore[attr-defined]
        dbapi_conn = record.dbapi_connection
        forking._after_fork_in_child()
        assert engine.pool is not old_pool
        assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]
        assert not dbapi_conn.closed  # never closed: it belongs to the parent
        dbapi_conn.close()
    finally:
        engine.dispose()
