"""Any file content: ``load_profile`` returns a profile or raises ConfigError, nothing else.

Three kinds of content: arbitrary bytes, arbitrary text, and YAML-shaped documents built from
dbconf's real keys mixed with random scalars, tags, anchors, aliases, flow and block
collections, deep nesting and one-character corruptions. Every generated password is checked to
appear in no error text (str, repr, traceback, causes). A password value carries no anchor
here: aliased into a non-secret key (``size: *pw``) it is shown by validation like any value of
that key, a known gap outside file reading. The environment of these properties is empty; the
env-var property lives with the env layer's tests.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from conftest import assert_no_secret
from hypothesis import example, given
from hypothesis import strategies as st

from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile

PROFILES = ["p", "development", "base"]
DATABASES = ["primary", "analytics", "Bad-Name"]
DATABASE_KEYS = [
    "url", "driver", "host", "port", "username", "password", "password_file", "database",
    "query", "echo", "isolation_level", "application_name", "hide_parameters", "connect_args",
    "execution_options", "pool", "timeouts", "sqlite", "sessions",
]  # fmt: skip
NESTED_KEYS = {
    "pool": ["class", "size", "max_overflow", "timeout", "recycle", "pre_ping", "use_lifo"],
    "timeouts": ["connect", "statement", "lock", "idle_in_transaction"],
    "sqlite": ["journal_mode", "foreign_keys", "synchronous"],
    "sessions": ["default", "batch", "reporting"],
    "query": ["sslmode", "password", "charset"],
}
FLAVOUR_KEYS = ["autoflush", "expire_on_commit", "autobegin", "autocommit", "twophase", "info"]
TAGS = ["!!int", "!!str", "!!float", "!!bool", "!!null", "!!binary", "!!timestamp", "!!set",
        "!!map", "!!seq", "!!omap", "!local", "!!python/name:os.system", "!h!x"]  # fmt: skip
ANCHORS = ["a", "b", "c"]
CORRUPTIONS = [*":[]{}'\"\t&*!-#|>%@`,?\n\0\x85\u2028", ": ", " #", "<<: "]
SCALARS = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["true", "no", "null", "~", "1.5", ".inf", "-.nan", "0x1F", "0o17", "1_000"]),
    st.sampled_from(["30s", "250ms", "5m", "1h", "-3s", "2024-02-30", "2024-01-01T10:00:00Z"]),
    st.sampled_from(["sqlite://", "sqlite:///x.db", "postgresql://u@h/db", "mysql://h/d"]),
    st.sampled_from(["postgres://h:notaport/db", "nodriver://", "queue", "null", "READ COMMITTED"]),
    st.sampled_from(["${VAR}", "${VAR:-5}", "${VAR:?set it}", "$$", "${", "${A${B}}"]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=12),
    st.text(max_size=6),
    st.sampled_from(["9" * 5000, "x" * 300]),
)
# A password in the file: distinctive enough (length, a marker) that a match is not chance, and
# starting with characters that YAML reads specially (alias, anchor, tag, comment, flow).
PASSWORDS = st.builds(
    lambda lead, body: lead + "Pw" + body,
    st.sampled_from(["", "*", "&", "!", "%", "@", "[", "{", "'", '"', "-", "?", "|", "#"]),
    st.text(
        st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_categories=["Cc"]),
        min_size=6,
        max_size=14,
    ),
)


@dataclass
class Doc:
    """A YAML document being written: its passwords, and the anchors of its finished nodes."""

    passwords: list[str] = field(default_factory=list)
    anchors: list[str] = field(default_factory=list)
    count: int = 0

    def prefix(self, draw: st.DrawFn) -> tuple[str, str | None]:
        """An optional ``&anchor`` and an optional tag, and the anchor to register after."""
        parts, anchor = [], None
        if draw(st.integers(0, 4)) == 3:  # not 0: hypothesis favours the bounds
            # Mostly a new name; sometimes a used one (a duplicate, or a recursive alias).
            self.count += 1
            anchor = draw(st.sampled_from([f"n{self.count}"] * 5 + ANCHORS))
            parts.append("&" + anchor)
        if draw(st.integers(0, 10)) == 7:
            parts.append(draw(st.sampled_from(TAGS)))
        return (" ".join(parts) + " " if parts else ""), anchor

    def alias(self, draw: st.DrawFn) -> str:
        """Mostly a finished anchor; sometimes any name (undefined, or recursive)."""
        return "*" + draw(st.sampled_from(self.anchors * 10 + ANCHORS))

    def done(self, anchor: str | None) -> None:
        if anchor is not None:
            self.anchors.append(anchor)


def _scalar(draw: st.DrawFn, value: str) -> str:
    style = draw(st.sampled_from(["plain", "plain", "single", "double"]))
    if style == "single":
        return "'" + value.replace("'", "''") + "'"
    return json.dumps(value) if style == "double" else value


def _value(draw: st.DrawFn, doc: Doc, key: str, depth: int, flow: bool, indent: int) -> str:
    """A value for ``key``: `` value`` inline, or a newline and an indented block."""
    if key in ("password", "url") and draw(st.booleans()):
        password = draw(PASSWORDS)
        doc.passwords.append(password)
        if key == "url":
            return f" postgresql://app:{quote(password, safe='')}@db.example/app"
        return " " + _scalar(draw, password)
    children = NESTED_KEYS.get(key, FLAVOUR_KEYS if key in NESTED_KEYS["sessions"] else [])
    kinds = ["scalar"] * 3 + ["alias"] * bool(doc.anchors) + ["map", "seq"] * (depth < 3)
    kinds += ["map"] * bool(children)
    kind = draw(st.sampled_from(kinds))
    if kind == "alias":
        return " " + doc.alias(draw)
    if kind == "scalar":
        prefix, anchor = doc.prefix(draw)
        value = " " + prefix + _scalar(draw, draw(SCALARS))
        doc.done(anchor)
        return value
    flow = flow or draw(st.integers(0, 3)) == 0
    return _collection(draw, doc, kind, children or DATABASE_KEYS, depth + 1, flow, indent + 2)


def _collection(
    draw: st.DrawFn, doc: Doc, kind: str, keys: list[str], depth: int, flow: bool, indent: int
) -> str:
    prefix, anchor = doc.prefix(draw)
    pad = "\n" + " " * indent
    if kind == "map":
        chosen = draw(st.lists(st.sampled_from([*keys, "<<", "x-extra"]), max_size=3, unique=True))
        items = [f"{k}:{_value(draw, doc, k, depth, flow, indent)}" for k in chosen]
        if flow:
            text = "{" + ", ".join(items) + "}"
        else:
            text = "".join(pad + item for item in items) if items else "{}"
    else:
        size = draw(st.integers(0, 3))
        keys_drawn = [draw(st.sampled_from(keys)) for _ in range(size)]
        values = [_value(draw, doc, k, depth, flow, indent).strip() for k in keys_drawn]
        if flow:
            text = "[" + ", ".join(values) + "]"
        else:
            text = "".join(f"{pad}- {v}" for v in values) if values else "[]"
    doc.done(anchor)
    return " " + prefix + text


@st.composite
def yaml_documents(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A document shaped like a dbconf file, possibly broken; and the passwords in it."""
    doc = Doc()
    lines = ["profiles:"]
    for profile in draw(st.lists(st.sampled_from(PROFILES), min_size=1, max_size=3, unique=True)):
        lines.append(f"  {profile}:")
        if draw(st.integers(0, 3)) == 0:
            lines.append(f"    extends: {draw(st.sampled_from([*PROFILES, '[p]', '{}']))}")
        if draw(st.integers(0, 4)) == 0:
            lines.append(f"    default_database: {draw(st.sampled_from(DATABASES))}")
        prefix, anchor = doc.prefix(draw)
        lines.append(("    databases: " + prefix).rstrip())
        for name in draw(st.lists(st.sampled_from(DATABASES), min_size=1, max_size=2, unique=True)):
            body = _collection(draw, doc, "map", DATABASE_KEYS, 1, draw(st.booleans()), 8)
            lines.append(f"      {name}:{body}")
        doc.done(anchor)
    text = "\n".join(lines) + "\n"
    depth = draw(st.sampled_from([0] * 12 + [10, 63, 64, 65, 200]))
    if depth:
        text += "x-deep: " + "[" * depth + "1" + "]" * depth + "\n"
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 2]))):  # corrupt a character or two
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 1))
        text = text[:at] + draw(st.sampled_from(CORRUPTIONS)) + text[at + cut :]
    return text, doc.passwords


def _load(content: bytes, passwords: list[str]) -> None:
    """Load ``content`` as the configuration file: a profile, or a ConfigError without secrets."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "databases.yaml"
        path.write_bytes(content)
        for profile in ("p", None):
            try:
                load_profile(profile, path=path, environ={})
            except ConfigError as e:
                for password in passwords:
                    assert_no_secret([e], password)


@given(content=st.binary(max_size=400))
def test_any_bytes_load_or_raise_config_error(content: bytes) -> None:
    _load(content, [])


@given(text=st.text(max_size=400))
def test_any_text_loads_or_raises_config_error(text: str) -> None:
    _load(text.encode("utf-8", "surrogatepass"), [])


@example(("profiles:\n  p:\n    databases: !!set\n      primary: {}\n", []))
@example(("profiles:\n  p:\n    databases: [primary]\n", []))
@example(("profiles:\n  p:\n    databases: {primary: {password_file: {url: x}}}\n", []))
@example(
    (
        "profiles:\n  p:\n    databases:\n      primary:\n"
        "        password_file: {url: 'postgresql://app:PwSecret1@db.example/app'}\n",
        ["PwSecret1"],
    )
)
@given(document=yaml_documents())
def test_any_yaml_shaped_document_loads_or_raises_config_error_without_its_passwords(
    document: tuple[str, list[str]],
) -> None:
    text, passwords = document
    _load(text.encode("utf-8", "surrogatepass"), passwords)
