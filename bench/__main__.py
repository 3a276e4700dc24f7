"""``python -m bench [--quick] [--only N ...]``: run the cases, print the table, write results."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from bench.envs import machine, pg_available
from bench.report import RESULTS, table, write_chart, write_json
from bench.stats import FULL, QUICK, CaseResult, Scale, Target


def _cases(pg: bool) -> dict[int, tuple[bool, Callable[[Scale], CaseResult]]]:
    from bench.cases_async import case9, case10, case11
    from bench.cases_merge import case8
    from bench.cases_metrics import case13
    from bench.cases_plugin import case12
    from bench.cases_pooler import case15
    from bench.cases_replicas import case14
    from bench.cases_single import case1, case2, case3, case4, case7
    from bench.cases_startup import case6
    from bench.cases_threads import case5, case16

    return {  # id: (needs PostgreSQL, runner)
        1: (False, lambda s: case1(s, pg)),
        2: (True, case2),
        3: (True, case3),
        4: (True, case4),
        5: (True, case5),
        6: (False, case6),
        7: (True, case7),
        8: (False, case8),
        9: (True, case9),
        10: (True, case10),
        11: (True, case11),
        12: (True, case12),
        13: (True, case13),
        14: (True, case14),
        15: (True, case15),
        16: (True, case16),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run (~20 s)")
    parser.add_argument(
        "--only",
        type=int,
        action="append",
        metavar="N",
        choices=range(1, 17),
        help="run only case N (repeatable)",
    )
    parser.add_argument("--out", default=str(RESULTS / "latest.json"), help="JSON output path")
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else FULL

    started = time.perf_counter()
    info = machine()
    why_no_pg = pg_available()
    cases: list[CaseResult] = []
    for number, (needs_pg, run) in _cases(why_no_pg is None).items():
        if args.only and number not in args.only:
            continue
        print(f"case {number} …", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        if needs_pg and why_no_pg:
            result = CaseResult(number, f"case {number}", skipped=why_no_pg)
            result.targets.append(Target(f"{number} ran", None, "==", 1, note=why_no_pg))
        else:
            try:
                result = run(scale)
            except Exception as exc:
                traceback.print_exc()
                result = CaseResult(number, f"case {number}", skipped=f"failed: {exc!r}"[:200])
                result.targets.append(Target(f"{number} ran", 0, "==", 1, note="crashed"))
        result.seconds = time.perf_counter() - t0
        print(f"case {number} done in {result.seconds:.1f} s", file=sys.stderr, flush=True)
        cases.append(result)
    seconds = time.perf_counter() - started

    print(table(cases, info, seconds))

    out = Path(args.out)
    meta = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "scale": vars(scale),
        "seconds": round(seconds, 1),
    }
    write_json(out, cases, info, meta)
    chart = out.with_suffix(".png")
    title = f"dbconf bench {meta['when']} — {info.get('cpu')}, {info.get('cores')} cores"
    drawn = write_chart(chart, cases, title)
    print(f"\nwrote {out}" + (f" and {chart}" if drawn else " (no matplotlib: no chart)"))
    return verdict(cases)


def verdict(cases: list[CaseResult]) -> int:
    """0 when every target is met; 1 when one is NOT MET; 2 when none fails but one could not
    be measured (n/a: PostgreSQL down, leak probe silent, a case skipped), so that a skipped
    case never looks green. The reasons go to stderr."""
    failed = [t for c in cases for t in c.targets if t.status == "NOT MET"]
    unmeasured = [t for c in cases for t in c.targets if t.status == "n/a"]
    unmeasured += [
        Target(f"{c.id} ran", None, "==", 1, note=c.skipped)
        for c in cases
        if c.skipped and not c.targets
    ]
    for t in failed:
        print(f"NOT MET: {t.name}: {t.value} (goal {t.op} {t.threshold})", file=sys.stderr)
    for t in unmeasured:
        print(f"n/a: {t.name}: {t.note or 'not measured'}", file=sys.stderr)
    if failed:
        return 1
    return 2 if unmeasured else 0


if __name__ == "__main__":
    sys.exit(main())
