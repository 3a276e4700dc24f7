"""The docs cannot drift from the code: every python/yaml/sh block of README.md and docs/ runs
(see tests/docs_support.py for how), the site builds with ``mkdocs build --strict``, and the
generated reference pages cover every configuration key, command and error class."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import dbconf
from dbconf import errors

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))
from docs_support import ROOT, RUN, Block, all_blocks, env_values, sandbox_config
from gen_reference import cli_page, configuration_page, errors_page

OUTSIDE_ENVIRON = {k: v for k, v in os.environ.items() if not k.startswith("DBCONF_")}
BLOCKS = all_blocks()
RUNNABLE = [b for b in BLOCKS if b.lang in RUN and (b.marker or ("",))[0] != "not-run"]
SHOWN = {"", "text", "ini", "toml", "console", "http"}  # shown as they are, not run
SERVER_WORDS = re.compile(r'"production"|"test"|-p (production|test)|--profile (production|test)')
MAX_NOT_RUN = 12
RUN_OPTIONS = {"pytest", "servers"}  # <!-- run: pytest --> a test module; servers: needs them


def needs_servers(block: Block) -> bool:
    return block.marker == ("run", "servers") or bool(SERVER_WORDS.search(block.code))


@pytest.fixture
def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    block: Block = request.param
    if needs_servers(block):
        pg, maria = request.getfixturevalue("pg_url"), request.getfixturevalue("maria_url")
    else:  # never connected to: the block uses only the development profile (SQLite)
        pg, maria = "postgresql://nobody@127.0.0.1:1/none", "mariadb://nobody@127.0.0.1:1/none"
    (tmp_path / "config").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "config" / "databases.yaml").write_text(sandbox_config(pg, maria))
    return tmp_path


def _env(sandbox: Path) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return {
        **OUTSIDE_ENVIRON,
        "PATH": bindir + os.pathsep + OUTSIDE_ENVIRON.get("PATH", ""),
        "HOME": str(sandbox),
        "PYTHONPATH": str(sandbox),
    }


def _run(argv: list[str], sandbox: Path, block: Block) -> None:
    result = subprocess.run(
        argv,
        cwd=sandbox,
        env=_env(sandbox),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, (
        f"{block.id} ({block.lang}) exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def _load_yaml_block(block: Block, tmp_path: Path) -> list[str]:
    data: Any = yaml.safe_load(block.code)
    assert isinstance(data, dict), f"{block.id}: a yaml block is a mapping"
    if "profiles" not in data:
        assert "databases" in data, (
            f"{block.id}: a yaml block is a file (profiles:) or a profile (databases:); "
            "make it one, or mark it <!-- not-run: reason -->"
        )
        data = {"profiles": {"doc": data}}
    for profile in data["profiles"].values():  # a fragment of a profile: `databases: ...`
        if isinstance(profile, dict) and profile.get("databases") is Ellipsis:
            pytest.fail(f"{block.id}: not a whole profile")
    text = block.code if "profiles" in data and "profiles:" in block.code else yaml.safe_dump(data)
    text = _stand_ins(text, tmp_path)
    path = tmp_path / "databases.yaml"
    path.write_text(text)
    env = env_values(block.code)
    names = [n for n in data["profiles"] if not str(n).startswith(("x-", "."))]
    sys.path.insert(0, str(tmp_path))
    try:
        for name in names:
            with dbconf.load(name, path=path, environ=env) as dbs:
                assert dbs.names, f"{block.id}: profile {name} has no database"
    finally:
        sys.path.remove(str(tmp_path))
    return names


def _stand_ins(text: str, tmp_path: Path) -> str:
    """What a config block names outside itself, made in tmp_path: each ``password_file``
    (a file holding a password; the block's path is replaced by it) and each ``credentials``
    callable (a module of that name returning a token)."""
    for n, secret in enumerate(re.findall(r"password_file: (/\S+)", text)):
        stand_in = tmp_path / f"password-{n}"
        stand_in.write_text("not-a-real-password\n")
        text = text.replace(secret, str(stand_in))
    for module, func in re.findall(r"credentials: ([\w.]+):(\w+)", text):
        target = tmp_path.joinpath(*module.split(".")).with_suffix(".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        for parent in target.relative_to(tmp_path).parents:
            (tmp_path / parent / "__init__.py").touch()
        target.write_text(f"def {func}(target):\n    return 'token'\n")
    return text


@pytest.mark.parametrize(
    ("block", "sandbox"),
    [(b, b) for b in RUNNABLE],
    ids=[b.id for b in RUNNABLE],
    indirect=["sandbox"],
)
def test_block_runs(block: Block, sandbox: Path) -> None:
    if block.lang == "python" and block.marker == ("run", "pytest"):
        (sandbox / "test_block.py").write_text(block.code)
        (sandbox / "pytest.ini").write_text(
            "[pytest]\ndbconf_schema = test_block:Base.metadata\ndbconf_profile = development\n"
        )
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_block.py"]
        _run(argv, sandbox, block)
    elif block.lang == "python":
        script = sandbox / "block.py"
        script.write_text(block.code)
        _run([sys.executable, str(script)], sandbox, block)
    elif block.lang == "sh":
        lines = [ln for ln in block.code.splitlines() if not ln.startswith("pip install")]
        script = sandbox / "block.sh"
        script.write_text("\n".join(["set -euo pipefail", *lines, ""]))
        _run(["bash", str(script)], sandbox, block)
    else:
        assert _load_yaml_block(block, sandbox)


def test_every_block_is_run_or_shown() -> None:
    """A block in another language would silently go unchecked: each is run or plain text."""
    unknown = [f"{b.id} ({b.lang})" for b in BLOCKS if b.lang not in RUN | SHOWN]
    assert not unknown, unknown
    assert len(RUNNABLE) >= 25, len(RUNNABLE)


def test_not_run_blocks_are_few_and_say_why() -> None:
    skipped = [b for b in BLOCKS if b.marker and b.marker[0] == "not-run"]
    assert all(b.marker and len(b.marker[1]) > 10 for b in skipped), [b.id for b in skipped]
    assert len(skipped) <= MAX_NOT_RUN, [b.id for b in skipped]


def test_run_markers_are_known() -> None:
    """A misspelt ``<!-- run: … -->`` would silently run a block the wrong way."""
    unknown = [
        b.id for b in BLOCKS if b.marker and b.marker[0] == "run" and b.marker[1] not in RUN_OPTIONS
    ]
    assert not unknown, unknown


def test_a_wrong_yaml_block_fails(tmp_path: Path) -> None:
    """The yaml check is not vacuous: a misspelt key is a ConfigError."""
    wrong = Block(
        ROOT / "x.md", 1, "yaml", "databases:\n  primary: {url: 'sqlite://', pol: {}}\n", None
    )
    with pytest.raises(dbconf.ConfigError, match="did you mean 'pool'"):
        _load_yaml_block(wrong, tmp_path)


def _schema_keys(node: Any, defs: dict[str, Any], seen: set[str]) -> set[str]:
    keys: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref not in seen:
            seen.add(ref)
            keys |= _schema_keys(defs[ref.rsplit("/", 1)[1]], defs, seen)
        for key, sub in node.get("properties", {}).items():
            keys.add(key)
            keys |= _schema_keys(sub, defs, seen)
        for value in node.values():
            if isinstance(value, (dict, list)):
                keys |= _schema_keys(value, defs, seen)
    elif isinstance(node, list):
        for item in node:
            keys |= _schema_keys(item, defs, seen)
    return keys


def test_configuration_reference_lists_every_key() -> None:
    schema = json.loads((ROOT / "dbconf" / "schema.json").read_text())
    page = configuration_page()
    keys = _schema_keys(schema, schema["$defs"], set())
    assert {"url", "pool", "replicas", "routing", "migrations", "metrics"} <= keys
    missing = sorted(k for k in keys if f"| `{k}` |" not in page)
    assert not missing, missing
    assert "`DBCONF_DATABASES__<NAME>__POOL__SIZE`" in page
    assert "`DBCONF_DATABASES__<NAME>__REPLICAS__<N>__URL`" in page
    assert "`DBCONF_DATABASES__<NAME>__SESSIONS__<FLAVOUR>__AUTOCOMMIT`" in page


def test_cli_reference_has_every_command() -> None:
    page = cli_page()
    for command in ("show", "profiles", "schema", "check", "shell", "migrate"):
        assert f"## dbconf {command}\n" in page
    assert "## dbconf migrations status\n" in page
    assert "--format {text,json}" in page


def test_errors_reference_has_every_error_class() -> None:
    page = errors_page()
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            assert f"## {name}\n" in page
    assert "Raised in: " in page


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env={**OUTSIDE_ENVIRON, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config_page = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text()
    assert "DBCONF_DATABASES__&lt;NAME&gt;__POOL__SIZE" in config_page
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "run_in_transaction" in api  # rendered from the docstrings


def test_readme_starts_with_the_two_commands() -> None:
    """The README contract: its first block is the two commands, the second as .ci/run runs it."""
    first = next(b for b in BLOCKS if b.path.name == "README.md")
    commands = first.code.splitlines()
    assert first.line <= 4
    assert first.lang == "sh"
    assert commands[0].endswith(
        ".venv/bin/pip install -q -e . && .venv/bin/python examples/quickstart.py"
    )
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -e '.[test]' && .venv/bin/python -m pytest" in commands[1]
