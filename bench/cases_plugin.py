"""Case 12: the pytest plugin's rollback per test vs the usual alternatives (PostgreSQL).

A "test" is what a test of an app does under each strategy, driven through the plugin's own
harness (the object its fixtures use) so the per-test cost is the plugin's real one:

- rollback: the harness opens a connection in an outer transaction, the app's
  ``with db.session()`` (a registry loaded separately, as app code does) inserts 10 rows and
  commits (a savepoint release), the harness rolls back (``db_session`` / the marker);
- drop/create: the app inserts 10 rows with real commits, then every table is dropped and
  created again (``metadata.drop_all`` + ``create_all`` per test); the schema is a small
  app's: 20 tables (one the app writes, 19 with a foreign key to it, an index, defaults);
- truncate: ``@pytest.mark.dbconf(transaction=True)``: real commits, then the plugin empties
  the tables the test wrote (``TRUNCATE … RESTART IDENTITY CASCADE``).

500 tests per strategy in a full run (5 interleaved rounds of 100), 60 in a quick run. The
test database is created by the harness (``<name>_test``) and dropped at the end.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.envs import PG_URL
from bench.stats import CaseResult, Scale, Target, interleave


class Base(DeclarativeBase):
    pass


class BenchNote(Base):
    __tablename__ = "bench_plugin_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(50))


TABLES = 20  # a small app's schema: the notes table and 19 tables referring to it


def _related(n: int) -> sa.Table:
    return sa.Table(
        f"bench_plugin_rel{n}",
        Base.metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("note_id", sa.ForeignKey("bench_plugin_notes.id"), index=True),
        sa.Column("label", sa.String(50), nullable=False, server_default=""),
        sa.Column("created", sa.DateTime, server_default=sa.func.now()),
    )


RELATED = [_related(n) for n in range(1, TABLES)]
METADATA = Base.metadata


def case12(scale: Scale) -> CaseResult:
    """Tests per second: rollback per test vs drop/create tables vs truncate."""
    from dbconf import load
    from dbconf.integrations.pytest_plugin._harness import Harness, Options
    from dbconf.runtime import testhooks

    result = CaseResult(12, "pytest plugin: rollback per test vs drop/create vs truncate")
    quick = scale.rounds < 10
    rounds, per_block = (2, 30) if quick else (5, 100)
    tmp = Path(tempfile.mkdtemp(prefix="dbconf-bench-plugin-"))
    url = sa.make_url(PG_URL).set(database=f"dbconf_bench_plugin_{secrets.token_hex(4)}")
    config = tmp / "databases.yaml"
    config.write_text(
        "profiles:\n  bench:\n    databases:\n      primary:\n"
        f'        url: "{url.render_as_string(hide_password=False)}"\n'
        "        application_name: dbconf-bench-plugin\n"
    )
    options = Options(
        profile="bench",
        config=config,
        reuse=False,
        create=False,
        schema=["bench.cases_plugin:METADATA"],
        block=False,
        rootdir=tmp,
    )
    harness = Harness(options, None, lambda: tmp)
    previous = testhooks.set_hooks(harness.load_hook, harness.binder, harness.async_binder)
    try:
        harness.registry()  # creates dbconf_bench_plugin_…_test and its tables
        app = load("bench", path=config)  # the app's own registry, redirected like an app's
        db = app.default
        engine = harness.registry().default.engine

        def app_code() -> None:
            with db.session() as s:
                s.add_all(BenchNote(text=f"note {i}") for i in range(10))

        def test(mode: str | None, after: Callable[[], None] | None = None) -> Callable[[], None]:
            def run() -> None:
                harness.start("bench")
                if mode is not None:
                    harness.allow(mode)
                try:
                    app_code()
                    if after is not None:
                        after()
                finally:
                    harness.end()

            return run

        def drop_create() -> None:
            METADATA.drop_all(engine)
            METADATA.create_all(engine)

        variants = {
            "rollback per test": test("rollback"),
            "drop/create per test": test(None, drop_create),
            "truncate per test": test("transaction"),
        }
        run = interleave(variants, per_block, Scale(rounds=rounds, ops=1.0, warmup=3))
        with engine.connect() as conn:
            left = conn.scalar(sa.select(sa.func.count()).select_from(BenchNote))
        app.close()
    finally:
        harness.teardown()
        testhooks.set_hooks(*previous)
    result.variants.update(run.stats)
    tests_per_s = {name: round(stats.throughput, 1) for name, stats in run.stats.items()}
    result.metrics["tests_per_second"] = tests_per_s
    result.metrics["tests_per_variant"] = rounds * per_block
    ratio = run.time_ratio("drop/create per test", "rollback per test")
    truncate = run.time_ratio("truncate per test", "rollback per test")
    result.metrics["rollback_speedup_vs_drop_create"] = round(ratio, 2)
    result.metrics["rollback_speedup_vs_truncate"] = round(truncate, 2)
    result.targets.append(
        Target("12 rollback per test vs drop/create (speed-up)", ratio, ">=", 10, unit="x")
    )
    result.targets.append(Target("12 rows left after the run", float(left or 0), "==", 0))
    result.notes.append(f"schema: {TABLES} tables, {per_block * rounds} tests per strategy")
    result.notes.append(
        "tests/s: " + ", ".join(f"{name} {value}" for name, value in tests_per_s.items())
    )
    return result
