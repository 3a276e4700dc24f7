"""Case 8: loading a profile that extends another scales linearly with the number of databases.

Both profiles declare every database (the child refines each one), so ``extends`` merges N
databases into N: origin bookkeeping that scans per key would make this quadratic (10k
databases took 20x as long as without ``extends`` before merging was made linear). Loads of
1k and 10k databases are interleaved in one process; the target is on their time ratio
(10 for linear work; 100 for quadratic).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.stats import CaseResult, Scale, Target, interleave

SMALL, LARGE = 1_000, 10_000

_BASE_DB = """\
      db_{i}:
        url: postgresql+psycopg2://app:${{DB_PASSWORD:-secret}}@db{i}.internal:5432/app_{i}
        pool: {{size: 5, max_overflow: 10, recycle: 30m}}
        timeouts: {{connect: 5s, statement: 30s}}
        sessions:
          reporting: {{autocommit: true}}
"""
_CHILD_DB = """\
      db_{i}:
        application_name: bench-{i}
        pool: {{size: 2}}
        sessions:
          reporting: {{autoflush: false}}
"""


def write_profiles(directory: Path, count: int) -> Path:
    """``base`` and ``bench: {extends: base}``, both declaring ``count`` databases."""
    path = directory / f"extends-{count}.yaml"
    base = "".join(_BASE_DB.format(i=i) for i in range(count))
    child = "".join(_CHILD_DB.format(i=i) for i in range(count))
    text = f"profiles:\n  base:\n    databases:\n{base}  bench:\n    extends: base\n"
    path.write_text(f"{text}    databases:\n{child}", encoding="utf-8")
    return path


def case8(scale: Scale) -> CaseResult:
    from dbconf.loading.loader import load_profile

    result = CaseResult(8, f"load a profile extending another, {SMALL} vs {LARGE} databases")
    rounds = Scale(rounds=3 if scale.rounds < 10 else 5, ops=1.0, warmup=0)
    with tempfile.TemporaryDirectory(prefix="dbconf-bench-") as tmp:
        paths = {n: write_profiles(Path(tmp), n) for n in (SMALL, LARGE)}
        env = {"DBCONF_MAX_CONFIG_BYTES": str(64 << 20)}  # the large file is over the 1 MiB cap
        for n, path in paths.items():  # checks the profile and warms imports, outside timing
            loaded = load_profile("bench", path=path, environ=env)
            assert len(loaded.config.databases) == n
            assert loaded.config.databases["db_0"].pool.size == 2
        run = interleave(
            {
                f"{SMALL}": lambda: load_profile("bench", path=paths[SMALL], environ=env),
                f"{LARGE}": lambda: load_profile("bench", path=paths[LARGE], environ=env),
            },
            1,
            rounds,
        )
    ratio = run.time_ratio(f"{LARGE}", f"{SMALL}")
    result.variants = {f"{n} databases": run.stats[f"{n}"] for n in (SMALL, LARGE)}
    result.metrics.update(
        rounds=rounds.rounds,
        load_small_ms=round(run.stats[f"{SMALL}"].median_us / 1e3, 1),
        load_large_ms=round(run.stats[f"{LARGE}"].median_us / 1e3, 1),
        time_ratio_large_small=round(ratio, 2),
    )
    result.targets.append(
        Target(f"8 load time {LARGE} / {SMALL} databases with extends", ratio, "<=", 15)
    )
    result.notes.append(
        "one load per block, 1k and 10k interleaved; the ratio is the median over rounds of "
        "the paired block times (10 means linear)"
    )
    return result
