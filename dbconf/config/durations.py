"""Durations: ``250ms``, ``30s``, ``5m``, ``1h`` or a number of seconds, as float seconds.

Never negative, never infinite, and bounded: a ``Timeout`` reaches a server or a driver as an
int of milliseconds or seconds, so it is at most PostgreSQL's INT_MAX ms (about 24.8 days,
the smallest limit of the servers dbconf translates for); any other ``Duration`` is at most
365 days (Python's own timeouts overflow far beyond that).
"""

from __future__ import annotations

import math
import re
import sys
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = ["MAX_DURATION", "MAX_TIMEOUT", "Duration", "Timeout", "parse_duration"]

MAX_TIMEOUT = 2147483.647
MAX_DURATION = 365 * 86400.0
_HUGE = sys.float_info.max
_DURATION = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Parse ``250ms``, ``30s``, ``5m``, ``1h`` or a number of seconds into float seconds."""
    if isinstance(value, bool):
        raise PydanticCustomError("duration", "expected a duration such as 250ms, 30s, 5m, 1h")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float: too long, not infinite
            seconds = _HUGE if value > 0 else -_HUGE
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        seconds = max(-_HUGE, min(seconds, _HUGE))  # too many digits: too long
    else:
        raise PydanticCustomError(
            "duration", "expected a duration such as 250ms, 30s, 5m, 1h or a number of seconds"
        )
    if not math.isfinite(seconds):
        raise PydanticCustomError("duration", "a duration must be a finite number of seconds")
    if seconds < 0:
        raise PydanticCustomError("duration", "a duration must not be negative")
    return seconds


def _bounded(maximum: float, why: str) -> BeforeValidator:
    """parse_duration, then at most ``maximum`` seconds."""

    def parse(value: Any) -> float:
        seconds = parse_duration(value)
        if seconds > maximum:
            raise PydanticCustomError("duration", why)
        return seconds

    return BeforeValidator(parse)


_DURATION_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"},
            {"type": "string", "pattern": r"^\$\{[^}]+\}$"},
        ],
        "description": "a duration: 250ms, 30s, 5m, 1h, or a number of seconds",
    }
)
Duration = Annotated[
    float, _bounded(MAX_DURATION, "a duration must be at most 365 days"), _DURATION_SCHEMA
]
# A timeout reaches a server or a driver as an int of milliseconds or seconds.
Timeout = Annotated[
    float,
    _bounded(
        MAX_TIMEOUT,
        "a timeout must be at most 2147483.647s (about 24.8 days: PostgreSQL takes an int "
        "of milliseconds); use 0 to turn it off",
    ),
    _DURATION_SCHEMA,
]
