"""``dbconf check --format json``: the check's reports as one JSON document for scripts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["check_json"]


def check_json(profile: str, ok: bool, reports: Sequence[Any], budgets: Sequence[Any]) -> str:
    """``dbconf check --format json``: ``{"profile", "ok", "databases": [report…], "budgets":
    [budget…]}`` (every field of :class:`~dbconf.runtime.reports.DatabaseReport`, the URL masked;
    per server its workers, pools, total, limit, level and messages)."""
    data = {
        "profile": profile,
        "ok": ok,
        "databases": [dataclasses.asdict(report) for report in reports],
        "budgets": [
            {
                "server": b.budget.server,
                "family": b.budget.family,
                "workers": b.budget.workers,
                "pools": [dataclasses.asdict(p) for p in b.budget.pools],
                "per_worker": b.budget.per_worker,
                "total": b.budget.total,
                "unbounded": list(b.budget.unbounded),
                "available": b.limit.available if b.limit is not None else None,
                "max_connections": b.limit.max_connections if b.limit is not None else None,
                "level": b.level,
                "messages": [{"level": level, "text": text} for level, text in b.messages],
            }
            for b in budgets
        ],
    }
    return json.dumps(data, indent=2, default=str) + "\n"
