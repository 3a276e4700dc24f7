"""Output: the printed table, the JSON file and the PNG chart (matplotlib imported lazily)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.stats import CaseResult

RESULTS = Path(__file__).resolve().parent / "results"


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 10):
        text = f"{value:g}"
    elif abs(value) >= 100:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def table(cases: list[CaseResult], machine: dict[str, Any], seconds: float) -> str:
    lines = [
        f"dbconf benchmarks — {machine.get('cpu', '?')}, {machine.get('cores')} cores, "
        f"Python {machine.get('python')}, SQLAlchemy {machine.get('sqlalchemy')}, "
        f"PostgreSQL {machine.get('postgresql')} — {seconds:.0f} s",
        "",
        "| case | variant | median µs | p99 µs | ops/s |",
        "|---|---|---:|---:|---:|",
    ]
    for case in cases:
        if case.skipped:
            lines.append(f"| {case.id} | {case.skipped} | | | |")
        for name, s in case.variants.items():
            lines.append(
                f"| {case.id} | {name} | {s.median_us:.1f} | {s.p99_us:.1f} | {s.throughput:,.0f} |"
            )
    lines += ["", "| target | value | goal | status |", "|---|---:|---:|---|"]
    for case in cases:
        for t in case.targets:
            value = _fmt(t.value, t.unit) if t.value is not None else t.note or "n/a"
            goal = f"{t.op} {_fmt(t.threshold, t.unit)}"
            lines.append(f"| {t.name} | {value} | {goal} | {t.status} |")
    lines += ["", "Other measurements:"]
    for case in cases:
        for key, value in case.metrics.items():
            if not isinstance(value, dict):
                lines.append(f"- case {case.id}: {key} = {value}")
        lines += [f"- case {case.id}: {note}" for note in case.notes]
    return "\n".join(lines)


def write_json(
    path: Path, cases: list[CaseResult], machine: dict[str, Any], meta: dict[str, Any]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine, **meta, "cases": [c.as_dict() for c in cases]}
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_chart(path: Path, cases: list[CaseResult], title: str) -> bool:
    """Latency bars (median and p99, log scale) per variant, and ratios against targets."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [(f"{c.id}: {name}", s) for c in cases for name, s in c.variants.items()]
    ratios = [
        t for c in cases for t in c.targets if t.value is not None and t.unit == "" and t.op != "=="
    ]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(14, max(4.0, 0.32 * len(rows) + 1.5)), width_ratios=[3, 2]
    )
    if rows:
        ys = range(len(rows))
        left.barh([y + 0.2 for y in ys], [s.median_us for _, s in rows], 0.4, label="median")
        left.barh([y - 0.2 for y in ys], [s.p99_us for _, s in rows], 0.4, label="p99")
        left.set_yticks(list(ys), [name for name, _ in rows], fontsize=8)
        left.invert_yaxis()
        left.set_xscale("log")
        left.set_xlabel("µs per operation (log)")
        left.legend(loc="lower right")
    if ratios:
        ys = range(len(ratios))
        colors = ["tab:green" if t.status == "met" else "tab:red" for t in ratios]
        values = [float(t.value or 0) for t in ratios]
        right.barh(list(ys), values, color=colors)
        right.scatter([t.threshold for t in ratios], list(ys), marker="|", s=300, color="black")
        right.set_yticks(list(ys), [t.name for t in ratios], fontsize=8)
        right.invert_yaxis()
        right.set_xscale("log")
        right.set_xlabel("value (bar) vs target (|); green = met")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
