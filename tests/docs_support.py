"""The code blocks of the docs (README.md and docs/**/*.md) and the sandbox they run in.

A fenced block is run by tests/test_docs.py according to its language:

- ``python``: a script, run in a sandbox directory whose ``config/databases.yaml`` has the
  profiles ``development`` (SQLite files), ``test`` and ``production`` (the test servers);
- ``yaml``: a configuration; a document with ``profiles:`` is loaded as a file (every
  profile), one with ``databases:`` as a profile; ``${VAR}`` without a default get values;
- ``sh``: a bash script in the sandbox, ``dbconf`` on the PATH (``pip install`` lines skipped).

Other languages (``text``, ``ini``, ``toml``, none) are shown, not run. A block that is
intentionally partial has ``<!-- not-run: reason -->`` on the line above it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = {"python", "yaml", "sh"}
MARKER = re.compile(r"<!--\s*(not-run|run):\s*(.*?)\s*-->")
GENERATED = {"reference/api.md"}  # mkdocstrings directives, no code blocks


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: tuple[str, str] | None  # ("not-run", reason) or ("run", option)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def doc_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for path in sorted((ROOT / "docs").rglob("*.md")):
        if path.relative_to(ROOT / "docs").as_posix() not in GENERATED:
            files.append(path)
    return files


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text().split("\n")
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        indent, ticks, lang = fence.groups()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(ticks):
            body.append(lines[i][len(indent) :])
            i += 1
        i += 1
        prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.search(prev)
        found.append(
            Block(
                path,
                start + 1,
                lang.lower(),
                "\n".join(body) + "\n",
                (marker.group(1), marker.group(2)) if marker else None,
            )
        )
    return found


def all_blocks() -> list[Block]:
    return [b for path in doc_files() for b in blocks(path)]


def sandbox_config(pg_url: str, maria_url: str) -> str:
    """The sandbox's config/databases.yaml: the profile names the docs use."""
    return f"""\
profiles:
  development:
    databases:
      primary:
        url: sqlite:///var/development.db
        sessions:
          batch: {{autoflush: false}}
          reporting: {{autocommit: true}}
      cache:
        url: "sqlite:///:memory:"
        migrations: {{managed: false}}
  test:
    databases:
      primary:
        url: {pg_url}
        sessions: {{reporting: {{autocommit: true}}}}
      analytics:
        url: {maria_url}
  production:
    databases:
      primary:
        url: {pg_url}
        sessions:
          batch: {{autoflush: false}}
          reporting: {{autocommit: true}}
"""


def env_values(text: str) -> dict[str, str]:
    """Values for the ``${VAR}`` (without a default) a yaml block reads."""
    values: dict[str, str] = {}
    for name, rest in re.findall(r"\$\{(\w+)([^}]*)\}", text):
        if rest.startswith((":-", "-")):
            continue
        if name.endswith("URL"):
            values[name] = "postgresql+psycopg2://app@db.internal:5432/app"
        elif name.endswith("PORT"):
            values[name] = "5432"
        else:
            values[name] = "db.internal"
    return values
