"""Case 6: load + build a 50-database profile (no connections), and import times.

Everything runs in fresh interpreters (``sys.executable``) so nothing is cached in-process;
each measurement is repeated and the median reported.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.stats import CaseResult, Scale, Target

DATABASES = 50
ROOT = Path(__file__).resolve().parent.parent

_PROFILE_HEAD = """\
x-pool: &pool {size: 5, max_overflow: 10, recycle: 30m, pre_ping: true, timeout: 30s}
profiles:
  base:
    databases: {}
  bench:
    extends: base
    databases:
"""

_DB = """\
      db_{i:02d}:
        url: postgresql+psycopg2://app:${{DB_PASSWORD:-secret}}@db{i}.internal:5432/app_{i}
        application_name: bench-{i}
        pool: *pool
        timeouts: {{connect: 5s, statement: 30s, lock: 5s, idle_in_transaction: 1m}}
        sessions:
          default: {{expire_on_commit: false}}
          reporting: {{autocommit: true}}
"""

_LOAD = """\
import json, sys, time
t0 = time.perf_counter()
import dbconf
t1 = time.perf_counter()
def once():
    s = time.perf_counter()
    dbs = dbconf.load("bench", path=sys.argv[1], environ={})
    for db in dbs:
        db.engine
        db.sessionmaker("default")
    e = time.perf_counter()
    n = sum(db.engine.pool.checkedout() + db.engine.pool.checkedin() for db in dbs)
    dbs.dispose()
    return e - s, len(dbs), n
cold, count, conns = once()
warm = sorted(once()[0] for _ in range(5))[2]
print(json.dumps({"import_s": t1 - t0, "cold_s": cold, "warm_s": warm, "databases": count,
                  "pooled_connections": conns}))
"""


def write_profile(directory: Path, count: int = DATABASES) -> Path:
    path = directory / "bench-databases.yaml"
    body = "".join(_DB.format(i=i) for i in range(count))
    path.write_text(_PROFILE_HEAD + body, encoding="utf-8")
    return path


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )


def import_time_us(module: str) -> float:
    """Cumulative import time of ``module`` from ``python -X importtime`` (µs)."""
    err = _python("-X", "importtime", "-c", f"import {module}").stderr
    for line in err.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            return float(parts[1])
    raise RuntimeError(f"no importtime line for {module}")


def case6(scale: Scale) -> CaseResult:
    result = CaseResult(6, f"load + build {DATABASES} databases; import times")
    runs = 3 if scale.rounds < 10 else 7
    with tempfile.TemporaryDirectory(prefix="dbconf-bench-") as tmp:
        path = write_profile(Path(tmp))
        _python("-c", _LOAD, str(path))  # compile .pyc files once
        samples = [json.loads(_python("-c", _LOAD, str(path)).stdout) for _ in range(runs)]
    cold = statistics.median(s["cold_s"] for s in samples) * 1e3
    warm = statistics.median(s["warm_s"] for s in samples) * 1e3
    result.metrics.update(
        runs=runs,
        load_build_cold_ms=round(cold, 2),
        load_build_warm_ms=round(warm, 2),
        databases=samples[0]["databases"],
        pooled_connections_after_build=max(s["pooled_connections"] for s in samples),
    )
    result.targets.append(
        Target(f"6 load+build {DATABASES} dbs, first in process", cold, "<", 100, unit="ms")
    )
    result.targets.append(
        Target("6 connections opened by load+build", samples[0]["pooled_connections"], "==", 0)
    )
    _python("-c", "import dbconf")
    for module in ("sqlalchemy", "sqlalchemy.orm", "pydantic", "yaml", "dbconf"):
        times = [import_time_us(module) for _ in range(runs)]
        result.metrics[f"import_{module}_ms"] = round(statistics.median(times) / 1e3, 1)
    result.notes.append(
        "cold = first load+build in a fresh interpreter after `import dbconf` (includes lazy "
        "imports such as the psycopg2 dialect); warm = median of 5 more in the same process; "
        "import times are cumulative `-X importtime` figures (each includes its dependencies)"
    )
    return result
