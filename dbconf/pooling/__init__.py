"""Connection pools: dbconf's queue pools (``pools``), leak detection and long-transaction
warnings (``leaks``, ``leak_records``, ``leak_monitor``), pool metrics (``pool_metrics``) and
fork safety for pooled connections (``forking``).

Imports only the configuration layer and :mod:`dbconf.errors`.
"""
