"""Leak detection's process-wide state: none at import, one fork hook, a working child.

Each check runs in a fresh interpreter (``sys.executable -c``), so what ``import dbconf``
registers is observed from a clean process with ``os.register_at_fork`` spied (counting
only calls made from dbconf's modules: the standard library registers its own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SPY = """
import json, os, sys
calls = []
_real = os.register_at_fork
def _spy(**kwargs):
    module = sys._getframe(1).f_globals.get("__name__", "?")
    if module.split(".")[0] == "dbconf":  # not random, logging, … which register their own
        calls.append([module, *sorted(kwargs)])
    return _real(**kwargs)
os.register_at_fork = _spy
"""


def run(code: str) -> dict[str, object]:
    """Run ``SPY + code`` in a fresh interpreter; its last stdout line is a JSON object."""
    proc = subprocess.run(
        [sys.executable, "-c", SPY + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_import_registers_no_fork_hook_and_starts_nothing() -> None:
    out = run(
        """
        import threading
        import dbconf, dbconf.pooling.leaks, dbconf.pooling.forking
        print(json.dumps({
            "calls": calls,
            "monitor": dbconf.pooling.leaks._monitor is not None,
            "threads": [t.name for t in threading.enumerate()],
        }))
        """
    )
    assert out == {"calls": [], "monitor": False, "threads": ["MainThread"]}


def test_engine_with_leak_detection_registers_one_hook(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    out = run(
        f"""
        from dbconf.config import ProfileConfig
        from dbconf.runtime.registry import Registry
        dbs = {{
            "a": {{"url": "{url}", "leak_detection": {{"threshold": "30s"}}}},
            "b": {{"url": "{url}", "leak_detection": {{"long_transaction": "30s"}}}},
            "c": {{"url": "{url}"}},
        }}
        reg = Registry(ProfileConfig.model_validate({{"databases": dbs}}))
        for name in dbs:
            reg[name].engine
        print(json.dumps({{"calls": calls}}))
        """
    )
    assert out == {
        "calls": [["dbconf.pooling.forking", "after_in_child"]]
    }  # shared with the monitor


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_a_fresh_monitor_that_warns(tmp_path: Path) -> None:
    """The parent's monitor thread is running at fork time; the child gets a new lock, a new
    event and no inherited checkouts, starts its own thread and still warns."""
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    out = run(
        f"""
        import logging, threading, time
        import sqlalchemy as sa
        from dbconf.config import ProfileConfig
        from dbconf.runtime.registry import Registry
        from dbconf.pooling import leaks
        cfg = {{"url": "{url}", "leak_detection": {{"threshold": "0.2s"}}}}
        reg = Registry(ProfileConfig.model_validate({{"databases": {{"main": cfg}}}}))
        db = reg["main"]
        with db.session() as s:
            s.execute(sa.text("select 1"))
        parent = leaks._monitor
        parent_ids = (id(parent.lock), id(parent.wake))
        held = db.engine.connect()  # checked out across the fork
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            warned = []
            class Catch(logging.Handler):
                def emit(self, record):
                    warned.append(record.getMessage())
            logging.getLogger("dbconf.leaks").addHandler(Catch())
            m = leaks._monitor
            state = {{
                "same_monitor": m is parent,
                "fresh": (id(m.lock), id(m.wake)) != parent_ids,
                "thread_reset": m.thread is None,
                "inherited_holders": len(db.pool_status().holders),
            }}
            with db.session() as s:
                s.execute(sa.text("select 1"))
                time.sleep(0.6)
            state["child_thread"] = m.thread is not None and m.thread.is_alive()
            state["warnings"] = len(warned)
            os.write(w, json.dumps(state).encode())
            os._exit(0)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        child = json.loads(os.read(r, 65536).decode())
        held.close()
        reg.dispose()
        print(json.dumps({{"status": status, "calls": len(calls), **child}}))
        """
    )
    assert out == {
        "status": 0,
        "calls": 1,
        "same_monitor": True,
        "fresh": True,
        "thread_reset": True,
        "inherited_holders": 0,
        "child_thread": True,
        "warnings": 1,
    }
