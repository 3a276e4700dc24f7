"""The ``metrics:`` block of a profile: strict booleans, unknown keys refused with file:line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dbconf.config import ProfileConfig
from dbconf.config.metrics_config import MetricsConfig
from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile


def test_exporters_in_a_fixed_order() -> None:
    assert MetricsConfig().exporters == ()
    assert MetricsConfig(prometheus=True, opentelemetry=True).exporters == (
        "opentelemetry",
        "prometheus",
    )
    profile = ProfileConfig.model_validate(
        {"metrics": {"prometheus": True}, "databases": {"a": {"url": "sqlite://"}}}
    )
    assert profile.metrics == MetricsConfig(prometheus=True)


def test_bad_values_are_config_errors_with_their_line(write_config: Callable[[str], Path]) -> None:
    path = write_config(
        "profiles:\n  p:\n    metrics: {opentelemetry: yes please, statsd: true}\n"
        "    databases: {a: {url: 'sqlite://'}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=path, environ={})
    text = str(info.value)
    assert f"{path}:3" in text
    assert "profiles.p.metrics.opentelemetry" in text
    assert "profiles.p.metrics.statsd: unknown key 'statsd'" in text
