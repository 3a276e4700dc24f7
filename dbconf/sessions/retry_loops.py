"""The transaction retry loops, sync and async: :func:`run_in_transaction`,
:func:`run_in_transaction_async` and the :func:`retrying` decorator.

Which failures are retried, the backoff and the policy are described in
:mod:`dbconf.sessions.resilience` (:class:`~dbconf.sessions.resilience.RetryPolicy`,
:func:`~dbconf.sessions.resilience.retry_reason`); the decision and the backoff are written once, in
``_retry_delay``, and the two loops differ only in how they run a scope and sleep.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

from sqlalchemy.orm import Session

from dbconf.sessions.resilience import RetryPolicy, log, retry_reason
from dbconf.sessions.session import async_session_scope, session_scope

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["retrying", "run_in_transaction", "run_in_transaction_async"]

P = ParamSpec("P")
R = TypeVar("R")


def _retry_delay(
    exc: Exception, attempt: int, policy: RetryPolicy, database: str, rand: Callable[[], float]
) -> float | None:
    """The one retry decision of the sync and async loops: how long to sleep before re-running
    after ``exc`` ended attempt number ``attempt``, or None to re-raise it (not transient, or
    the retries are exhausted: then a note says so)."""
    reason = retry_reason(exc)
    if reason is None:
        return None
    if attempt > policy.retries:
        add_note = getattr(exc, "add_note", None)
        if add_note is not None:
            add_note(f"dbconf: gave up after {attempt} attempts on database {database!r}")
        return None
    delay = rand() * policy.cap(attempt)
    log.warning(
        "database %r: attempt %d of %d failed with %s (%s); retrying the transaction in %.3f s",
        database,
        attempt,
        policy.retries + 1,
        type(exc).__name__,
        reason,
        delay,
    )
    return delay


def run_in_transaction(
    factory: Callable[[], Session],
    fn: Callable[[Session], R],
    *,
    policy: RetryPolicy,
    database: str,
    sleep: Callable[[float], object] = time.sleep,
    rand: Callable[[], float] = random.random,
) -> R:
    """Run ``fn(session)`` in a session scope and return its result, retrying transient
    failures (see the module doc) in a new session; re-raise the last error when the retries
    are exhausted, and any other error at once."""
    attempt = 0
    while True:
        attempt += 1
        try:
            with session_scope(factory) as session:
                return fn(session)
        except Exception as exc:
            delay = _retry_delay(exc, attempt, policy, database, rand)
            if delay is None:
                raise
            sleep(delay)


async def run_in_transaction_async(
    factory: Callable[[], AsyncSession],
    fn: Callable[[AsyncSession], Awaitable[R]],
    *,
    policy: RetryPolicy,
    database: str,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> R:
    """The async twin of :func:`run_in_transaction`: ``await fn(session)`` in an async session
    scope, the same retry decision and backoff, sleeping with ``asyncio.sleep``."""
    attempt = 0
    while True:
        attempt += 1
        try:
            async with async_session_scope(factory) as session:
                return await fn(session)
        except Exception as exc:
            delay = _retry_delay(exc, attempt, policy, database, rand)
            if delay is None:
                raise
            await sleep(delay)


def retrying(
    run: Callable[[Callable[[Session], Any]], Any],
) -> Callable[[Callable[Concatenate[Session, P], R]], Callable[P, R]]:
    """A decorator: ``fn(session, *args, **kwargs)`` becomes ``fn(*args, **kwargs)`` run by
    ``run`` (a bound :meth:`Database.run_in_transaction` with its retry settings)."""

    def decorate(fn: Callable[Concatenate[Session, P], R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return cast(R, run(lambda session: fn(session, *args, **kwargs)))

        return wrapper

    return decorate
