"""The runtime layer: from a validated profile to engines, sessionmakers and their owners.

:class:`~dbconf.runtime.registry.Registry` holds the named
:class:`~dbconf.runtime.database.Database` objects (``async_database`` has the async twins);
``builder`` turns a database's configuration into an engine (``drivers`` and ``rules`` say
beforehand what would fail, ``credentials`` fetches passwords per connection); ``loops`` and
``loop_sessionmaker`` give each event loop its own async engine; ``reports`` and ``health`` are
what ``check`` and readiness probes say; ``testhooks`` lets a test harness redirect it all.

Sessions and their resilience are in :mod:`dbconf.sessions`, pools and leak detection in
:mod:`dbconf.pooling`, read replicas in :mod:`dbconf.replicas`.
"""
