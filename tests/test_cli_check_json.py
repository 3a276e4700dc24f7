"""`dbconf check --format json`: the same checks as text, as one JSON document for scripts,
against the real PostgreSQL server and an unreachable one; never the password."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from dbconf.cli import main

PASSWORD = "p@ss:w%rd/1"
UNREACHABLE = "postgresql+psycopg2://app:p%40ss%3Aw%25rd%2F1@127.0.0.1:1/app"


def test_check_json(
    pg_url: str,
    write_config: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    assert_no_secret: Callable[[Iterable[object], str], None],
) -> None:
    config = write_config(
        f"profiles: {{p: {{databases: {{main: {{url: '{pg_url}'}}, "
        f"gone: {{url: '{UNREACHABLE}', timeouts: {{connect: 2s}}}}}}}}}}"
    )
    code = main(["check", "-c", str(config), "-p", "p", "--format", "json"], environ={})
    out, err = capsys.readouterr()
    assert code == 1, out + err
    data = json.loads(out)
    assert data["profile"] == "p"
    assert data["ok"] is False
    by_name = {d["name"]: d for d in data["databases"]}
    assert by_name["main"]["ok"] is True
    assert by_name["main"]["pool"]["class"] == "QueuePool"
    assert by_name["main"]["latency_ms"] > 0
    assert by_name["gone"]["ok"] is False
    assert by_name["gone"]["url"] == "postgresql+psycopg2://app:***@127.0.0.1:1/app"
    assert by_name["gone"]["error"].startswith("OperationalError")
    budget = next(b for b in data["budgets"] if b["server"] == "postgresql://127.0.0.1:5432")
    assert budget["pools"] == [
        {"database": "main", "connections": 15, "why": budget["pools"][0]["why"]}
    ]
    assert budget["level"] == "ok"
    assert isinstance(budget["max_connections"], int)
    assert_no_secret([out, err], PASSWORD)


def test_check_json_ok_exits_0(
    pg_url: str, write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(f"profiles: {{p: {{databases: {{main: {{url: '{pg_url}'}}}}}}}}")
    code = main(
        ["check", "-c", str(config), "-p", "p", "-d", "main", "--format", "json"], environ={}
    )
    out, _ = capsys.readouterr()
    assert code == 0
    assert json.loads(out)["ok"] is True
    assert [d["name"] for d in json.loads(out)["databases"]] == ["main"]
