"""`dbconf check`: exit codes against real servers, one-line reasons, no password anywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dbconf.cli import main

PASSWORD = "p@ss:w%rd/1"
ENCODED = "p%40ss%3Aw%25rd%2F1"
UNREACHABLE = f"postgresql+psycopg2://app:{ENCODED}@127.0.0.1:1/app"


def run(
    capsys: pytest.CaptureFixture[str], config: Path, *argv: str, environ: dict[str, str]
) -> tuple[int, str, str]:
    code = main(["check", "-c", str(config), *argv], environ=environ)
    out, err = capsys.readouterr()
    return code, out, err


def test_reachable_server_exits_0(
    pg_url: str, write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(f"profiles: {{p: {{databases: {{main: {{url: '{pg_url}'}}}}}}}}")
    code, out, err = run(capsys, config, "-p", "p", environ={})
    assert code == 0, out + err
    assert out.startswith("main: postgresql+psycopg2 ")
    assert "\n  ok: server 1" in out  # PostgreSQL 1x.y
    assert "budget postgresql://127.0.0.1:5432: 1 worker x (main 15) = 15 connections" in out
    assert err == ""


def test_unreachable_server_exits_1_with_one_line_reason(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        """
        profiles:
          p:
            databases:
              main:
                url: ${APP_URL}
                timeouts: {connect: 2s}
        """
    )
    code, out, err = run(capsys, config, "-p", "p", environ={"APP_URL": UNREACHABLE})
    assert code == 1, out + err
    lines = out.splitlines()
    assert lines[0] == "main: postgresql+psycopg2 postgresql+psycopg2://app:***@127.0.0.1:1/app"
    assert lines[1].startswith("  UNREACHABLE: OperationalError: ")
    assert "127.0.0.1" in lines[1] or "refused" in lines[1]
    # the budget of a server nobody could reach is unknown, not a crash
    assert lines[2].startswith("budget postgresql://127.0.0.1:1: ")
    assert lines[2].endswith(": unknown")
    assert len(lines) == 4
    assert "Traceback" not in out + err
    for text in (out, err):
        assert PASSWORD not in text
        assert ENCODED not in text


def test_one_unreachable_among_reachable_exits_1(
    pg_url: str, write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        f"""
        profiles:
          p:
            databases:
              main: {{url: "{pg_url}"}}
              gone: {{url: "postgresql+psycopg2://app@127.0.0.1:1/app"}}
        """
    )
    code, out, _ = run(capsys, config, "-p", "p", environ={})
    assert code == 1
    assert "main: " in out
    assert "gone: " in out
    assert "  UNREACHABLE: " in out
    # only the reachable one when asked for it
    code, out, _ = run(capsys, config, "-p", "p", "-d", "main", environ={})
    assert code == 0
    assert "gone" not in out


@pytest.mark.parametrize(
    ("yaml", "argv", "message"),
    [
        (
            "profiles: {p: {databases: {main: {url: 'sqlite://', pool: {sise: 1}}}}}",
            ["-p", "p"],
            "sise",
        ),
        ("profiles: {p: {databases: {main: {url: 'sqlite://'}}}}", ["-p", "nope"], "nope"),
        ("profiles: {p: {databases: {main: {url: 'sqlite://'}}}}", ["-p", "p", "-d", "x"], "'x'"),
    ],
    ids=["unknown-key", "unknown-profile", "unknown-database"],
)
def test_config_error_exits_2(
    yaml: str,
    argv: list[str],
    message: str,
    write_config: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, write_config(yaml), *argv, environ={})
    assert code == 2, out + err
    assert err.startswith("dbconf: ")
    assert message in err
    assert "Traceback" not in err
    assert out == ""


def test_config_error_never_shows_the_password(
    write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        f"""
        profiles:
          p:
            databases:
              main:
                driver: postgresql+psycopg2
                host: 127.0.0.1
                password: "{PASSWORD}"
                port: not-a-port
        """
    )
    code, out, err = run(capsys, config, "-p", "p", environ={})
    assert code == 2
    assert "port" in err
    assert PASSWORD not in out + err
    assert ENCODED not in out + err
