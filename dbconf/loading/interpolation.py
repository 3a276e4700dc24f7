"""``${VAR}`` interpolation of the strings that come from the configuration file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dbconf.config.origin import KeyPath, Origin, dotted, find_origin, is_secret_path
from dbconf.errors import Problem
from dbconf.loading.layers import Origins, scalar

__all__ = ["interpolate", "interpolate_tree"]

_VAR = re.compile(r"\$(?:(\$)|\{([^}]*)(\})?)")
_EXPR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?$", re.DOTALL)


def interpolate_tree(
    node: Any, origins: Origins, env: Mapping[str, str], problems: list[Problem], path: KeyPath
) -> Any:
    """Expand ${VAR} forms in strings that came from the file (env values are taken literally)."""
    if isinstance(node, dict):
        for key in list(node):
            node[key] = interpolate_tree(node[key], origins, env, problems, (*path, key))
        return node
    if isinstance(node, list):
        return [
            interpolate_tree(item, origins, env, problems, (*path, str(index)))
            for index, item in enumerate(node)
        ]
    origin = find_origin(origins, path)
    if not isinstance(node, str) or origin is None or origin.kind != "file" or "$" not in node:
        return node
    errors: list[str] = []
    used: list[str] = []  # how each ${…} was resolved, for the origin
    value = interpolate(node, env, errors, used, secret=is_secret_path(path))
    for error in errors:
        problems.append(Problem(str(origin), dotted(path), error))
    if used and path in origins:
        origins[path] = Origin(
            "file",
            origin.source,
            origin.line,
            origin.column,
            via=", ".join(used),
        )
    whole = _VAR.fullmatch(node) is not None and node != "$$"
    key = next((part for part in reversed(path) if not part.isdigit()), "")  # a list's key
    return scalar(key, value) if whole and path else value


def interpolate(
    text: str, env: Mapping[str, str], errors: list[str], used: list[str], *, secret: bool = False
) -> str:
    """Expand ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?msg}``, ``$$``.

    ``used`` gets one entry per variable: ``${VAR}``, or ``default of ${VAR} (unset)`` /
    ``(empty)`` when its default was used. With ``secret`` (a password or URL), error messages
    never quote the text itself.
    """

    def expand(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        body, closed = match.group(2), match.group(3)
        expr = _EXPR.match(body) if closed else None
        if expr is None:
            shown = "a ${ (not shown: secret value)" if secret else f"${{{body}{closed or ''}"
            errors.append(
                f"malformed {shown}: write ${{VAR}}, ${{VAR:-default}}, "
                "${VAR:?message}, or $$ for a literal $"
            )
            return ""
        var, op, arg = expr.groups()
        if arg and "${" in arg:
            errors.append(f"${{{var}…}}: a ${{…}} inside a default or message is not supported")
            return ""
        value = env.get(var)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if not missing:
            used.append(f"${{{var}}}")
            return str(value)
        if op in (":-", "-"):
            used.append(f"default of ${{{var}}} ({'unset' if value is None else 'empty'})")
            return str(arg)
        used.append(f"${{{var}}}")
        if op in (":?", "?"):
            errors.append(f"environment variable {var} is not set: {arg or 'it is required'}")
        else:
            errors.append(
                f"environment variable {var} is not set; export it, or give a "
                f"default: ${{{var}:-…}}"
            )
        return ""

    return _VAR.sub(expand, text)
