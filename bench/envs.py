"""The things the cases run against: dbconf registries, hand-written engines, the machine."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
SELECT_1 = sa.text("select 1")


def registry(databases: dict[str, dict[str, Any]], profile: str = "bench") -> Any:
    """A dbconf Registry built from a plain dict (validated like a YAML profile; no connection)."""
    from dbconf.config import ProfileConfig
    from dbconf.runtime.registry import Registry

    return Registry(ProfileConfig.model_validate({"databases": databases}), profile=profile)


def hand_engine(url: str, **kwargs: Any) -> sa.Engine:
    """What a user writes without dbconf: ``create_engine`` with explicit pool arguments."""
    return sa.create_engine(url, **kwargs)


def hand_maker(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine)


def pool_signature(engine: sa.Engine) -> dict[str, Any]:
    """The pool settings that matter for equivalence (class, size, overflow, pre-ping, …)."""
    pool = engine.pool
    out: dict[str, Any] = {"class": type(pool).__name__, "pre_ping": pool._pre_ping}
    out["recycle"] = pool._recycle
    reset = pool._reset_on_return
    out["reset_on_return"] = getattr(reset, "name", str(reset))
    if isinstance(pool, sa.pool.QueuePool):
        out.update(size=pool.size(), max_overflow=pool._max_overflow, timeout=pool.timeout())
    return out


@contextmanager
def sqlite_file() -> Iterator[str]:
    """A throw-away SQLite file URL, deleted (with -wal/-shm) afterwards."""
    with tempfile.TemporaryDirectory(prefix="dbconf-bench-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'bench.db'}"


def pg_available() -> str | None:
    """None if PostgreSQL answers, else the reason."""
    engine = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(SELECT_1)
    except Exception as exc:
        return f"PostgreSQL unreachable at {PG_URL}: {type(exc).__name__}"
    finally:
        engine.dispose()
    return None


def server_started() -> str | None:
    """PostgreSQL's ``pg_postmaster_start_time()`` (None if unreachable): a case that sees it
    change ran across a server restart (another client's doing) and its numbers are void."""
    engine = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("select pg_postmaster_start_time()")).scalar_one())
    except Exception:
        return None
    finally:
        engine.dispose()


_RUNTIME_SKIP = {  # modules that only read or describe the config
    "config/models.py",
    "loading/loader.py",
    "loading/layers.py",
    "loading/interpolation.py",
    "cli/commands.py",
    "loading/yamlfile.py",
    "config/origin.py",
    "errors.py",
}
_SUBSYSTEMS = ("dialects/", "replicas/", "integrations/")  # not the runtime core: not scanned


def leak_detection_status() -> tuple[bool, str]:
    """Whether ``leak_detection:`` takes effect: the runtime code must use it AND a probe with
    a 50 ms threshold holding a session for 300 ms must produce a warning (log or warnings)."""
    import dbconf

    package = Path(dbconf.__file__).parent
    modules = {p.relative_to(package).as_posix(): p for p in sorted(package.rglob("*.py"))}
    users = [
        name
        for name, p in modules.items()
        if name not in _RUNTIME_SKIP
        and not name.startswith(_SUBSYSTEMS)
        and "leak_detection" in p.read_text(encoding="utf-8")
    ]
    if not users:
        return False, "n/a (leak detection not built yet)"
    records: list[logging.LogRecord] = []

    class _Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = _Catch(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with sqlite_file() as url, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dbs = registry({"probe": {"url": url, "leak_detection": {"threshold": "50ms"}}})
            try:
                with dbs["probe"].session() as s:
                    s.execute(SELECT_1)
                    time.sleep(0.3)
                time.sleep(0.2)
            finally:
                dbs.dispose()
    finally:
        root.removeHandler(handler)
    if records or caught:
        return True, f"active (used in {', '.join(users)})"
    return (
        False,
        f"n/a (leak_detection referenced in {', '.join(users)} but the probe saw no warning)",
    )


def _git_state() -> str:
    """``<commit>`` plus the dbconf/ files that differ from it (the code actually measured)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "dbconf"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return head + (f" + uncommitted {', '.join(changed)}" if changed else "")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlalchemy": sa.__version__,
        "dbconf_tree": _git_state(),
    }
    try:
        import psycopg2

        info["psycopg2"] = str(getattr(psycopg2, "__version__", "?")).split()[0]
        engine = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            info["postgresql"] = conn.execute(sa.text("show server_version")).scalar_one()
        engine.dispose()
    except Exception as exc:
        info["postgresql"] = f"unavailable ({type(exc).__name__})"
    return info
