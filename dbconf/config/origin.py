"""Where a configuration value came from, and how validation errors are told with it."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import make_url

from dbconf.errors import Problem, did_you_mean

__all__ = [
    "NOT_SECRET_KEYS",
    "SECRET_KEY",
    "KeyPath",
    "Origin",
    "dotted",
    "find_origin",
    "issues_error",
    "scrub_secrets",
    "shown_value",
    "validation_problems",
]

KeyPath = tuple[str, ...]
OriginKind = Literal["file", "env", "secret", "default", "code", "dotenv", "settings"]
SECRET_KEYS = frozenset({"password", "url"})
# Keys whose values are never echoed in an error, at any depth: they may hold a password.
_HIDDEN_KEYS = frozenset({"password", "url", "query", "connect_args", "password_file"})
# A key whose value is a secret: password, sslpassword, passwd, token, api_key, …
SECRET_KEY = re.compile(r"pass|secret|token|credential|api_?key|private_?key", re.IGNORECASE)
# Secret-looking keys whose values are not secrets: a path, an argv (shown by ps), a callable.
NOT_SECRET_KEYS = frozenset({"password_file", "password_command", "credentials", "credentials_ttl"})
_PLAIN = re.compile(r"[\w .,+-]{0,40}")


@dataclass(frozen=True)
class Origin:
    """The source of one value: a file position, an env var, a secrets file, a default, code
    (``source``: the caller's file:line), a .env file line or a field of a settings object."""

    kind: OriginKind
    source: str = ""
    line: int | None = None
    column: int | None = None
    via: str | None = None  # e.g. the ${VAR} a file value was interpolated from

    def __str__(self) -> str:
        if self.kind == "file":
            text = self.source
            if self.line is not None:
                text += f":{self.line}:{self.column}"
        elif self.kind == "env":
            text = f"env {self.source}"
        elif self.kind == "secret":
            text = f"secrets file {self.source}"
        elif self.kind == "code":
            text = f"overrides= at {self.source}" if self.source else "overrides= in code"
        elif self.kind == "dotenv":  # a .env file: path:line, the variable in ``via``
            text = f"{self.source}:{self.line}"
        elif self.kind == "settings":
            text = f"settings field {self.source}"
        else:
            text = "default"
        return f"{text} (via {self.via})" if self.via else text


def dotted(path: Sequence[Any]) -> str:
    """A key path as errors and ``dbconf show`` write it: ``databases.primary.replicas[0].url``
    (a list index in brackets)."""
    text = ""
    for part in path:
        key = str(part)
        text += f"[{key}]" if key.isdigit() and text else f".{key}" if text else key
    return text


def find_origin(origins: Mapping[KeyPath, Origin], path: KeyPath) -> Origin | None:
    """The origin of ``path`` or of its closest ancestor that has one."""
    for end in range(len(path), 0, -1):
        origin = origins.get(path[:end])
        if origin is not None:
            return origin
    return None


def is_secret_path(path: KeyPath) -> bool:
    return any(part in SECRET_KEYS for part in path)


def shown_value(value: Any, path: KeyPath) -> str:
    """How an error may echo ``value`` found at ``path``: only what cannot be a secret.

    Numbers and booleans are shown, and short plain words (letters, digits, spaces, ``.,+-_``)
    outside the keys that may hold a password (``password``, ``url``, ``query``,
    ``connect_args`` or any secret-looking key). Anything else, a URL above all, is ``'***'``.
    """
    hidden = any(p in _HIDDEN_KEYS or SECRET_KEY.search(p) for p in path)
    if isinstance(value, bool) or value is None:
        return repr(value)
    if hidden:
        return "'***'"
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else "a number too large"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and _PLAIN.fullmatch(value):
        return repr(value)
    return "'***'"


def issues_error(issues: Sequence[tuple[str, str]]) -> PydanticCustomError:
    """One validation error carrying every ``(key path, message)`` problem of a model; the
    loader reports each on its own, with its own origin (see :func:`validation_problems`)."""
    text = issues[0][1] if len(issues) == 1 else "; ".join(f"{at}: {msg}" for at, msg in issues)
    return PydanticCustomError(
        "issues", "{text}", {"text": text, "at": issues[0][0], "issues": tuple(issues)}
    )


def validation_problems(
    exc: ValidationError,
    model: type[BaseModel],
    origins: Mapping[KeyPath, Origin],
    prefix: KeyPath,
    fallback: str,
) -> list[Problem]:
    """Turn pydantic's errors into problems naming origin, key path, value and what is allowed."""
    problems = []

    def add(loc: KeyPath, message: str) -> None:
        origin = find_origin(origins, loc)
        where = dotted(prefix + tuple(_shown_key(k) for k in loc))
        problems.append(Problem(str(origin) if origin else fallback, where, message))

    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        ctx = error.get("ctx") or {}
        if "issues" in ctx:
            for at, message in ctx["issues"]:
                add((*loc, *at.split(".")), message)
            continue
        if isinstance(ctx.get("at"), str):
            loc = (*loc, *ctx["at"].split("."))
        add(loc, _message(error, model, loc))
    return problems


def _shown_key(key: str) -> str:
    """A key as a key path may show it: a URL written where a name belongs is masked."""
    return key if "@" not in key and "://" not in key else "***"


def _message(error: Any, model: type[BaseModel], loc: KeyPath) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        hint = did_you_mean(loc[-1], allowed)
        return f"unknown key {_shown_key(loc[-1])!r}{hint}; allowed here: {', '.join(allowed)}"
    message = str(error["msg"])
    if kind == "missing":
        return "this key is required"
    if kind == "model_type" or kind == "dict_type":
        message = "expected a mapping of keys to values"
    if "input" in error and kind not in ("extra_forbidden",) and not kind.startswith("value_error"):
        value = error["input"]
        if kind == "model_type" and isinstance(value, str) and "://" in value:
            return (
                "expected a mapping of keys to values, got a URL (not shown: it may hold a "
                f"password); write it as {loc[-1] if loc else 'name'}: {{url: ...}}"
            )
        if not isinstance(value, dict | list):
            message += f" (got {shown_value(value, loc)})"
    return message


def _allowed_keys(model: type[BaseModel], loc: KeyPath) -> list[str]:
    """The keys a model accepts at ``loc`` (walking nested models and dict values)."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = {(f.alias or n): f for n, f in annotation.model_fields.items()}
            if part not in fields:
                return []
            annotation = fields[part].annotation
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        elif typing.get_origin(annotation) is list and part.isdigit():
            annotation = typing.get_args(annotation)[0]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(f.alias or n) for n, f in annotation.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return args[0] if len(args) == 1 else annotation
    return annotation


def scrub_secrets(problems: Sequence[Problem], tree: Any) -> list[Problem]:
    """``problems`` with every secret of ``tree`` (passwords, a URL's password, secret-looking
    query and connect_args values) of 4 or more characters replaced by ``***`` — also where
    an alias or a mistake copied a secret under a key whose values are shown."""
    secrets = sorted({s for s in _secrets_in(tree, "") if len(s) >= 4}, key=len, reverse=True)
    if not secrets:
        return list(problems)

    def scrub(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    return [Problem(p.origin, scrub(p.path), scrub(p.message)) for p in problems]


def _secrets_in(node: Any, key: str) -> Iterator[str]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _secrets_in(v, str(k))
    elif isinstance(node, list):
        for item in node:
            yield from _secrets_in(item, key)
    elif isinstance(node, str) and key not in NOT_SECRET_KEYS:
        if SECRET_KEY.search(key):
            yield node
        elif key == "url":
            try:
                url = make_url(node)
            except Exception:  # a malformed URL is reported without being echoed
                return
            if url.password is not None:
                yield str(url.password)
            yield from (
                v for k, v in url.query.items() if SECRET_KEY.search(k) and isinstance(v, str)
            )
