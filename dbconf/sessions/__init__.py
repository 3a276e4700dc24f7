"""Session scopes and what happens inside them: the session scopes (``session``), the
configured session classes (``session_classes``), typed errors for lost connections and
timeouts and the retry policy (``resilience``, ``driver_errors``) and the retry loops
(``retry_loops``).

Imports only the configuration layer, :mod:`dbconf.dialects` and :mod:`dbconf.errors`.
"""
