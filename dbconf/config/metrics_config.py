"""The ``metrics:`` block of a profile: which exporters publish its pool metrics.

.. code-block:: yaml

    profiles:
      production:
        metrics: {opentelemetry: true, prometheus: true}

A frozen model, no I/O; :mod:`dbconf.config` uses it. What is exported and how:
:mod:`dbconf.pooling.pool_metrics`, :mod:`dbconf.integrations.opentelemetry`,
:mod:`dbconf.integrations.prometheus`.
"""

from __future__ import annotations

from dbconf.config.blocks import FrozenModel

__all__ = ["MetricsConfig"]


class MetricsConfig(FrozenModel):
    """Export the pool metrics of every database (and replica) of the profile through
    OpenTelemetry (the global MeterProvider; ``dbconf[otel]``) and/or prometheus_client (its
    default registry, multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set;
    ``dbconf[prometheus]``). Both off unless set."""

    opentelemetry: bool = False
    prometheus: bool = False

    @property
    def exporters(self) -> tuple[str, ...]:
        """The exporters turned on, in a fixed order."""
        return tuple(k for k in ("opentelemetry", "prometheus") if getattr(self, k))
