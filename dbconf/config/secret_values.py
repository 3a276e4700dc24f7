"""Secret values inside a database's ``connect_args`` and ``query``: wrapped in
:class:`~pydantic.Secret` when their key looks secret (masked in repr and dumps), unwrapped
for the driver by :func:`reveal`."""

from __future__ import annotations

from typing import Any

from pydantic import Secret

from dbconf.config.origin import SECRET_KEY

__all__ = ["hide", "masked", "reveal"]


def hide(tree: dict[str, Any]) -> dict[str, Any]:
    """Every value under a secret-looking key (any depth) wrapped in a Secret."""
    return {
        k: hide(v)
        if isinstance(v, dict)
        else Secret(v)
        if SECRET_KEY.search(k) and not isinstance(v, Secret | None)
        else v
        for k, v in tree.items()
    }


def masked(value: Any) -> Any:
    """For JSON dumps: every Secret as its masked text."""
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    return str(value) if isinstance(value, Secret) else value


def reveal(value: Any) -> Any:
    """``connect_args`` as the driver takes them: every :class:`~pydantic.Secret` unwrapped."""
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    return value.get_secret_value() if isinstance(value, Secret) else value
