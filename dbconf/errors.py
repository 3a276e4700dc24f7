"""The exception tree of dbconf. Every error dbconf raises derives from :class:`DbconfError`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "DbconfError",
    "Problem",
    "UnknownDatabaseError",
    "UnknownSessionFlavourError",
    "did_you_mean",
]


class DbconfError(Exception):
    """Base class of every error raised by dbconf."""


@dataclass(frozen=True)
class Problem:
    """One configuration problem: where it came from, the key path, and what to do about it."""

    origin: str
    path: str
    message: str

    def __str__(self) -> str:
        where = " ".join(part for part in (self.origin, self.path) if part)
        return f"{where}: {self.message}" if where else self.message


class ConfigError(DbconfError, ValueError):
    """The configuration is invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("", "", problems)]
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return f"invalid database configuration: {self.problems[0]}"
        lines = [f"invalid database configuration ({len(self.problems)} problems):"]
        lines.extend(f"  - {problem}" for problem in self.problems)
        return "\n".join(lines)


class UnknownDatabaseError(DbconfError, LookupError):
    """A database name that the loaded profile does not declare."""

    def __init__(self, name: str, known: Sequence[str], profile: str) -> None:
        self.name = name
        self.known = tuple(known)
        hint = did_you_mean(name, known)
        super().__init__(
            f"profile {profile!r} declares no database {name!r}{hint}; "
            f"declared: {', '.join(known) or '(none)'}"
        )

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0])


class UnknownSessionFlavourError(DbconfError, LookupError):
    """A session flavour that the database does not declare under ``sessions:``."""

    def __init__(self, flavour: str, known: Sequence[str], database: str) -> None:
        self.flavour = flavour
        self.known = tuple(known)
        hint = did_you_mean(flavour, known)
        super().__init__(
            f"database {database!r} declares no session flavour {flavour!r}{hint}; "
            f"declared: {', '.join(known) or '(none)'}"
        )

    def __str__(self) -> str:
        return str(self.args[0])


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest candidate, or an empty string."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""
