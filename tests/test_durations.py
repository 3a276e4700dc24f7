"""dbconf.config.durations: parsing ``250ms``/``30s``/``5m``/``1h``/numbers; negatives named as
such."""

from __future__ import annotations

from typing import Any

import pytest

from dbconf.config.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (" 2 m ", 120.0),
        ("10", 10.0),
        (10, 10.0),
        (0.5, 0.5),
        (0, 0.0),
    ],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "1d", "", True, None, [1]])
def test_bad_durations(bad: Any) -> None:
    with pytest.raises(ValueError, match="expected a duration such as 250ms, 30s, 5m, 1h"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [-1, -0.5, "-5s", "-1", " -250ms", "-1.5h"])
def test_negative_durations_are_called_negative(bad: Any) -> None:
    with pytest.raises(ValueError, match="a duration must not be negative"):
        parse_duration(bad)
