"""PyYAML's error messages, told so that a newcomer knows what to fix.

PyYAML says where its parser gave up ("expected ',' or ']', but got '<stream end>'"); the
mistake is often elsewhere (the '[' that was never closed) or has a usual cause (a TAB in the
indentation, an unquoted ': ' in a value). :func:`explain` returns the position and a message
that names both. No message quotes a value of the file: a mistyped password must not appear.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.tokens import (
    FlowMappingEndToken,
    FlowMappingStartToken,
    FlowSequenceEndToken,
    FlowSequenceStartToken,
)

__all__ = ["explain"]

_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
_CLOSERS = {"[": "]", "{": "}"}
_UNCLOSED_QUOTE = ("found unexpected end of stream", "found unexpected document separator")
_INDENTATION = (
    "check the indentation of this line: keys of one mapping (and the '-' items of one "
    "list) must start in the same column, indented with spaces"
)
_NAMELESS = (
    "'*' (an alias) and '&' (an anchor) must be followed by a name: quote the value if it "
    "really starts with '*' or '&'"
)
# (context or problem starts with, message); the first match wins.
_HINTS = (
    ("found character '\\t'", "a TAB character: YAML indentation must use spaces, not tabs"),
    ("found a tab character", "a TAB character: YAML indentation must use spaces, not tabs"),
    (
        "mapping values are not allowed",
        "unexpected ':' — a value containing ': ' must be quoted (\"...\"), and a key must "
        "be indented like the keys next to it; also write a space after the ':' of each key",
    ),
    (
        "found undefined alias",
        "an alias (*name) that refers to no anchor: define &name on a value before it, or "
        "quote the value if it really starts with '*'",
    ),
    (
        "found duplicate anchor",
        "an anchor (&name) is defined a second time here: give each anchor its own name, "
        "or quote the value if it really starts with '&'",
    ),
    (
        "found undefined tag handle",
        "a value starting with '!' is read as a YAML tag: quote the value",
    ),
    (
        "expected a single document",
        "a second YAML document ('---') here: keep everything in one document",
    ),
    ("expected a scalar node", "this tag takes a single value, not a mapping or list: remove it"),
    ("expected a sequence node", "this tag takes a list: remove it, or write a [list]"),
    ("expected a mapping node", "this tag takes a mapping: remove it, or write a {mapping}"),
    (
        "expected a mapping",  # for merging
        "'<<' merges mappings: write '<<: *name' with an alias of a mapping, or a list of them",
    ),
    ("failed to ", "!!binary needs base64 data: fix it, or remove the tag to keep it as text"),
    (
        "while scanning a double-quoted scalar",
        "a backslash in a double-quoted value starts an escape (\\n, \\x41, …): write the "
        "value in single quotes, or double each backslash",
    ),
    ("while scanning an alias", _NAMELESS),
    ("while scanning an anchor", _NAMELESS),
    ("found character", "a value cannot start with this character: quote the value"),
    ("found unhashable key", "a key must be a single value, not a list or a mapping"),
    (
        "expected <block end>, but found '<scalar>'",
        "unexpected text after a value: a quoted value ends at its closing quote (inside single "
        "quotes write '' for a '), or " + _INDENTATION,
    ),
    ("expected <block end>, but found ']'", "a ']' that closes nothing: remove it"),
    ("expected <block end>, but found '}'", "a '}' that closes nothing: remove it"),
    ("expected <block end>", _INDENTATION),
    ("could not find expected ':'", f"a line without 'key: value', or {_INDENTATION}"),
    ("expected '<document start>'", f"unexpected text after the document: {_INDENTATION}"),
)


def explain(e: yaml.YAMLError, text: str) -> tuple[str, str]:
    """``("line:col", message)`` for a PyYAML error raised while reading ``text``."""
    if isinstance(e, yaml.reader.ReaderError):
        where = _position(text, e.position)
        code = f"#x{e.character:04x}" if isinstance(e.character, int) else "a byte"
        return where, (
            f"the character {code} is not allowed in YAML: remove it, or write it as an "
            'escape ("\\x..") inside a double-quoted string'
        )
    if not isinstance(e, yaml.MarkedYAMLError):
        return "", f"invalid YAML ({type(e).__name__})"
    mark = e.problem_mark or e.context_mark
    where = f"{mark.line + 1}:{mark.column + 1}" if mark else ""
    context, problem = e.context or "", e.problem or "invalid YAML"
    opener = _unclosed(e, text, context, problem)
    if opener is not None:
        return where, opener
    if problem.startswith("could not determine a constructor"):
        return where, _unknown_tag(problem)
    for start, hint in _HINTS:
        if context.startswith(start) or problem.startswith(start):
            return where, hint
    return where, problem


def _unclosed(e: yaml.MarkedYAMLError, text: str, context: str, problem: str) -> str | None:
    """The message for an unclosed quote or bracket, naming where it was opened."""
    start = e.context_mark
    if problem in _UNCLOSED_QUOTE and start is not None:
        quote = text[start.index] if start.index < len(text) else "quote"
        return (
            f"the {quote} opened at {start.line + 1}:{start.column + 1} is never closed: "
            f"add the closing {quote}"
        )
    if "<stream end>" not in problem and not context.startswith("while parsing a flow"):
        return None
    end = e.problem_mark.index if e.problem_mark is not None else len(text)
    bracket = _innermost_open_bracket(text, end)
    if bracket is None:
        return None
    symbol, line, column = bracket
    if "<stream end>" in problem:
        return f"the '{symbol}' opened at {line}:{column} is never closed: add '{_CLOSERS[symbol]}'"
    return (
        f"{problem}: inside the '{symbol}' opened at {line}:{column}, separate items with ',' "
        f"and close it with '{_CLOSERS[symbol]}'"
    )


def _innermost_open_bracket(text: str, end: int) -> tuple[str, int, int] | None:
    """The last '[' or '{' before ``end`` not closed before it, as (symbol, line, column)."""
    stack: list[Any] = []
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if token.start_mark.index >= end:
                break
            if isinstance(token, FlowSequenceStartToken | FlowMappingStartToken):
                stack.append(token)
            elif isinstance(token, FlowSequenceEndToken | FlowMappingEndToken) and stack:
                stack.pop()
    except yaml.YAMLError:
        pass
    if not stack:
        return None
    mark = stack[-1].start_mark
    return text[mark.index], mark.line + 1, mark.column + 1


def _unknown_tag(problem: str) -> str:
    """Name a ``!!python/...`` tag, but no other: an unquoted password may start with '!'."""
    tag = problem.partition("for the tag ")[2].strip("'")
    shown = repr(tag) if tag.startswith("tag:yaml.org,2002:python/") else "'!…'"
    return (
        f"could not determine a constructor for the tag {shown} (only plain YAML is allowed: "
        "python/* and other custom tags are rejected; quote a value that starts with '!')"
    )


def _position(text: str, index: int) -> str:
    """``line:col`` of character ``index``, counting line breaks as YAML does."""
    breaks = list(_LINE_BREAK.finditer(text, 0, index))
    column = index - (breaks[-1].end() if breaks else 0)
    return f"{len(breaks) + 1}:{column + 1}"
