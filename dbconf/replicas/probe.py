"""The replica probe: ONE background daemon thread per process measures every router's replicas.

**Why one thread per process, and why module-level state.** Probing is periodic I/O that must
go on while the application does other things; a thread per database (or per replica) would
multiply idle threads for no gain, as every probe is a short query. So this module keeps a
private, process-wide weak set of the routers to probe, and one daemon thread
(``dbconf-replica-probe``) that loops over them: each router is probed when its
``check_interval`` is due (:meth:`Router.probe_if_due
<dbconf.replicas.router.Router.probe_if_due>` measures its replicas one after the other through
small probe engines: a pool of one connection, short connect and statement timeouts, so a hung
replica stalls the thread for a few seconds at most — and the eligibility rule of
:mod:`.state` keeps the staleness bound even then).

**Lifetime.** Nothing starts at import or at load: the thread starts when a router is
registered (its first routed use, or its first ``replica_status()``) and ends by itself when no
router is left to probe (every router closed, or garbage collected: the set holds weak
references). A fork (gunicorn ``--preload``, multiprocessing) copies no thread: the child
resets this module and every router's state through
:func:`dbconf.pooling.forking.call_in_forked_child`, so it probes afresh, with fresh probe
connections, on its first routed use.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from typing import Protocol

from dbconf.pooling.forking import call_in_forked_child

__all__ = ["Probed", "probe_thread", "register", "track", "unregister"]

log = logging.getLogger("dbconf.replicas")


class Probed(Protocol):
    """What the probe thread needs of a router."""

    def probe_if_due(self, now: float) -> float:
        """Probe if due at monotonic ``now``; return the monotonic time of the next probe."""
        ...

    def reset_after_fork(self) -> None: ...


_lock = threading.Lock()
_probed: weakref.WeakSet[Probed] = weakref.WeakSet()  # routers the thread probes
_tracked: weakref.WeakSet[Probed] = weakref.WeakSet()  # every router (reset in a fork child)
_wake = threading.Event()
_thread: threading.Thread | None = None
_hooked = False


def track(router: Probed) -> None:
    """Remember ``router`` (weakly) so that a forked child resets its state."""
    global _hooked
    with _lock:
        if not _hooked:
            call_in_forked_child(_after_fork_in_child)
            _hooked = True
        _tracked.add(router)


def register(router: Probed) -> None:
    """Probe ``router`` from now on; starts the probe thread if it is not running."""
    global _thread
    with _lock:
        _probed.add(router)
        _wake.set()
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="dbconf-replica-probe", daemon=True)
            _thread.start()


def unregister(router: Probed) -> None:
    """Stop probing ``router``; the thread ends when no router is left."""
    with _lock:
        _probed.discard(router)
        _wake.set()


def probe_thread() -> threading.Thread | None:
    """The probe thread if it is running (for diagnostics and tests)."""
    thread = _thread
    return thread if thread is not None and thread.is_alive() else None


def _run() -> None:
    global _thread
    me = threading.current_thread()
    while True:
        with _lock:
            if _thread is not me:  # replaced (cannot happen outside a fork child): leave
                return
            routers = list(_probed)
            if not routers:
                _thread = None
                return
            _wake.clear()
        due = math.inf
        for router in routers:
            try:
                due = min(due, router.probe_if_due(time.monotonic()))
            except Exception:  # a bug must not kill the thread: the staleness bound holds
                log.error("replica probe of %r failed", router, exc_info=True)
        del routers, router  # hold no strong reference while waiting
        _wake.wait(max(0.0, min(due, time.monotonic() + 60.0) - time.monotonic()))


def _after_fork_in_child() -> None:
    """A forked child has no probe thread: reset this module and every router's state."""
    global _lock, _wake, _thread, _probed
    _lock = threading.Lock()
    _wake = threading.Event()
    _thread = None
    _probed = weakref.WeakSet()
    for router in list(_tracked):
        router.reset_after_fork()
